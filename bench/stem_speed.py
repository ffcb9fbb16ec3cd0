"""The pooling stem's 2-D per-frame forward against its 3-D layers, and what it does to the whole video tower.

    python bench/stem_speed.py --checkpoint runs/p75w/final --clips 32 --repeats 7
    python bench/stem_speed.py --config training/configs/tiny-synthworld-oneway.json --clips 32 --repeats 7
    CLOVER_KEEP_FREED_MEMORY=0 python bench/stem_speed.py ...   # with glibc's defaults (model/host_memory.py)

`PoolStem` keeps its parameters in 3-D layers (a (1, 3, 3) convolution and a (1, 2, 2) max pool per halving) and
runs them per frame as 2-D ops on channels-last frames. This times forward + backward of the stem both ways on
standard-normal frames of a training step's size, then the whole tower both ways (the 3-D path patched in), one
repeat of each at a time so that drift on a shared machine hits both alike; medians and their ratios are printed.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model import Clover, create_model  # noqa: E402
from model.host_memory import keep_freed_memory  # noqa: E402
from model.video_encoder import PoolStem  # noqa: E402
from training.cli_train import load_config_file  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint")
    source.add_argument("--config", help="a training config (path or name) whose \"model\" section overrides --model")
    parser.add_argument("--model", default="clover-tiny")
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    kept = keep_freed_memory()  # as the batch programs run; CLOVER_KEEP_FREED_MEMORY=0 times glibc's defaults
    torch.manual_seed(0)
    if args.checkpoint:
        model = Clover.from_pretrained(args.checkpoint)
    else:
        model = create_model(args.model, **load_config_file(args.config).get("model", {}))
    tower = model.video_encoder.train()
    stem = tower.swin.patch_embed.proj
    if not isinstance(stem, PoolStem):
        raise SystemExit(f"the video tower's stem is {type(stem).__name__}, not PoolStem")
    cfg = model.config
    frames = torch.randn(args.clips, cfg.num_frames, 3, cfg.image_size, cfg.image_size)
    stem_input = frames.transpose(1, 2).contiguous()  # (B, 3, T, H, W), as the patch embedding passes it

    def timed(fn) -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        fn().sum().backward()
        return time.perf_counter() - start

    def tower_with_3d_stem():
        stem.forward = lambda x: stem.layers(x)  # an instance attribute shadows the 2-D method
        try:
            return tower(frames)
        finally:
            del stem.forward

    cases = {"stem, 3-D layers": lambda: stem.layers(stem_input), "stem, 2-D per frame": lambda: stem(stem_input),
             "tower, 3-D stem": tower_with_3d_stem, "tower, 2-D stem": lambda: tower(frames)}
    torch.testing.assert_close(stem(stem_input), stem.layers(stem_input), rtol=1e-4, atol=1e-5)
    for fn in cases.values():  # warm-up
        timed(fn)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, fn in cases.items():
            times[name].append(timed(fn))
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"{args.clips} clips of {cfg.num_frames} x {cfg.image_size}px, stem width {cfg.video.stem_width}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}; forward + backward, median of "
          f"{args.repeats}, alternating; freed host memory {'kept' if kept else 'returned (glibc defaults)'}")
    print("| part | 3-D | 2-D per frame | ratio |\n| --- | ---: | ---: | ---: |")
    for part, three, two in (("stem", "stem, 3-D layers", "stem, 2-D per frame"),
                             ("tower", "tower, 3-D stem", "tower, 2-D stem")):
        print(f"| {part} | {medians[three]:.3f} s | {medians[two]:.3f} s | {medians[two] / medians[three]:.2f}x |")


if __name__ == "__main__":
    main()
