"""Open-ended QA accuracy per question type, split by how many objects the clip shows (synthworld).

    python bench/qa_by_objects.py --checkpoint runs/oqa/final --data data/sw6k --split test --limit 300

A one-object question needs no binding ("what shape is the red object?" has one candidate), a two-object one
does; telling the two apart says whether an attribute is missing from the video tokens or only hard to bind.
Each question is answered from its clip's token grid, as `clover eval` does.

`--by-cell` splits the two-object clips further by whether both objects start in the same spatial cell of the
model's token grid (clover-tiny: 2 x 2): there, one token holds both objects at first, and the fusion encoder
can only bind attributes it finds in separate tokens.
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


def start_cells_shared(scene: dict, grid: tuple[int, int]) -> bool:
    """Whether every object of the scene starts in the same cell of a (rows, columns) grid over the frame (an
    object's "start" is its normalised (x, y) centre at frame 0)."""
    rows, columns = grid
    cells = {(min(int(y * rows), rows - 1), min(int(x * columns), columns - 1))
             for x, y in (obj["start"] for obj in scene["objects"])}
    return len(cells) == 1


def accuracy_by_objects(model: Clover, samples: list, by_cell: bool = False) -> dict[tuple, tuple[int, int]]:
    """{(question subtype, number of objects[, "same cell" / "apart"]): (correct, asked)} over the samples' open
    questions; the cell split applies to clips with more than one object."""
    grid = model.video_encoder.token_grid[1:]
    encoded = encode_videos(model, samples, batch_size=32)
    row = {sample: r for r, sample in enumerate(encoded.index)}
    rows, questions, answers, keys = [], [], [], []
    for i, sample in enumerate(samples):
        if i not in row:
            continue
        scene = sample.meta["scene"]
        objects = len(scene["objects"])
        where = () if not by_cell or objects == 1 else (
            ("same cell" if start_cells_shared(scene, grid) else "apart"),)
        for q in sample.questions:
            if not q.get("candidates"):
                rows.append(row[i])
                questions.append(q["question"])
                answers.append(normalise_answer(q["answer"]))
                keys.append((q.get("subtype", q["type"]), objects, *where))
    predicted = predict_open(model, encoded.tokens[torch.tensor(rows)], questions)
    counts: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
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
    parser.add_argument("--by-cell", action="store_true",
                        help="split two-object clips by whether the objects start in one token cell")
    args = parser.parse_args()
    model = Clover.from_pretrained(args.checkpoint).eval()
    samples = read_any(resolve_split(args.data, args.split))
    samples = samples[: args.limit] if args.limit else samples
    for (subtype, objects, *where), (hit, total) in sorted(accuracy_by_objects(model, samples, args.by_cell).items()):
        cell = f"  {(where or [''])[0]:>9}" if args.by_cell else ""
        print(f"{subtype:>10}  {objects} object{'s' if objects > 1 else ' '}{cell}  {100 * hit / total:5.1f}%  of {total}")


if __name__ == "__main__":
    main()
