"""Quality: retrieval and QA of a checkpoint on a synthworld directory, through `clover eval`'s own evaluation.

    python bench/bench_quality.py --checkpoint runs/tiny/final --data data/sw6k
    python bench/bench_quality.py --checkpoint CKPT --data DIR --splits test --rerank-k 20 --num-clips 4
    python bench/bench_quality.py --quick            # random clover-tiny on a generated 60-clip world: a smoke run

For each split (default `test` and `test_compositional`, the captions whose object/attribute combinations never
occur in training) it runs `training.evaluate.evaluate` -- exactly what `clover eval` runs -- and prints
text-to-video R@1/5/10 and median / mean rank, with and without fusion re-ranking of the top `--rerank-k`,
video-to-text, and QA accuracy per question type (open-ended by the QA head when the checkpoint has one,
multiple-choice by the choice head, and the `caption` type retrieval-style too).

Without `--data` a small world is generated first (`training.synthworld.generate_world`), and without
`--checkpoint` a random clover-tiny is used: numbers from that are chance level and only prove the pipeline
runs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, header, table, write_result  # noqa: E402
from bench.synthetic import make_checkpoint  # noqa: E402


def retrieval_rows(split: str, retrieval: dict[str, Any]) -> list[list[Any]]:
    names = {"t2v": "text -> video", "t2v_rerank": f"text -> video, re-ranked top {retrieval.get('rerank_k')}",
             "v2t": "video -> text"}
    rows = []
    for key, label in names.items():
        metrics = retrieval.get(key)
        if isinstance(metrics, dict):
            rows.append([split, label, retrieval["num_queries"], f"{metrics['R@1']:.1f}", f"{metrics['R@5']:.1f}",
                         f"{metrics['R@10']:.1f}", f"{metrics['median_rank']:g}", f"{metrics['mean_rank']:.1f}"])
    return rows


def qa_rows(split: str, qa: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for qtype, metrics in sorted(qa.items()):
        if "skipped" in metrics:
            rows.append([split, qtype, metrics.get("num_questions", ""), "skipped", metrics["skipped"]])
            continue
        subtypes = ", ".join(f"{name} {value:.1f}" for name, value in sorted(metrics.items())
                             if name not in ("overall", "num_questions", "answers_in_vocab")
                             and isinstance(value, float))
        rows.append([split, qtype, metrics["num_questions"], f"{metrics['overall']:.1f}", subtypes])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="Clover checkpoint (default: a random clover-tiny)")
    parser.add_argument("--data", type=Path, help="synthworld directory (default: generate a small one)")
    parser.add_argument("--splits", default="test,test_compositional")
    parser.add_argument("--rerank-k", type=int, default=10, help="re-rank each query's top k (0: off)")
    parser.add_argument("--num-clips", type=int, default=1, help="clips averaged per video")
    parser.add_argument("--max-videos", type=int, help="only the first N videos of each split")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers decoding videos")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="at most 40 videos per split")
    args = parser.parse_args(argv)
    if args.quick:
        args.max_videos = min(args.max_videos or 40, 40)

    from model import Clover
    from training.cli_eval import resolve_split
    from training.evaluate import evaluate
    from training.formats import read_any

    with tempfile.TemporaryDirectory(prefix="clover-bench-quality-") as scratch:
        notes = []
        data = args.data
        if data is None:
            from training.synthworld.world import generate_world

            data = Path(scratch) / "world"
            generate_world(data, 60, seed=0, workers=1, test_size=12, val_size=6, compositional_size=6)
            notes.append("generated a 60-clip synthworld (seed 0; 12 test, 6 compositional clips)")
        checkpoint = args.checkpoint or make_checkpoint(Path(scratch) / "checkpoint")
        if args.checkpoint is None:
            notes.append("random clover-tiny checkpoint: chance-level figures, a smoke run of the pipeline only")
        model = Clover.from_pretrained(checkpoint, map_location=args.device).eval()
        results = {}
        for split in [s for s in args.splits.split(",") if s]:
            samples = read_any(resolve_split(data, split))[: args.max_videos]
            results[split] = evaluate(model, samples, num_clips=args.num_clips, batch_size=args.batch_size,
                                      rerank_k=args.rerank_k, workers=args.workers)

    machine = header("Quality: retrieval and QA (clover eval)", args.quick)
    emit(f"checkpoint `{checkpoint if args.checkpoint else 'random clover-tiny'}`, data `{args.data or 'generated'}`"
         f", {args.num_clips} clip(s) per video, device {args.device}"
         + (f", first {args.max_videos} videos per split" if args.max_videos else "") + ".")
    for note in notes:
        emit(f"- {note}")
    emit()
    retrieval, qa = [], []
    for split, result in results.items():
        if isinstance(result.get("retrieval"), dict) and "skipped" not in result["retrieval"]:
            retrieval += retrieval_rows(split, result["retrieval"])
        qa += qa_rows(split, result.get("qa") or {})
    emit(table(["split", "direction", "queries", "R@1", "R@5", "R@10", "median rank", "mean rank"], retrieval,
               align="llrrrrrr"))
    emit()
    emit(table(["split", "question type", "questions", "accuracy %", "per subtype %"], qa, align="llrrl"))
    failed = {split: len(result["failed_videos"]) for split, result in results.items() if result["failed_videos"]}
    if failed:
        emit(f"\nvideos that failed to decode (left out): {failed}")
    write_result("quality", {"checkpoint": str(args.checkpoint) if args.checkpoint else None,
                             "data": str(args.data) if args.data else None, "notes": notes,
                             "results": results}, args.quick, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
