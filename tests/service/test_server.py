"""End to end against a real `clover serve` process (uvicorn on a free port), the real model and index.

One server for the module; it serves a copy of the session index so admin writes here never disturb other tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from service.client_cli import qa_main, search_main
from tests.video_factory import write_video

API_KEY = "server-test-key"
REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    if world.backend is not None:
        pytest.skip("needs the real indexer")
    base = tmp_path_factory.mktemp("served")
    index_dir = base / "index"
    shutil.copytree(world.index_dir, index_dir)
    library = base / "library"
    library.mkdir()
    port = _free_port()
    env = {**os.environ, "CLOVER_API_KEY": API_KEY, "CLOVER_MAX_UPLOAD_BYTES": "200000", "CLOVER_INDEX_WORKERS": "0",
           "CLOVER_BATCH_WINDOW_MS": "50", "CLOVER_LIBRARY_ROOTS": f"{world.library},{library}",
           "PYTHONPATH": str(REPO)}
    log = open(base / "server.log", "w")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.serve", "--index", str(index_dir), "--checkpoint", str(world.checkpoint),
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {(base / 'server.log').read_text()}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready: {(base / 'server.log').read_text()}")
            time.sleep(0.2)
        yield {"url": url, "library": library, "index_dir": index_dir}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        yield client


def _admin(**headers):
    return {"X-API-Key": API_KEY, **headers}


def _wait_job(http, job, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = http.get(job["url"], headers=_admin()).json()
        if state["status"] in ("succeeded", "failed"):
            return state
        time.sleep(0.1)
    raise AssertionError(f"job {job} did not finish")


def test_readyz_healthz_docs_and_page(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").json()["status"] == "ready"
    assert "/search" in http.get("/openapi.json").json()["paths"]
    assert http.get("/docs").status_code == 200
    page = http.get("/")
    assert page.status_code == 200 and "<video" in page.text and "cdn" not in page.text.lower()
    assert http.get("/static/app.js").status_code == 200


def test_search_and_rerank(http):
    plain = http.get("/search", params={"q": "grey frame with a white bar", "k": 3}).json()
    assert len(plain["results"]) == 3 and plain["has_more"]
    reranked = http.post("/search", json={"q": "grey frame with a white bar", "k": 3, "rerank": True,
                                          "rerank_k": 5}).json()
    assert reranked["rerank_k"] == 5
    scores = [r["rerank_score"] for r in reranked["results"]]
    assert None not in scores and scores == sorted(scores, reverse=True)


def test_concurrent_queries_are_batched(http):
    """Eight simultaneous searches cost fewer encode_text calls than eight (visible in /metrics)."""

    def batch_count() -> float:
        for line in http.get("/metrics").text.splitlines():
            if line.startswith("clover_query_batch_size_count"):
                return float(line.split()[-1])
        return 0.0

    before = batch_count()
    errors: list[BaseException] = []

    start = threading.Barrier(8)

    def one(i: int) -> None:
        try:
            with httpx.Client(base_url=str(http.base_url), timeout=30) as c:
                c.get("/healthz")  # connect first, so the searches below leave together
                start.wait(10)
                assert c.get("/search", params={"q": f"batched query number {i}"}).status_code == 200
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert batch_count() - before < 8


def test_qa_both_kinds(http):
    vid = http.get("/videos").json()["videos"][0]["video_id"]
    open_ended = http.post("/qa", json={"video_id": vid, "question": "what color is the bar?"}).json()
    assert open_ended["candidates"] is None and 0 < open_ended["score"] <= 1
    choice = http.post("/qa", json={"video_id": str(vid), "question": "where is the bar?",
                                    "candidates": ["top", "bottom"]}).json()
    assert choice["answer"] in ("top", "bottom") and len(choice["candidates"]) == 2


def test_range_streaming(http, world):
    videos = http.get("/videos", params={"limit": 50}).json()["videos"]
    video = next(v for v in videos if Path(v["path"]).parent == world.library)
    data = Path(video["path"]).read_bytes()
    url = video["stream_url"]
    part = http.get(url, headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == data[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(data)}"
    assert part.headers["accept-ranges"] == "bytes" and part.headers["content-type"] == "video/mp4"
    assert http.get(url).content == data
    bad = http.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
    assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
    assert http.get(url, headers={"Range": "bytes=oops"}).status_code == 416


def test_auth_failures(http):
    assert http.post("/admin/reload").status_code == 401
    assert http.post("/admin/reload", headers={"X-API-Key": "nope"}).status_code == 403
    assert http.delete("/videos/1", headers={"X-API-Key": "nope"}).status_code == 403
    assert http.get("/jobs/x").status_code == 401


def test_bad_inputs(http, tmp_path):
    cases = [
        http.get("/search", params={"q": ""}),
        http.get("/search", params={"q": "x", "k": 0}),
        http.get("/search", params={"q": "x", "k": 1_000_000}),
        http.get("/videos/424242"),
        http.post("/search", content=b'{"q": ', headers={"content-type": "application/json"}),
        http.post("/videos", json={"path": "../../etc/passwd"}, headers=_admin()),
        http.post("/videos", json={"path": "/etc/passwd"}, headers=_admin()),
        http.post("/videos", files={"file": ("big.mp4", b"\0" * 400_000, "video/mp4")}, headers=_admin()),
        http.post("/search", content=b"x" * 2_000_000, headers={"content-type": "application/json"}),
    ]
    assert [r.status_code for r in cases] == [422, 422, 422, 404, 400, 400, 403, 413, 413]
    for response in cases:
        assert isinstance(response.json()["detail"], str) and "Traceback" not in response.text


def test_admin_add_delete_reload(http, server):
    before = http.get("/videos").json()["total"]
    write_video(server["library"] / "fresh.mp4", num_frames=30, seed=99)
    job = http.post("/videos", json={"path": str(server["library"] / "fresh.mp4")}, headers=_admin())
    assert job.status_code == 202
    assert _wait_job(http, job.json())["status"] == "succeeded"
    listing = http.get("/videos", params={"q": "fresh"}).json()["videos"]
    assert len(listing) == 1 and listing[0]["status"] == "indexed"
    vid = listing[0]["video_id"]
    hits = http.post("/search", json={"q": "anything", "k": 50, "filters": {"video_ids": [vid]}}).json()
    assert [r["video_id"] for r in hits["results"]] == [vid]
    deleted = http.delete(f"/videos/{vid}", headers=_admin())
    assert deleted.status_code == 202
    assert _wait_job(http, deleted.json())["status"] == "succeeded"
    assert http.get(f"/videos/{vid}").status_code == 404
    assert http.get("/videos").json()["total"] == before
    reload = http.post("/admin/reload", headers=_admin())
    assert reload.status_code == 200 and reload.json()["num_vectors"] > 0


def test_client_cli(server, capsys):
    assert search_main(["grey bar", "--url", server["url"], "-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 result(s) for 'grey bar'" in out
    assert search_main(["grey bar", "--url", server["url"], "--json", "--rerank"]) == 0
    assert '"rerank": true' in capsys.readouterr().out
    with httpx.Client(base_url=server["url"]) as c:
        vid = c.get("/videos").json()["videos"][0]["video_id"]
    assert qa_main([str(vid), "which side?", "--candidates", "left", "right", "--url", server["url"]]) == 0
    assert "p=" in capsys.readouterr().out
    assert qa_main(["424242", "what?", "--url", server["url"]]) == 1
    assert "404" in capsys.readouterr().err
    assert search_main(["x", "--url", "http://127.0.0.1:9"]) == 2
