"""Bounded soak: concurrent searches and QA for minutes while videos are added, deleted and the index reloaded.

    python bench/soak.py --minutes 5                      # tiny world served here, 4 search + 2 QA clients
    python bench/soak.py --minutes 30 --search-clients 8 --qa-clients 4

Against a real `clover serve` (uvicorn subprocess) over the tests' tiny world (a tiny Clover with a QA head, 5
generated videos), at once and until the time is up:

- search clients: GET /search and POST /search (a third with a filter, one in ten re-ranked), every query new;
- QA clients: POST /qa about the original videos (never deleted), open-ended and multiple-choice;
- one browsing client: GET /videos, /videos/{id}, its thumbnail and a byte range of its stream;
- one admin client, in cycles: write a new video into the library, POST /videos, wait for the job, check the
  video is searchable (a filtered search finds it), DELETE it, wait, POST /admin/reload.

Pass criteria (the exit status is 1 otherwise): no 5xx and no status outside each request's expected set (only
/admin/reload may answer 409, while a job holds the writer); every request answered (sent == answered: no
connection error, no timeout); every admin job succeeded; the server's resident memory flat: the median of the
last fifth of the samples at most `--rss-growth-mib` above the median of the second fifth (the first fifth is
warm-up: first searches, first reload). RSS is sampled from /proc every second.

tests/reliability/test_soak.py runs it for 20 seconds (marked slow).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, header, rss_mib, table, write_result  # noqa: E402
from bench.synthetic import captions  # noqa: E402

ADMIN_KEY = "soak-admin-key"


@dataclass
class SoakReport:
    seconds: float = 0.0
    sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # kind -> requests sent
    answered: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    statuses: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    unexpected: list[str] = field(default_factory=list)  # "kind METHOD path -> status: detail" (first 50)
    transport_errors: list[str] = field(default_factory=list)
    admin_cycles: int = 0
    failed_jobs: list[str] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MiB)

    @property
    def errors(self) -> int:
        return len(self.unexpected) + len(self.transport_errors) + len(self.failed_jobs)

    @property
    def lost(self) -> int:
        return sum(self.sent.values()) - sum(self.answered.values())

    def rss_summary(self) -> dict[str, float]:
        """start / end / max, and growth = median(last fifth) - median(second fifth) of the samples, MiB."""
        values = np.array([mib for _, mib in self.rss])
        if len(values) < 5:
            return {"samples": len(values)}
        fifth = len(values) // 5
        return {"samples": len(values), "start": round(float(values[fifth]), 1), "end": round(float(values[-1]), 1),
                "max": round(float(values.max()), 1),
                "growth": round(float(np.median(values[-fifth:]) - np.median(values[fifth : 2 * fifth])), 1)}


class Soak:
    """The clients of one soak run; `run()` returns the report."""

    def __init__(self, url: str, api_key: str, library: Path, pid: int | None, seconds: float,
                 search_clients: int, qa_clients: int, seed: int = 0) -> None:
        self.url, self.api_key, self.library, self.pid = url, api_key, library, pid
        self.seconds, self.search_clients, self.qa_clients = seconds, search_clients, qa_clients
        self.report = SoakReport()
        self.queries = captions(seed)
        self.random = random.Random(seed)
        self.names = count()
        self.deadline = 0.0

    async def request(self, client: httpx.AsyncClient, kind: str, method: str, path: str,
                      expected: set[int], **kwargs: Any) -> httpx.Response | None:
        """Send one request and account for it; None when it got no answer."""
        self.report.sent[kind] += 1
        try:
            response = await client.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            self.report.transport_errors.append(f"{kind} {method} {path}: {type(error).__name__}: {error}")
            return None
        self.report.answered[kind] += 1
        self.report.statuses[kind][str(response.status_code)] += 1
        if response.status_code not in expected and len(self.report.unexpected) < 50:
            self.report.unexpected.append(f"{kind} {method} {path} -> {response.status_code}: {response.text[:300]}")
        return response

    async def search_client(self, client: httpx.AsyncClient) -> None:
        while time.monotonic() < self.deadline:
            query, roll = next(self.queries), self.random.random()
            if roll < 0.3:
                body = {"q": query, "k": 5, "filters": {"min_duration": 1.0}}
                await self.request(client, "search", "POST", "/search", {200}, json=body)
            else:
                params = {"q": query, "k": self.random.choice([1, 5, 10]), "rerank": str(roll > 0.9).lower()}
                await self.request(client, "search", "GET", "/search", {200}, params=params)

    async def qa_client(self, client: httpx.AsyncClient, video_ids: list[int]) -> None:
        while time.monotonic() < self.deadline:
            body: dict[str, Any] = {"video_id": self.random.choice(video_ids), "question": "what colour is the bar?"}
            if self.random.random() < 0.5:
                body["candidates"] = ["left", "right", "top"]
            await self.request(client, "qa", "POST", "/qa", {200}, json=body)

    async def browse_client(self, client: httpx.AsyncClient, video_ids: list[int]) -> None:
        while time.monotonic() < self.deadline:
            vid = self.random.choice(video_ids)
            await self.request(client, "browse", "GET", "/videos", {200}, params={"limit": 10})
            await self.request(client, "browse", "GET", f"/videos/{vid}", {200})
            await self.request(client, "browse", "GET", f"/videos/{vid}/thumbnail", {200})
            await self.request(client, "browse", "GET", f"/videos/{vid}/stream", {206},
                               headers={"Range": "bytes=0-999"})

    async def admin_client(self, client: httpx.AsyncClient) -> None:
        from tests.video_factory import write_video

        headers = {"X-API-Key": self.api_key}
        while time.monotonic() < self.deadline:
            name = f"soak_{next(self.names):05d}.mp4"
            path = await asyncio.to_thread(write_video, self.library / name, 30, 64, 48, 10, seed=1000)
            added = await self.request(client, "admin", "POST", "/videos", {202}, json={"path": str(path)},
                                       headers=headers)
            job = await self.wait_job(client, added, headers)
            if job is None:
                continue
            video_ids = (job.get("summary") or {}).get("result", {}).get("video_ids") or []
            if video_ids:
                found = await self.request(client, "admin", "POST", "/search", {200}, json={
                    "q": "a grey frame", "k": 5, "filters": {"video_ids": [video_ids[0]]}})
                if found is not None and found.status_code == 200 and not found.json()["results"]:
                    self.report.unexpected.append(f"added video {video_ids[0]} is not searchable")
                deleted = await self.request(client, "admin", "DELETE", f"/videos/{video_ids[0]}", {202},
                                             headers=headers)
                await self.wait_job(client, deleted, headers)
            await self.request(client, "admin", "POST", "/admin/reload", {200, 409}, headers=headers)
            path.unlink(missing_ok=True)
            self.report.admin_cycles += 1

    async def wait_job(self, client: httpx.AsyncClient, accepted: httpx.Response | None,
                       headers: dict[str, str]) -> dict[str, Any] | None:
        if accepted is None or accepted.status_code != 202:
            return None
        url = accepted.json()["url"]
        while True:
            polled = await self.request(client, "admin", "GET", url, {200}, headers=headers)
            if polled is None or polled.status_code != 200:
                return None
            job = polled.json()
            if job["status"] in ("succeeded", "failed"):
                if job["status"] == "failed":
                    self.report.failed_jobs.append(f"{job['kind']} {job['paths']}: {job['error']}")
                return job
            await asyncio.sleep(0.1)

    async def sample_rss(self) -> None:
        began = time.monotonic()
        while time.monotonic() < self.deadline and self.pid is not None:
            self.report.rss.append((round(time.monotonic() - began, 1), rss_mib(self.pid)))
            await asyncio.sleep(1.0)

    async def run(self) -> SoakReport:
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as client:
            listing = (await client.get("/videos", params={"limit": 100, "status": "indexed"})).json()["videos"]
            video_ids = [video["video_id"] for video in listing]
            began = time.monotonic()
            self.deadline = began + self.seconds
            await asyncio.gather(
                *(self.search_client(client) for _ in range(self.search_clients)),
                *(self.qa_client(client, video_ids) for _ in range(self.qa_clients)),
                self.browse_client(client, video_ids), self.admin_client(client), self.sample_rss())
            self.report.seconds = round(time.monotonic() - began, 1)
        return self.report


def run_soak(seconds: float, work: Path, search_clients: int = 4, qa_clients: int = 2, seed: int = 0,
             log_path: Path | None = None) -> SoakReport:
    """Build the tiny world under `work`, serve it and soak it; the server is stopped afterwards."""
    from bench.server import serve
    from bench.synthetic import tiny_world

    world = tiny_world(work / "world")
    library = work / "admin-library"
    library.mkdir(parents=True, exist_ok=True)
    env = {"CLOVER_API_KEY": ADMIN_KEY, "CLOVER_LIBRARY_ROOTS": f"{world['library']},{library}",
           "CLOVER_INDEX_WORKERS": "0"}
    with serve(world["index_dir"], world["checkpoint"], env=env, log_path=log_path) as server:
        soak = Soak(server.url, ADMIN_KEY, library.resolve(), server.pid, seconds, search_clients, qa_clients, seed)
        return asyncio.run(soak.run())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--search-clients", type=int, default=4)
    parser.add_argument("--qa-clients", type=int, default=2)
    parser.add_argument("--rss-growth-mib", type=float, default=50.0, help="largest RSS growth that counts as flat")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="30 seconds")
    args = parser.parse_args(argv)
    seconds = 30.0 if args.quick else args.minutes * 60
    machine = header(f"Soak: {seconds / 60:.1f} minutes of mixed traffic with index changes", args.quick)
    with tempfile.TemporaryDirectory(prefix="clover-soak-") as scratch:
        log_path = Path(scratch) / "server.log"
        report = run_soak(seconds, Path(scratch), args.search_clients, args.qa_clients, args.seed, log_path)
        log_tail = log_path.read_text(errors="replace")[-3000:]
    rss = report.rss_summary()
    flat = rss.get("growth", 0.0) <= args.rss_growth_mib
    passed = report.errors == 0 and report.lost == 0 and flat
    emit(f"{args.search_clients} search + {args.qa_clients} QA + 1 browsing + 1 admin client for "
         f"{report.seconds:.0f} s; {report.admin_cycles} add / search / delete / reload cycles.\n")
    emit(table(["requests", "sent", "answered", "status codes"], [
        [kind, report.sent[kind], report.answered[kind],
         ", ".join(f"{code}: {n}" for code, n in sorted(report.statuses[kind].items()))]
        for kind in sorted(report.sent)], align="lrrl"))
    emit(f"\nunexpected statuses: {len(report.unexpected)}, connection errors: {len(report.transport_errors)}, "
         f"failed jobs: {len(report.failed_jobs)}, lost requests: {report.lost}")
    emit(f"server RSS (MiB): start {rss.get('start')}, end {rss.get('end')}, max {rss.get('max')}, growth "
         f"{rss.get('growth')} (limit {args.rss_growth_mib:g}) over {rss.get('samples')} samples")
    for line in (report.unexpected + report.transport_errors + report.failed_jobs)[:20]:
        emit(f"- {line}")
    if not passed:
        emit(f"\nserver log tail:\n```\n{log_tail}\n```")
    emit(f"\n**{'PASS' if passed else 'FAIL'}**")
    write_result("soak", {"seconds": report.seconds, "passed": passed, "sent": dict(report.sent),
                          "answered": dict(report.answered),
                          "statuses": {k: dict(v) for k, v in report.statuses.items()},
                          "unexpected": report.unexpected, "transport_errors": report.transport_errors,
                          "failed_jobs": report.failed_jobs, "admin_cycles": report.admin_cycles, "rss_mib": rss,
                          "rss_samples": report.rss[:: max(1, len(report.rss) // 300)]}, args.quick, machine)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
