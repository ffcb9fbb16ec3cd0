"""Which synthworld attributes a checkpoint tells apart, through the dual encoder and through the fusion encoder.

For single-object clips of a split, the canonical caption ("a small red circle moves left") is compared with the
same caption with one attribute word replaced by each other value of that attribute:

- dual: the clip's embedding is closer to the true caption than to every variant (chance 1 / values);
- mlm: the attribute word masked in the true caption, the fusion encoder's MLM head ranks the true word first
  among the attribute's values (chance 1 / values);
- words (checkpoints with a word head, `heads.word_head`): the word head's first choice among the attribute's
  values, read from the video tokens alone (chance 1 / values); "-" without the head.

It separates "the video tower does not see it" (dual low) from "the fusion layers do not read it" (dual high,
mlm low). Directions are probed on clips whose object makes one translation.

    python bench/probe_attributes.py --checkpoint runs/f32/final --data data/sw6k --split test
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover  # noqa: E402
from training.cli_eval import resolve_split  # noqa: E402
from training.evaluate import encode_texts, encode_videos  # noqa: E402
from training.formats import read_any  # noqa: E402
from training.synthworld.vocab import COLORS, SHAPES, SIZES  # noqa: E402

DIRECTIONS = ("left", "right", "up", "down")
VALUES = {"color": COLORS, "shape": SHAPES, "size": SIZES, "direction": DIRECTIONS}


def describe(obj: dict) -> tuple[dict[str, str], str] | None:
    """-> (attribute -> value, caption) for an object with one phase; directions only for translations."""
    if len(obj["phases"]) != 1:
        return None
    phase = obj["phases"][0]
    attrs = {"size": obj["size"], "color": obj["color"], "shape": obj["shape"]}
    if phase.startswith("moves "):
        attrs["direction"] = phase.split()[1]
    return attrs, f"a {obj['size']} {obj['color']} {obj['shape']} {phase}"


def swap(caption: str, old: str, new: str) -> str:
    words = caption.split()
    return " ".join(new if w == old else w for w in words)


@torch.no_grad()
def mlm_rank_first(model: Clover, tokens: torch.Tensor, caption: str, word: str, values: tuple[str, ...]) -> bool:
    """Mask `word` in `caption`; is it the MLM head's first choice among `values` at that position?"""
    tok = model.tokenizer
    batch = model.tokenize([caption])
    ids = batch["input_ids"].clone()
    target = tok.convert_tokens_to_ids(word)
    position = (ids[0] == target).nonzero()[0, 0]
    ids[0, position] = tok.mask_token_id
    _, hidden = model.encode_text(ids, batch["attention_mask"], return_hidden=True)
    video = tokens[None].to(model.device, dtype=hidden.dtype)
    fused, _ = model.fuse(video, hidden, batch["attention_mask"])
    logits = model.mlm_logits(fused[:, video.shape[1] + position])[0]
    candidates = torch.tensor(tok.convert_tokens_to_ids(list(values)))
    return values[int(logits[candidates].argmax())] == word


@torch.no_grad()
def word_rank_first(model: Clover, tokens: torch.Tensor, word: str, values: tuple[str, ...]) -> bool:
    """Is `word` the word head's first choice among `values` for this clip?"""
    logits = model.word_logits(tokens[None].to(model.device))[0]
    candidates = torch.tensor(model.tokenizer.convert_tokens_to_ids(list(values)))
    return values[int(logits[candidates].argmax())] == word


def probe(model: Clover, data: str, split: str, limit: int, workers: int) -> dict:
    clips = []
    for sample in read_any(resolve_split(data, split)):
        objects = sample.meta.get("scene", {}).get("objects", [])
        described = describe(objects[0]) if len(objects) == 1 else None
        if described:
            clips.append((sample, *described))
    clips = clips[:limit]
    encoded = encode_videos(model, [c[0] for c in clips], workers=workers)
    rows = {i: r for r, i in enumerate(encoded.index)}
    hits = {name: {"dual": 0, "mlm": 0, "words": 0, "n": 0} for name in VALUES}
    model.eval()
    for i, (_, attrs, caption) in enumerate(clips):
        if i not in rows:
            continue
        video_e, video_tokens = encoded.embeddings[rows[i]], encoded.tokens[rows[i]]
        for name, value in attrs.items():
            others = [v for v in VALUES[name] if v != value]
            texts = [caption] + [swap(caption, value, v) for v in others]
            sims = encode_texts(model, texts) @ video_e
            hits[name]["dual"] += int(sims[0] > sims[1:].max())
            hits[name]["mlm"] += int(mlm_rank_first(model, video_tokens, caption, value, VALUES[name]))
            if model.word_head is not None:
                hits[name]["words"] += int(word_rank_first(model, video_tokens, value, VALUES[name]))
            hits[name]["n"] += 1
    return {name: {"n": h["n"], "chance": round(100 / len(VALUES[name]), 1),
                   "dual": round(100 * h["dual"] / max(1, h["n"]), 1),
                   "mlm": round(100 * h["mlm"] / max(1, h["n"]), 1),
                   "words": round(100 * h["words"] / max(1, h["n"]), 1) if model.word_head is not None else None}
            for name, h in hits.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=300, help="single-object clips to probe")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", help="write the table here too")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    result = probe(Clover.from_pretrained(args.checkpoint), args.data, args.split, args.limit, args.workers)
    print(f"{'attribute':<10} {'n':>4} {'chance':>7} {'dual':>6} {'mlm':>6} {'words':>6}")
    for name, row in result.items():
        words = "-" if row["words"] is None else row["words"]
        print(f"{name:<10} {row['n']:>4} {row['chance']:>7} {row['dual']:>6} {row['mlm']:>6} {words:>6}")
    if args.json:
        Path(args.json).write_text(json.dumps({"checkpoint": args.checkpoint, "split": args.split, **result}, indent=2))


if __name__ == "__main__":
    main()
