"""The model alone: forward+backward on 8 clips, and forward-only throughput of each tower and of the fusion calls.

    python bench/bench_model.py                     # clover-tiny, median of 20 (CUDA with AMP when present)
    python bench/bench_model.py --model clover-base --repeats 10 --device cuda
    python bench/bench_model.py --quick             # median of 3

Inputs are synthetic: standard-normal frames (what normalised pixels look like to the model) and synthworld-like
captions (bench/synthetic.py), so nothing is decoded and only the model is timed. Rows:

- forward+backward, dual encoders: encode_video + encode_text of 8 (clip, caption) pairs, a symmetric InfoNCE
  on the embeddings, backward;
- forward+backward, full Clover objective: the `clover` preset of training/objective.py (tri-modal alignment,
  ranking, MLM, matching: two video passes, two text passes, three fusion passes), backward;
- forward only (inference mode): encode_video at 8 and 32 clips, encode_text for one query and 64 captions,
  match_score of one query against 20 cached token grids (a re-ranked search), answer_open on one video.

Each figure is the median of `--repeats` timed calls after two warm-up calls. On CUDA the calls run under bf16
autocast (fp16 where bf16 is missing) and are synchronised before the clock stops.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, header, median, peak_rss_mib, reset_peak_rss, table, write_result  # noqa: E402
from bench.synthetic import QA_ANSWERS, captions, random_clips  # noqa: E402


def timed(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Seconds per call after two warm-up calls (allocator, kernel selection)."""
    for _ in range(2):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for _ in range(repeats):
        sync()
        began = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - began)
    return times


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clover-tiny")
    parser.add_argument("--batch", type=int, default=8, help="clips in the forward+backward rows")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--quick", action="store_true", help="median of 3")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 3
    if args.threads:
        torch.set_num_threads(args.threads)

    from model import create_model
    from training.masking import RandomTextMasker
    from training.objective import CloverObjective, objective_config

    device = torch.device(args.device)
    torch.manual_seed(0)
    model = create_model(args.model).to(device)
    model.set_answer_vocab(QA_ANSWERS)
    cfg = model.config
    texts = list(islice(captions(seed=1), max(64, args.batch)))
    clips = random_clips(max(32, args.batch), cfg.num_frames, cfg.image_size).to(device)  # (N, T, 3, S, S)
    batch_clips = clips[: args.batch]
    masked = RandomTextMasker(model.tokenizer, max_length=cfg.text.max_length, seed=0)(texts[: args.batch])
    batch = {"frames": batch_clips, "input_ids": masked["input_ids"].to(device),
             "attention_mask": masked["attention_mask"].to(device),
             "masked_input_ids": masked["masked_input_ids"].to(device), "mlm_labels": masked["labels"].to(device)}
    objective = CloverObjective(objective_config("clover"))
    generator = torch.Generator().manual_seed(0)

    def dual_step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device):
            video = model.encode_video(batch["frames"])  # (B, D)
            text = model.encode_text(batch["input_ids"], batch["attention_mask"])  # (B, D)
            logits = video @ text.T / 0.05
            target = torch.arange(len(logits), device=device)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        loss.backward()

    def clover_step() -> None:
        model.zero_grad(set_to_none=True)
        with autocast(device):
            loss, _ = objective(model, batch, generator)
        loss.backward()

    rows: list[tuple[str, str, list[float], int]] = []  # (what, unit, seconds per call, items per call)
    peaks: dict[str, float] = {}
    model.train()
    for name, step in (("forward+backward, dual encoders + InfoNCE", dual_step),
                       ("forward+backward, full Clover objective", clover_step)):
        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        rows.append((name, "clips", timed(step, args.repeats, device), args.batch))
        peaks[name] = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib())
    model.eval()
    query = model.tokenize(texts[:1])
    caption_batch = model.tokenize(texts[:64])
    token_grids = model.encode_video(clips[:20], return_tokens=True)[1].detach().to(torch.float16)  # (20, K, C)
    inference = [
        ("encode_video, 8 clips", "clips", lambda: model.encode_video(clips[:8]), 8),
        ("encode_video, 32 clips", "clips", lambda: model.encode_video(clips[:32]), 32),
        ("encode_text, 1 query", "texts", lambda: model.encode_text(query["input_ids"], query["attention_mask"]), 1),
        ("encode_text, 64 captions", "texts",
         lambda: model.encode_text(caption_batch["input_ids"], caption_batch["attention_mask"]), 64),
        ("match_score, 1 query x 20 token grids (rerank)", "pairs", lambda: model.match_score(token_grids, texts[0]), 20),
        ("answer_open, 1 question x 1 video", "questions",
         lambda: model.answer_open(token_grids[:1], ["what colour is the shape?"]), 1),
    ]  # fmt: skip
    with torch.inference_mode():
        for name, unit, fn, items in inference:
            def call(fn=fn) -> None:
                with autocast(device):
                    fn()
            rows.append((name, unit, timed(call, args.repeats, device), items))

    machine = header(f"Model: {args.model} on {args.device}", args.quick)
    params = sum(p.numel() for p in model.parameters())
    emit(f"{params / 1e6:.1f}M parameters; {cfg.num_frames} frames of {cfg.image_size}px per clip; torch "
         f"{torch.get_num_threads()} threads; " + ("bf16/fp16 autocast" if device.type == "cuda" else "fp32")
         + f"; median of {args.repeats} calls.\n")
    cells, records = [], []
    for name, unit, seconds, items in rows:
        mid = median(seconds)
        cells.append([name, f"{mid * 1000:.1f}", f"{min(seconds) * 1000:.1f}", f"{items / mid:.1f} {unit}/s",
                      f"{peaks[name]:.0f}" if name in peaks else ""])
        records.append({"what": name, "median_ms": round(mid * 1000, 2), "min_ms": round(min(seconds) * 1000, 2),
                        "per_s": round(items / mid, 2), "unit": unit, "items": items,
                        "peak_mib": round(peaks[name], 1) if name in peaks else None})
    peak_kind = "GPU memory allocated" if device.type == "cuda" else "process resident memory"
    emit(table(["call", "median ms", "min ms", "throughput", f"peak MiB ({peak_kind})"], cells))
    write_result("model", {"model": args.model, "device": args.device, "params": params, "batch": args.batch,
                           "repeats": args.repeats, "torch_threads": torch.get_num_threads(), "rows": records},
                 args.quick, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
