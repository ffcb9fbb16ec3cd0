"""Does `torch.compile` pay for the video tower on this machine? Eager against compiled, forward + backward.

    python bench/compile_speed.py --checkpoint runs/p75w/final --clips 32 --repeats 7

The checkpoint's video tower (its exact architecture) on standard-normal frames of the model's input size, a
training step's worth of clips: forward + backward of the tokens' sum. The compiled copy's first call (the
compile itself) is timed on its own; then eager and compiled calls alternate, one repeat of each at a time, so
drift on a shared machine hits both alike, and the medians and their ratio are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mode", default="default", help="torch.compile mode")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = Clover.from_pretrained(args.checkpoint).train()
    cfg = model.config
    frames = torch.randn(args.clips, cfg.num_frames, 3, cfg.image_size, cfg.image_size)
    eager = model.video_encoder
    compiled = torch.compile(eager, mode=args.mode)

    def step(tower) -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        tower(frames).sum().backward()
        return time.perf_counter() - start

    print(f"{args.clips} clips of {cfg.num_frames} x {cfg.image_size}px, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}; checkpoint {args.checkpoint}")
    print(f"compile (first compiled call): {step(compiled):.1f} s")
    step(eager), step(compiled)  # warm-up
    times = {"eager": [], "compiled": []}
    for _ in range(args.repeats):
        times["eager"].append(step(eager))
        times["compiled"].append(step(compiled))
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    print(f"video tower forward + backward: eager {eager_s:.3f} s, compiled {compiled_s:.3f} s: "
          f"{compiled_s / eager_s:.2f}x (alternating, median of {args.repeats})")


if __name__ == "__main__":
    main()
