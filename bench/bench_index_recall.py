"""Recall / latency sweep of the FAISS factories the indexer uses: now one mode of `bench/bench_search.py`.

    python bench/bench_index_recall.py --n 100000            # = bench_search.py --sizes 100000 --sweep --ivf-flat
    python bench/bench_index_recall.py --n 1000000 --dim 768 --no-pq

Kept so the old command (and the reference in indexer/vectors.py) still works; the measuring code lives in
bench_search.py alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_search  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the index")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1024)
    parser.add_argument("--data", choices=["uniform", "clustered", "both"], default="both")
    parser.add_argument("--no-pq", action="store_true")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args(argv)
    data = "clustered,uniform" if args.data == "both" else args.data
    forwarded = ["--sizes", str(args.n), "--uniform-sizes", str(args.n), "--data", data, "--dim", str(args.dim),
                 "--queries", str(args.queries), "--threads", str(args.threads), "--sweep", "--ivf-flat"]
    return bench_search.main(forwarded + (["--no-pq"] if args.no_pq else []))


if __name__ == "__main__":
    sys.exit(main())
