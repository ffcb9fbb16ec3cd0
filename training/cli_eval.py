"""`clover eval`: retrieval (R@K, ranks, re-ranked) and QA accuracy of a checkpoint on one split.

    clover eval --checkpoint runs/tiny/final --data data/sw --split test --json runs/tiny/eval_test.json
    clover eval --checkpoint CKPT --data MSRVTT_JSFUSION_test.csv --root videos/ --num-clips 4   # 32 frames
    clover eval --checkpoint CKPT --data didemo_test.json --format didemo --root videos/ --text-max-length 128

`--data` is a dataset directory (`DIR/{split}.jsonl`, or `DIR/{split}.{csv,tsv,json}`) or one manifest file in
any format of `training.formats`. The result is printed as JSON and written to `--json`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from model import Clover
from model.host_memory import keep_freed_memory

from .evaluate import evaluate, summary_lines
from .formats import FORMATS, read_any
from .trainer import resolve_device

log = logging.getLogger("clover.eval")

_SPLIT_SUFFIXES = (".jsonl", ".csv", ".tsv", ".json")


def resolve_split(data: str | Path, split: str) -> Path:
    """The manifest of `split` in a dataset directory, or `data` itself when it is a file."""
    data = Path(data)
    if data.is_file():
        return data
    for suffix in _SPLIT_SUFFIXES:
        if (data / f"{split}{suffix}").is_file():
            return data / f"{split}{suffix}"
    raise FileNotFoundError(f"no {split} manifest in {data} (looked for {split}{{{','.join(_SPLIT_SUFFIXES)}}})")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="clover eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a Clover checkpoint directory")
    parser.add_argument("--data", required=True, help="dataset directory or manifest file")
    parser.add_argument("--split", default="test")
    parser.add_argument("--format", default="auto", choices=["auto", *FORMATS], help="manifest format")
    parser.add_argument("--root", help="folder that relative video paths resolve against (default: the manifest's)")
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--rerank-k", type=int, default=10, help="re-rank each query's top k (0: off)")
    parser.add_argument("--num-clips", type=int, default=1, help="clips averaged per video (test-time)")
    parser.add_argument("--batch-size", type=int, default=32, help="clips per video forward pass")
    parser.add_argument("--all-captions", action="store_true", help="every caption is a query, not just the first")
    parser.add_argument("--max-videos", type=int, help="evaluate only the first N videos of the split")
    parser.add_argument("--no-retrieval", action="store_true")
    parser.add_argument("--no-qa", action="store_true")
    parser.add_argument("--qa-types", help="comma-separated question types to score (e.g. open,action); default all. "
                                           "Multiple-choice types cost 5 fused passes per question")
    parser.add_argument("--text-max-length", type=int, help="tokens per query (paragraphs need more than 32)")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers decoding videos")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    manifest = resolve_split(args.data, args.split)
    samples = read_any(manifest, fmt=args.format, root=args.root)
    if args.max_videos is not None:
        samples = samples[: args.max_videos]
    if args.qa_types:
        wanted = {t.strip() for t in args.qa_types.split(",") if t.strip()}
        for sample in samples:
            sample.questions = [q for q in sample.questions if q.get("type", "open") in wanted]
    if not samples:
        print(f"clover eval: {manifest} lists no videos", file=sys.stderr)
        return 1
    device = resolve_device(args.device)
    model = Clover.from_pretrained(args.checkpoint, map_location=device)
    log.info("evaluating %s on %d videos of %s (%s)", args.checkpoint, len(samples), manifest, device)
    result = evaluate(
        model, samples, num_clips=args.num_clips, batch_size=args.batch_size, rerank_k=args.rerank_k,
        all_captions=args.all_captions, retrieval=not args.no_retrieval, qa=not args.no_qa, workers=args.workers,
        text_max_length=args.text_max_length, progress=not args.quiet,
    )
    result = {"checkpoint": str(args.checkpoint), "split": args.split, "manifest": str(manifest), **result}
    for line in summary_lines(result):
        log.info(line)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":  # python -m / torchrun -m: the batch job `clover` would start
    keep_freed_memory()
    sys.exit(main())
