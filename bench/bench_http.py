"""HTTP search end to end: latency and throughput of `/search` against a real `clover serve`, next to the bare
encode_text + FAISS time of the same query on the same index, measured in the same run.

    python bench/bench_http.py                                  # 100k segments, random clover-tiny checkpoint
    python bench/bench_http.py --checkpoint runs/tiny/final     # a trained checkpoint
    python bench/bench_http.py --quick                          # 20k segments, 2 s per cell

The index: the real indexer over a few generated videos, grown to `--segments` with synthetic segments through
the indexer's own stores and catalog (bench/synthetic.py explains how; `clover index verify` passes on it). The
server: `python -m service.serve` in a subprocess on a loopback port, default settings (micro-batching of
concurrent queries, 2 inference threads, query cache on -- every request sends a different query, so the cache
never answers). The clients: `--concurrency` asyncio workers on one httpx.AsyncClient each sending
`GET /search?q=...&k=10` back to back for `--seconds`, with `rerank=false` and with `rerank=true` (the service's
default rerank_k = 20 videos re-scored by the fusion encoder).

The bare figure is what a search costs without the service: `encode_texts` of one query plus the FAISS search
the service makes (64 candidates for a first page of 10), in this process, before the server starts; with
rerank, plus reading 20 token grids and `match_scores`. The ratio p50(HTTP, 1 client) / p50(bare) is the
service's overhead (HTTP, JSON, catalog lookups, grouping per video). Client and server share the machine's
cores: on a small machine the load generator's own CPU time is part of what the clients see.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, header, latency_ms, table, write_result  # noqa: E402
from bench.server import serve  # noqa: E402
from bench.synthetic import captions, expand_index, make_checkpoint  # noqa: E402

FAISS_CANDIDATES = 64  # what the service's first page of k=10 asks FAISS for (4 * (k + 1), at least 64)


def build_index(work: Path, checkpoint: Path, segments: int, videos: int) -> dict[str, Any]:
    """A real index over generated videos, grown with synthetic segments; reused when `work` already has it."""
    from indexer.pipeline import index_paths, verify_index
    from indexer.reader import IndexOpenError, IndexReader
    from model import Clover
    from model.checkpoint import fingerprint
    from tests.video_factory import write_video

    index_dir = work / "index"
    try:
        with IndexReader.open(index_dir, checkpoint_fingerprint=fingerprint(checkpoint)) as reader:
            if reader.stats()["segments"] >= segments:
                return {"index_dir": index_dir, "reused": True, "segments": reader.stats()["segments"],
                        "factory": reader.manifest.built_factory}
    except IndexOpenError:
        pass
    shutil.rmtree(index_dir, ignore_errors=True)
    library = work / "library"
    paths = [write_video(library / f"real_{i}.mp4", num_frames=120, width=160, height=120, fps=10, seed=i)
             for i in range(videos)]
    model = Clover.from_pretrained(checkpoint).eval()
    began = time.perf_counter()
    real = index_paths(index_dir, paths, model, checkpoint_fingerprint=fingerprint(checkpoint), workers=0)
    real_seconds = time.perf_counter() - began
    grown = expand_index(index_dir, segments)
    report = verify_index(index_dir)
    if not report["ok"]:
        raise RuntimeError(f"the expanded index does not verify: {report['problems']}")
    return {"index_dir": index_dir, "reused": False, "real_segments": real["segments"],
            "real_build_s": round(real_seconds, 1), "synthetic_segments": grown["added_segments"],
            "expand_s": grown["seconds"], "segments": grown["segments"], "factory": grown["factory"],
            "verify_ok": report["ok"]}


def bare_timings(checkpoint: Path, index_dir: Path, queries: Iterator[str], repeats: int,
                 rerank_k: int, device: str) -> dict[str, Any]:
    """encode_text + FAISS (and the re-ranking work) of single queries, in this process, no HTTP."""
    from indexer.reader import IndexReader
    from model import Clover
    from service.engine.inference import encode_texts, match_scores

    model = Clover.from_pretrained(checkpoint, map_location=device).eval()
    for _ in range(3):
        encode_texts(model, ["warm up"])
    encode_s, faiss_s, rerank_s = [], [], []
    with IndexReader.open(index_dir) as reader:
        for _ in range(repeats):
            text = next(queries)
            t0 = time.perf_counter()
            vector = encode_texts(model, [text])  # (1, D)
            t1 = time.perf_counter()
            _, ids = reader.search(vector, FAISS_CANDIDATES)
            t2 = time.perf_counter()
            tokens = reader.video_tokens([int(i) for i in ids[0][:rerank_k] if i >= 0])  # (n, K, C)
            match_scores(model, tokens, text)
            t3 = time.perf_counter()
            encode_s.append(t1 - t0)
            faiss_s.append(t2 - t1)
            rerank_s.append(t3 - t2)
    total = np.add(encode_s, faiss_s)
    return {"encode_text": latency_ms(encode_s), "faiss": latency_ms(faiss_s), "search": latency_ms(total),
            "rerank_extra": latency_ms(rerank_s), "search_rerank": latency_ms(total + np.asarray(rerank_s))}


async def _load(url: str, clients: int, seconds: float, rerank: bool, queries: Iterator[str]) -> dict[str, Any]:
    """`clients` workers sending searches back to back for `seconds`; every request is counted once."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sent = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def worker() -> None:
            nonlocal sent
            while time.perf_counter() < deadline:
                params = {"q": next(queries), "k": 10, "rerank": "true" if rerank else "false"}
                sent += 1
                began = time.perf_counter()
                try:
                    response = await client.get("/search", params=params)
                    key = str(response.status_code)
                except httpx.HTTPError as error:
                    key = type(error).__name__
                latencies.append(time.perf_counter() - began)
                statuses[key] = statuses.get(key, 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - began
    ok = statuses.get("200", 0)
    return {"clients": clients, "rerank": rerank, "sent": sent, "answered": sum(statuses.values()),
            "ok": ok, "statuses": statuses, "seconds": round(wall, 2), "throughput_rps": round(ok / wall, 1),
            "latency": latency_ms(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Clover checkpoint (default: a random clover-tiny)")
    parser.add_argument("--segments", type=int, default=100_000, help="segments in the served index")
    parser.add_argument("--videos", type=int, default=3, help="real generated videos indexed before growing")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each (rerank, clients) cell")
    parser.add_argument("--bare-repeats", type=int, default=200, help="single queries timed without HTTP")
    parser.add_argument("--rerank-k", type=int, default=20, help="must match the server's rerank_k (default 20)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="where the server (and the bare timing) run the model")
    parser.add_argument("--work", type=Path, help="keep checkpoint and index here, and reuse them next time")
    parser.add_argument("--quick", action="store_true", help="20k segments, 2 s per cell, 30 bare queries")
    args = parser.parse_args(argv)
    if args.quick:
        args.segments, args.seconds, args.bare_repeats = min(args.segments, 20_000), 2.0, 30
    concurrency = [int(c) for c in args.concurrency.split(",") if c]

    machine = header("HTTP /search end to end vs bare encode_text + FAISS", args.quick)
    scratch = None
    if args.work is None:
        scratch = tempfile.TemporaryDirectory(prefix="clover-bench-http-")
        args.work = Path(scratch.name)
    args.work.mkdir(parents=True, exist_ok=True)
    try:
        checkpoint = args.checkpoint or make_checkpoint(args.work / "checkpoint")
        built = build_index(args.work, checkpoint, args.segments, args.videos)
        emit(f"checkpoint `{checkpoint}`{' (random clover-tiny)' if args.checkpoint is None else ''}; index: "
             f"{built['segments']:,} segments, FAISS `{built['factory']}`"
             + ("" if built["reused"] else f" ({built['real_segments']} real segments from {args.videos} videos, "
                f"{built['synthetic_segments']:,} synthetic added in {built['expand_s']:.0f} s; verify ok)")
             + f"; model on {args.device}, torch {torch.get_num_threads()} threads.\n")
        queries = captions(seed=0)
        bare = bare_timings(checkpoint, built["index_dir"], queries, args.bare_repeats, args.rerank_k, args.device)
        emit(table(["bare, in process (no HTTP)", "p50 ms", "p99 ms"], [
            [name, bare[key]["p50_ms"], bare[key]["p99_ms"]]
            for name, key in [("encode_text (1 query)", "encode_text"), (f"FAISS search ({FAISS_CANDIDATES})", "faiss"),
                              ("encode_text + FAISS", "search"),
                              (f"+ rerank: read {args.rerank_k} token grids + match_scores", "rerank_extra"),
                              ("encode_text + FAISS + rerank", "search_rerank")]
        ]))  # fmt: skip
        emit()
        cells = []
        with serve(built["index_dir"], checkpoint, env={"CLOVER_DEVICE": args.device}) as server:
            asyncio.run(_load(server.url, 2, min(2.0, args.seconds), False, queries))  # warm-up
            for rerank in (False, True):
                for clients in concurrency:
                    cells.append(asyncio.run(_load(server.url, clients, args.seconds, rerank, queries)))
            server_rss = server.rss_mib()
        rows = []
        for cell in cells:
            bare_p50 = bare["search_rerank" if cell["rerank"] else "search"]["p50_ms"]
            errors = cell["sent"] - cell["ok"]
            rows.append(["yes" if cell["rerank"] else "no", cell["clients"], cell["sent"], errors,
                         cell["latency"]["p50_ms"], cell["latency"]["p99_ms"], cell["throughput_rps"],
                         f"{cell['latency']['p50_ms'] / bare_p50:.2f}x"])
        emit(table(["rerank", "clients", "requests", "errors", "p50 ms", "p99 ms", "req/s", "p50 / bare p50"], rows))
        emit(f"\nserver resident memory after the run: {server_rss:.0f} MiB. The 1-client ratio is the service's "
             "overhead per request; at higher concurrency the ratio also holds queueing (2 cores, 2 inference "
             "threads) and is offset by micro-batching of query encodings.")
        write_result("http", {"segments": built["segments"], "factory": built["factory"], "index": {
            k: v for k, v in built.items() if k != "index_dir"}, "checkpoint": str(checkpoint),
            "random_checkpoint": args.checkpoint is None, "seconds_per_cell": args.seconds, "bare": bare,
            "cells": cells, "server_rss_mib": round(server_rss, 1)}, args.quick, machine)
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
