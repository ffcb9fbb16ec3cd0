"""Can the video tower learn shape at all? A supervised check on single-object synthworld clips.

    python bench/probe_shape_learning.py --data data/sw6k --checkpoint runs/tiny/final   # frozen tokens
    python bench/probe_shape_learning.py --data data/sw6k --train swin --model clover-tiny --lr 1e-4
    python bench/probe_shape_learning.py --data data/sw6k --train cnn

`probe_attributes.py` shows that shape is what a trained checkpoint does not tell apart. This script asks why,
with the task reduced to its core: the single-object clips of the train split (about 2,000; 80% to learn from,
20% held out), labelled with their object's shape (4-way, chance 25%).

- `--checkpoint`: a linear classifier on the checkpoint's frozen video tokens (their mean, and all of them
  flattened). What the pretrained tower carries about shape.
- `--train swin`: the preset's (or `--model` JSON's) Video Swin tower from random init, trained on shape alone
  (max over its tokens -> linear), AdamW at `--lr`, batches of 32. Can the architecture learn it from this much
  data, with direct supervision?
- `--tau T`: the same tower read the dual encoder's way (cosine to one learned embedding per shape, / T), to
  tell the contrastive form from the tower.
- `--from-checkpoint` (with `--checkpoint` and `--train swin`): the same, starting from the checkpoint's tower:
  can a pretrained tower still learn shape?
- `--shift N`: each training clip moved by a random offset of up to N pixels (held-out clips are not).
- `--train cnn`: the same on a 3-layer 2D CNN with global max pooling (every frame, max over time): the
  baseline that says the labels and pixels are fine.
- `--also color size` (`--train swin`): the same head also classifies these attributes of the object, each a
  cross-entropy term beside shape's (`--shape-weight` x), as a QA batch asks for all of them at once: do easy
  attributes learned beside shape slow it down?

Held-out accuracy is printed every 50 steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover  # noqa: E402
from model.factory import get_model_config  # noqa: E402
from model.transforms import VideoTransform  # noqa: E402
from model.video_encoder import VideoSwinEncoder  # noqa: E402
from training.cli_eval import resolve_split  # noqa: E402
from training.data import decode_clip  # noqa: E402
from training.formats import read_any  # noqa: E402
from training.synthworld.vocab import COLORS, SHAPES, SIZES  # noqa: E402

BATCH = 32


ATTRIBUTES = {"shape": SHAPES, "color": COLORS, "size": SIZES}


def single_object_clips(data: str, split: str, num_frames: int, size: int) -> tuple[torch.Tensor, dict]:
    """Normalised clips [N, T, 3, S, S] of the split's one-object videos and {attribute: labels [N]}."""
    transform = VideoTransform(size)
    clips, labels = [], {name: [] for name in ATTRIBUTES}
    for sample in read_any(resolve_split(data, split)):
        objects = sample.meta.get("scene", {}).get("objects", [])
        if len(objects) == 1:
            clips.append(transform(decode_clip(sample, num_frames, short_side=size)))
            for name, values in ATTRIBUTES.items():
                labels[name].append(values.index(objects[0][name]))
    return torch.stack(clips), {name: torch.tensor(values) for name, values in labels.items()}


def linear_probe(features: torch.Tensor, labels: torch.Tensor, learn: int, steps: int = 300) -> float:
    """Held-out accuracy (%) of a softmax classifier on standardised features [N, F]."""
    mean, std = features[:learn].mean(0), features[:learn].std(0) + 1e-5
    z = (features - mean) / std
    head = nn.Linear(z.shape[1], len(SHAPES))
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        loss = F.cross_entropy(head(z[:learn]), labels[:learn])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return 100 * float((head(z[learn:]).argmax(1) == labels[learn:]).float().mean())


class FrameCNN(nn.Module):
    """Three 3x3 conv layers, two 2x poolings, global max over space and time -> shape logits."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(64, len(SHAPES))

    def forward(self, clips: torch.Tensor) -> torch.Tensor:  # [B, T, 3, S, S]
        b, t = clips.shape[:2]
        return self.head(self.net(clips.flatten(0, 1)).view(b, t, -1).amax(1))


class SwinShape(nn.Module):
    """Max over the tower's tokens, then a linear layer; or, with `tau`, the dual encoder's form: cosine between a
    256-d projection and one learned embedding per shape (a caption's stand-in), divided by tau."""

    def __init__(self, encoder: VideoSwinEncoder, tau: float = 0.0, extra_classes: int = 0):
        super().__init__()
        self.encoder, self.tau = encoder, tau
        if tau:
            self.head = nn.Linear(encoder.out_dim, 256)
            self.classes = nn.Parameter(torch.randn(len(SHAPES), 256) * 0.02)
        else:  # shape's logits first, then those of the `--also` attributes
            self.head = nn.Linear(encoder.out_dim, len(SHAPES) + extra_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        out = self.head(self.encoder(clips).amax(1))
        if self.tau:
            return F.normalize(out, dim=-1) @ F.normalize(self.classes, dim=-1).T / self.tau
        return out


def shifted(clips: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each clip moved by its own random (dy, dx) in [-shift, shift] pixels, edges replicated: augmentation
    against learning where an object was instead of what it looks like."""
    b, t, c, h, w = clips.shape
    padded = F.pad(clips.flatten(0, 1), (shift,) * 4, mode="replicate").view(b, t, c, h + 2 * shift, w + 2 * shift)
    offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator).tolist()
    return torch.stack([padded[i, :, :, y : y + h, x : x + w] for i, (y, x) in enumerate(offsets)])


def train_from_scratch(net: nn.Module, clips: torch.Tensor, labels: torch.Tensor, learn: int, steps: int,
                       lr: float, shift: int = 0, also: tuple[tuple[torch.Tensor, int], ...] = (),
                       shape_weight: float = 1.0) -> list[tuple[int, float, float]]:
    """(step, train loss, held-out shape accuracy %) every 50 steps. `also`: (labels [N], class count) of more
    attributes, whose logits follow shape's in the net's output, a cross-entropy term each beside shape's
    (weighted `shape_weight`)."""
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.01)
    log, began, generator = [], time.perf_counter(), torch.Generator().manual_seed(0)
    for step in range(1, steps + 1):
        batch = torch.randint(0, learn, (BATCH,))
        inputs = shifted(clips[batch], shift, generator) if shift else clips[batch]
        logits = net(inputs)
        loss = shape_weight * F.cross_entropy(logits[:, : len(SHAPES)], labels[batch])
        start = len(SHAPES)
        for attribute, classes in also:
            loss = loss + F.cross_entropy(logits[:, start : start + classes], attribute[batch])
            start += classes
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == steps:
            net.eval()
            with torch.no_grad():
                held = torch.cat([net(clips[i : i + 128])[:, : len(SHAPES)].argmax(1)
                                  for i in range(learn, len(clips), 128)])
            net.train()
            accuracy = 100 * float((held == labels[learn:]).float().mean())
            log.append((step, loss.item(), accuracy))
            print(f"step {step:>4}  loss {loss.item():.3f}  held-out {accuracy:5.1f}%  "
                  f"({time.perf_counter() - began:.0f} s)", flush=True)
    return log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", default="train")
    parser.add_argument("--checkpoint", help="linear probe of this checkpoint's frozen video tokens")
    parser.add_argument("--train", choices=["swin", "cnn"], help="train a tower from scratch on shape")
    parser.add_argument("--model", default="clover-tiny", help="preset or JSON config of the Swin tower (--train swin)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--tau", type=float, default=0.0,
                        help="--train swin: cosine against learned shape embeddings / tau instead of a linear head")
    parser.add_argument("--shift", type=int, default=0, help="random translation of each training clip, pixels")
    parser.add_argument("--also", nargs="*", default=[], choices=["color", "size"],
                        help="--train swin: also classify these attributes (a term each, beside shape's)")
    parser.add_argument("--shape-weight", type=float, default=1.0, help="shape's term's weight beside --also's")
    parser.add_argument("--from-checkpoint", action="store_true",
                        help="--train swin: start from --checkpoint's video tower instead of random init")
    args = parser.parse_args()
    if args.from_checkpoint and not (args.checkpoint and args.train == "swin"):
        parser.error("--from-checkpoint needs --checkpoint and --train swin")
    if (args.also or args.shape_weight != 1.0) and (args.train != "swin" or args.tau):
        parser.error("--also and --shape-weight need --train swin without --tau")
    if not args.checkpoint and not args.train:
        parser.error("give --checkpoint, --train, or both")
    torch.manual_seed(0)
    model = Clover.from_pretrained(args.checkpoint).eval() if args.checkpoint else None
    config = model.config if model is not None else get_model_config(args.model)
    clips, attributes = single_object_clips(args.data, args.split, config.num_frames, config.image_size)
    labels = attributes["shape"]
    learn = int(0.8 * len(clips))
    print(f"{len(clips)} single-object clips ({learn} to learn from), shapes {np.bincount(labels.numpy()).tolist()}")
    if model is not None:
        with torch.no_grad():
            tokens = torch.cat([model.video_encoder(clips[i : i + 64]) for i in range(0, len(clips), 64)])
        print(f"frozen tokens, linear probe: mean {linear_probe(tokens.mean(1), labels, learn):.1f}%, "
              f"flattened {linear_probe(tokens.flatten(1), labels, learn):.1f}% held out")
    if args.train:
        if args.from_checkpoint:  # can a pretrained tower still learn shape, given the labels?
            encoder = model.video_encoder.train().requires_grad_(True)
        else:
            encoder = VideoSwinEncoder(config.video, config.num_frames, config.image_size)
        also = tuple((attributes[name], len(ATTRIBUTES[name])) for name in args.also)
        extra = sum(classes for _, classes in also)
        net = FrameCNN() if args.train == "cnn" else SwinShape(encoder, args.tau, extra)
        train_from_scratch(net, clips, labels, learn, args.steps, args.lr, args.shift, also, args.shape_weight)


if __name__ == "__main__":
    main()
