"""Open-ended QA accuracy per question type, split by how many objects the clip shows (synthworld).

    python bench/qa_by_objects.py --checkpoint runs/oqa/final --data data/sw6k --split test --limit 300

A one-object question needs no binding ("what shape is the red object?" has one candidate), a two-object one
does; telling the two apart says whether an attribute is missing from the video tokens or only hard to bind.
Each question is answered from its clip's token grid, as `clover eval` does.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover  # noqa: E402
from training.cli_eval import resolve_split  # noqa: E402
from training.evaluate import encode_videos, normalise_answer, predict_open  # noqa: E402
from training.formats import read_any  # noqa: E402


def accuracy_by_objects(model: Clover, samples: list) -> dict[tuple[str, int], tuple[int, int]]:
    """{(question subtype, number of objects): (correct, asked)} over the samples' open questions."""
    encoded = encode_videos(model, samples, batch_size=32)
    row = {sample: r for r, sample in enumerate(encoded.index)}
    rows, questions, answers, keys = [], [], [], []
    for i, sample in enumerate(samples):
        if i not in row:
            continue
        objects = len(sample.meta["scene"]["objects"])
        for q in sample.questions:
            if not q.get("candidates"):
                rows.append(row[i])
                questions.append(q["question"])
                answers.append(normalise_answer(q["answer"]))
                keys.append((q.get("subtype", q["type"]), objects))
    predicted = predict_open(model, encoded.tokens[torch.tensor(rows)], questions)
    counts: dict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for key, prediction, answer in zip(keys, predicted, answers, strict=True):
        counts[key][0] += prediction == answer
        counts[key][1] += 1
    return {key: (hit, total) for key, (hit, total) in counts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a checkpoint with an open-QA head")
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=0, help="only the first N clips (0: all)")
    args = parser.parse_args()
    model = Clover.from_pretrained(args.checkpoint).eval()
    samples = read_any(resolve_split(args.data, args.split))
    samples = samples[: args.limit] if args.limit else samples
    for (subtype, objects), (hit, total) in sorted(accuracy_by_objects(model, samples).items()):
        print(f"{subtype:>10}  {objects} object{'s' if objects > 1 else ' '}  {100 * hit / total:5.1f}%  of {total}")


if __name__ == "__main__":
    main()
