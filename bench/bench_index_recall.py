"""Recall and speed of the FAISS factories the indexer uses, against exact (Flat) search.

    python bench/bench_index_recall.py                 # 100k random unit vectors, D=256
    python bench/bench_index_recall.py --n 1000000 --dim 768
    python bench/bench_index_recall.py --quick         # 20k vectors, a smoke run

Two collections: `uniform` random unit vectors, which have no structure and are the worst case for approximate
search (in 256-D every point is almost equally far from every other), and `clustered` ones shaped like segment
embeddings (groups of ~10 segments around a per-video direction, cosine ~0.8 inside a group) with queries near
a group, as a text query lands near the video it describes. Every index is built through
`indexer.vectors.build_index`, exactly as `clover index build/rebuild` does, and the ground truth is the Flat
index's top-k. Prints markdown tables on stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from indexer.vectors import (  # noqa: E402
    apply_search_params,
    build_index,
    choose_factory,
    default_search_params,
    pq_subquantizers,
    recall_at_k,
    search,
)


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(
    n: int, num_queries: int, dim: int, seed: int, group: int = 10
) -> tuple[np.ndarray, np.ndarray]:
    """Segments grouped around per-video directions (cosine ~0.8 to their centre); queries near random groups."""
    rng = np.random.default_rng(seed)
    centres = unit_vectors(max(n // group, 1), dim, seed + 1)
    noise = 0.75  # |noise| ~ 0.75 against a unit centre -> cosine to the centre ~0.8

    def around(which: np.ndarray) -> np.ndarray:
        x = centres[which] + noise * rng.standard_normal((len(which), dim)).astype(np.float32) / np.sqrt(dim)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return around(rng.integers(0, len(centres), n)), around(rng.integers(0, len(centres), num_queries))


def candidates(n: int, dim: int, with_pq: bool) -> list[tuple[str, list[str]]]:
    """(factory, search-parameter strings) to measure; the size-based default is always among them."""
    nlist = 2 ** round(np.log2(4 * np.sqrt(n)))
    rows = [
        ("HNSW32", ["efSearch=64", "efSearch=128", "efSearch=256"]),
        (f"IVF{nlist},Flat", ["nprobe=16", "nprobe=32", "nprobe=64"]),
    ]
    if with_pq:
        rows.append((f"IVF{nlist},PQ{pq_subquantizers(dim)}", ["nprobe=16", "nprobe=32", "nprobe=64"]))
    default = choose_factory(n, dim)
    if default != "Flat" and default not in {factory for factory, _ in rows}:
        rows.append((default, [default_search_params(default)]))
    return rows


def single_query_ms(index, queries: np.ndarray, k: int, limit: int = 200) -> float:
    """Latency as the service sees it: one query per search call (batched calls would flatter Flat)."""
    began = time.perf_counter()
    for row in queries[:limit]:
        search(index, row[None], k)
    return 1000 * (time.perf_counter() - began) / min(limit, len(queries))


def measure(base: np.ndarray, queries: np.ndarray, k: int, with_pq: bool) -> None:
    n, dim = base.shape
    ids = np.arange(n, dtype=np.int64)
    began = time.perf_counter()
    exact_index = build_index(base, ids, "Flat")
    flat_build = time.perf_counter() - began
    _, exact = search(exact_index, queries, k)
    flat_ms = single_query_ms(exact_index, queries, k)
    print(f"| factory | search params | build s | ms / query (one at a time) | R@1 | R@{k} |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    print(f"| Flat | | {flat_build:.2f} | {flat_ms:.3f} | 1.000 | 1.000 |")
    for factory, parameter_sets in candidates(n, dim, with_pq):
        began = time.perf_counter()
        index = build_index(base, ids, factory)
        build_seconds = time.perf_counter() - began
        for params in parameter_sets:
            apply_search_params(index, params)
            _, found = search(index, queries, k)
            per_query_ms = single_query_ms(index, queries, k)
            print(
                f"| {factory} | {params} | {build_seconds:.2f} | {per_query_ms:.3f} | "
                f"{recall_at_k(found, exact, 1):.3f} | {recall_at_k(found, exact, k):.3f} |"
            )
        sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument(
        "--dim", type=int, default=256, help="embedding dimension (clover-tiny 256, base 768)"
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (0 = FAISS default)")
    parser.add_argument("--data", choices=["uniform", "clustered", "both"], default="both")
    parser.add_argument("--no-pq", action="store_true", help="skip IVF-PQ (its training is the slow part)")
    parser.add_argument("--quick", action="store_true", help="20k vectors, 200 queries, no IVF-PQ")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.no_pq = 20_000, 200, True
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    print(
        f"## FAISS recall vs Flat: {args.n:,} vectors, D={args.dim}, {args.queries} queries, k={args.k}, "
        f"{faiss.omp_get_max_threads()} threads"
    )
    print(
        f"\nsize-based default for this collection: `{choose_factory(args.n, args.dim)}` "
        f"(`{default_search_params(choose_factory(args.n, args.dim))}`)"
    )
    for data in ["uniform", "clustered"] if args.data == "both" else [args.data]:
        if data == "uniform":
            base, queries = (
                unit_vectors(args.n, args.dim, seed=0),
                unit_vectors(args.queries, args.dim, seed=1),
            )
        else:
            base, queries = clustered_vectors(args.n, args.queries, args.dim, seed=0)
        print(f"\n### {data}\n")
        measure(base, queries, args.k, with_pq=not args.no_pq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
