"""Search at scale: exact (Flat) vs HNSW vs IVF-PQ, and the indexer's size-based default, against numpy.

    python bench/bench_search.py                                # 100k and 1M, clustered; uniform at 100k
    python bench/bench_search.py --sizes 100000 --sweep         # recall / latency trade-off of each index
    python bench/bench_search.py --quick                        # 100k clustered, default parameters only
    python bench/bench_search.py --dim 768 --sizes 1000000 --data clustered,uniform

Collections (see bench/synthetic.py): `clustered` vectors shaped like segment embeddings (groups of 10 around a
per-video direction, cosine ~0.8 to it; queries near a random group) and `uniform` unit vectors, the worst
case for approximate search. Every index is built by `indexer.vectors.build_index`, as `clover index build`
does (IVF and PQ are trained on a sample of 64 points per list), and searched by `indexer.vectors.search`.

Per index: build seconds, size (bytes `faiss.write_index` writes) and the resident-memory growth of the build,
recall@1 and @k against the exact top-k, latency of one query per call (as the service searches) and of batches
of 64 (p50 / p99), and batched throughput. The floor to beat is numpy in the same run: one matrix product and
an argpartition over the raw float32 matrix. With a CUDA build of FAISS and a GPU, exact search on the GPU is
measured too.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, fmt_bytes, header, latency_ms, rss_mib, table, write_result  # noqa: E402
from bench.synthetic import clustered_vectors, uniform_vectors  # noqa: E402
from indexer.vectors import (  # noqa: E402
    apply_search_params,
    build_index,
    choose_factory,
    default_search_params,
    pq_subquantizers,
    recall_at_k,
    search,
)

BATCH = 64


def candidates(n: int, dim: int, sweep: bool, ivf_flat: bool, with_pq: bool, max_hnsw: int,
               extra: list[tuple[str, list[str]]] = ()) -> list[tuple[str, list[str]]]:
    """(factory, parameter strings) to measure; the indexer's default for this size is always among them."""
    nlist = min(max(2 ** round(math.log2(4 * math.sqrt(n))), 1024), 65536)  # as indexer.vectors.choose_factory
    rows: list[tuple[str, list[str]]] = []
    if n <= max_hnsw:
        rows.append(("HNSW32", ["efSearch=64", "efSearch=128", "efSearch=256"] if sweep else ["efSearch=128"]))
    if ivf_flat:
        rows.append((f"IVF{nlist},Flat", ["nprobe=16", "nprobe=32", "nprobe=64"] if sweep else ["nprobe=32"]))
    if with_pq:
        rows.append((f"IVF{nlist},PQ{pq_subquantizers(dim)}",
                     ["nprobe=16", "nprobe=32", "nprobe=64"] if sweep else ["nprobe=32"]))
    default = choose_factory(n, dim)
    if default != "Flat" and default not in {factory for factory, _ in rows}:
        rows.append((default, [default_search_params(default)]))
    return rows + list(extra)


def parse_extra(spec: str) -> tuple[str, list[str]]:
    """"FACTORY@PARAMS|PARAMS" (e.g. "IVF4096,PQ64,Refine(SQ8)@nprobe=32,k_factor_rf=4") -> (factory, [params])."""
    factory, _, params = spec.partition("@")
    return factory.strip(), [p.strip() for p in params.split("|")] if params else [default_search_params(factory)]


def index_bytes(index: faiss.Index) -> int:
    """What `faiss.write_index` writes, counted without holding a second copy in memory."""
    total = 0

    def count(chunk: bytes) -> int:
        nonlocal total
        total += len(chunk)
        return len(chunk)

    faiss.write_index(index, faiss.PyCallbackIOWriter(count))
    return total


def numpy_search(base: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Brute force: scores [Q, N] by one matrix product, top-k by argpartition, then sorted. -> ids [Q, k]."""
    scores = queries @ base.T  # (Q, N)
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]  # (Q, k), unordered
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1)
    return np.take_along_axis(top, order, axis=1)


def time_calls(run: Callable[[np.ndarray], Any], queries: np.ndarray, batch: int, limit: int) -> list[float]:
    """Seconds per call over consecutive slices of `batch` queries (at most `limit` calls); one warm-up call."""
    run(queries[:batch])
    times = []
    for start in range(0, min(len(queries), batch * limit), batch):
        chunk = queries[start : start + batch]
        if len(chunk) < batch:
            break
        began = time.perf_counter()
        run(chunk)
        times.append(time.perf_counter() - began)
    return times


def latency_row(run: Callable[[np.ndarray], Any], queries: np.ndarray, single_limit: int) -> dict[str, Any]:
    single = latency_ms(time_calls(run, queries, 1, single_limit))
    batched = latency_ms(time_calls(run, queries, BATCH, len(queries) // BATCH))
    qps = BATCH / (batched["mean_ms"] / 1000) if batched.get("n") else None
    return {"single": single, "batch64": batched, "batch64_qps": round(qps) if qps else None}


def measure(data: str, base: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> list[dict[str, Any]]:
    n, dim = base.shape
    k = args.k
    ids = np.arange(n, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    default = choose_factory(n, dim)

    floor = {"index": "numpy matmul + argpartition", "params": "", "build_s": None, "bytes": int(base.nbytes),
             "rss_mib": None, "recall_1": 1.0, f"recall_{k}": 1.0}
    floor.update(latency_row(lambda q: numpy_search(base, q, k), queries, args.single_queries))
    rows.append(floor)

    began, rss_before = time.perf_counter(), rss_mib()
    exact_index = build_index(base, ids, "Flat")
    build_s, rss_grown = time.perf_counter() - began, rss_mib() - rss_before
    _, exact = search(exact_index, queries, k)
    row = {"index": "Flat" + (" (default)" if default == "Flat" else ""), "params": "", "build_s": build_s,
           "bytes": index_bytes(exact_index), "rss_mib": rss_grown, "recall_1": 1.0, f"recall_{k}": 1.0}
    row.update(latency_row(lambda q, index=exact_index: search(index, q, k), queries, args.single_queries))
    rows.append(row)
    assert recall_at_k(numpy_search(base, queries[:50], k), exact[:50], k) > 0.99  # the floor finds the same
    if hasattr(faiss, "index_cpu_to_all_gpus") and faiss.get_num_gpus() > 0:
        gpu_index = faiss.index_cpu_to_all_gpus(exact_index)
        row = {"index": "Flat on GPU", "params": "", "build_s": None, "bytes": index_bytes(exact_index), "rss_mib": None,
               "recall_1": 1.0, f"recall_{k}": 1.0}
        row.update(latency_row(lambda q, index=gpu_index: search(index, q, k), queries, args.single_queries))
        rows.append(row)
        del gpu_index
    del exact_index
    gc.collect()
    _print_rows(data, n, dim, rows, k, partial=True)

    extra = [parse_extra(spec) for spec in args.factory]
    for factory, parameter_sets in candidates(n, dim, args.sweep, args.ivf_flat, not args.no_pq, args.max_hnsw, extra):
        began, rss_before = time.perf_counter(), rss_mib()
        index = build_index(base, ids, factory)
        build_s, rss_grown = time.perf_counter() - began, rss_mib() - rss_before
        size = index_bytes(index)
        for params in parameter_sets:
            apply_search_params(index, params)
            _, found = search(index, queries, k)
            marked = factory + (" (default)" if factory == default and params == default_search_params(factory)
                                else "")
            row = {"index": marked, "params": params, "build_s": build_s, "bytes": size, "rss_mib": rss_grown,
                   "recall_1": recall_at_k(found, exact, 1), f"recall_{k}": recall_at_k(found, exact, k)}
            row.update(latency_row(lambda q, index=index: search(index, q, k), queries, args.single_queries))
            rows.append(row)
            _print_rows(data, n, dim, [row], k, partial=True, with_header=False)
        del index
        gc.collect()
    emit()
    return rows


def _print_rows(data: str, n: int, dim: int, rows: list[dict[str, Any]], k: int, partial: bool,
                with_header: bool = True) -> None:
    """Rows are printed as they are measured (a 1M HNSW build takes minutes), under one table header."""
    if with_header:
        emit(f"### {data}: {n:,} vectors, D={dim}\n")
    cells = [
        [r["index"], r["params"], _fmt(r["build_s"], ".1f"), fmt_bytes(r["bytes"]), _fmt(r["rss_mib"], ".0f"),
         f"{r['recall_1']:.3f}", f"{r[f'recall_{k}']:.3f}", f"{r['single']['p50_ms']:.2f}",
         f"{r['single']['p99_ms']:.2f}", f"{r['batch64']['p50_ms']:.1f}", f"{r['batch64']['p99_ms']:.1f}",
         r["batch64_qps"]]
        for r in rows
    ]  # fmt: skip
    text = table(["index", "params", "build s", "size", "build RSS +MiB", "R@1", f"R@{k}", "1-query p50 ms",
                  "p99 ms", f"batch {BATCH} p50 ms", "p99 ms", f"QPS (batch {BATCH})"], cells, align="llrrrrrrrrrr")
    emit(text if with_header else text.splitlines()[-1])


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated collection sizes")
    parser.add_argument("--uniform-sizes", default="100000",
                        help="sizes of the uniform stress case (it is the slow one to index; '' = none)")
    parser.add_argument("--data", default="clustered,uniform", help="clustered, uniform, or both")
    parser.add_argument("--dim", type=int, default=256, help="embedding dimension (clover-tiny 256, base 768)")
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--single-queries", type=int, default=200, help="one-at-a-time searches timed per index")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0 = FAISS default)")
    parser.add_argument("--sweep", action="store_true", help="several efSearch / nprobe values per index")
    parser.add_argument("--ivf-flat", action="store_true", help="also IVF,Flat (uncompressed inverted lists)")
    parser.add_argument("--no-pq", action="store_true", help="skip IVF-PQ")
    parser.add_argument("--max-hnsw", type=int, default=1_000_000,
                        help="largest collection HNSW is built for (a 1M build takes many minutes on 2 cores)")
    parser.add_argument("--factory", action="append", default=[], metavar="FACTORY@PARAMS|PARAMS",
                        help="also measure this FAISS factory, at each '|'-separated parameter string (repeatable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="100k clustered only, 256 queries, one setting each, no IVF-PQ (its training is slow)")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.uniform_sizes, args.data, args.queries, args.single_queries = "100000", "", "clustered", 256, 50
        args.no_pq = True
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    uniform_sizes = {int(s) for s in args.uniform_sizes.split(",") if s}
    datasets = [d.strip() for d in args.data.split(",") if d.strip()]
    machine = header("Search at scale: FAISS indexes vs exact vs numpy", args.quick)
    emit(f"{faiss.omp_get_max_threads()} FAISS threads, {args.queries} queries, k={args.k}; latencies are "
         "per call (one query, or a batch of 64); QPS = queries per second in batches of 64.\n")
    skipped = []
    results = []
    for n in sizes:
        for data in datasets:
            if data == "uniform" and n not in uniform_sizes:
                skipped.append(f"uniform at {n:,} (--uniform-sizes)")
                continue
            if n > args.max_hnsw:
                skipped.append(f"HNSW32 at {n:,} (--max-hnsw {args.max_hnsw:,})")
            if data == "clustered":
                base, queries = clustered_vectors(n, args.dim, args.seed, num_queries=args.queries)
            else:
                base = uniform_vectors(n, args.dim, args.seed)
                queries = uniform_vectors(args.queries, args.dim, args.seed + 10_000)
            rows = measure(data, base, queries, args)
            results.append({"data": data, "n": n, "dim": args.dim, "default_factory": choose_factory(n, args.dim),
                            "rows": rows})
            del base, queries
            gc.collect()
    if 1_000_000 not in sizes:
        skipped.append("1M vectors (--sizes)")
    if args.no_pq:
        skipped.append("IVF-PQ (--no-pq)")
    if "uniform" not in datasets:
        skipped.append("the uniform stress case (--data)")
    if skipped:
        emit("Skipped in this run: " + "; ".join(skipped) + ".")
    write_result("search", {"k": args.k, "queries": args.queries, "faiss_threads": faiss.omp_get_max_threads(),
                            "skipped": skipped, "results": results}, args.quick, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
