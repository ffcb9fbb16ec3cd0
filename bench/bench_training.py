"""Training step throughput: the baseline and the Clover objective in one run, and DDP on 2 processes vs 1.

    python bench/bench_training.py                   # clover-tiny, batch 16 per rank, 20 timed steps
    python bench/bench_training.py --quick           # batch 4, 3 timed steps
    python bench/bench_training.py --no-ddp --device cuda --batch 64

Pure step time, through the real `training.trainer.Trainer` (AMP on CUDA, gradient clipping, AdamW, warm-up +
cosine schedule): the inputs are synthetic -- standard-normal frames and synthworld-like captions
(bench/synthetic.py) -- tokenised and masked once before the clock starts (semantic masking for Clover, random
for the baseline, as `clover train` does) and replayed, so neither decoding nor spaCy is in the figure. The
presets are those of training/objective.py: `baseline` (InfoNCE + MLM + matching) and `clover` (tri-modal
alignment + ranking + semantic focal MLM + matching), i.e. the cost of the paper's method over the baseline.

DDP: the same script runs as a torchrun worker (`--worker`), gloo on CPU (NCCL when at least 2 GPUs), with the
same per-rank batch on 1 and on 2 processes; each process gets cores / processes intra-op threads, so the two
runs use the same cores. Samples/s counts every rank's samples.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, emit, header, peak_rss_mib, reset_peak_rss, table, write_result  # noqa: E402
from bench.synthetic import captions, random_clips  # noqa: E402

PRESETS = ("baseline", "clover")
REPLAYED_BATCHES = 4


class IndexDataset(Dataset):
    """Only indices: the collate function below supplies the (pre-built) batch."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> int:
        return index


class ReplayCollate:
    """Returns pre-collated batches in turn, whatever indices it is given (the step is timed, not the data)."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches, self.calls = batches, 0

    def __call__(self, _indices: list[int]) -> dict[str, torch.Tensor]:
        batch = self.batches[self.calls % len(self.batches)]
        self.calls += 1
        return batch


def make_batches(model: Any, preset: str, batch_size: int, seed: int,
                 random_masking: bool = False) -> list[dict[str, torch.Tensor]]:
    """REPLAYED_BATCHES batches of synthetic clips and captions, masked as `clover train` masks for `preset`
    (or randomly, with `random_masking`, where spaCy is not installed)."""
    from training.data import TextCollator
    from training.masking import RandomTextMasker, SemanticTextMasker
    from training.objective import objective_config

    cfg = model.config
    semantic = objective_config(preset).text_masking == "semantic" and not random_masking
    masker_cls = SemanticTextMasker if semantic else RandomTextMasker
    collate = TextCollator(model.tokenizer, cfg.text.max_length,
                           masker_cls(model.tokenizer, max_length=cfg.text.max_length, seed=seed))
    texts = captions(seed)
    batches = []
    for b in range(REPLAYED_BATCHES):
        clips = random_clips(batch_size, cfg.num_frames, cfg.image_size, seed=seed * 100 + b)
        items = [{"frames": clip, "caption": text, "index": i, "key": f"{seed}-{b}-{i}"}
                 for i, (clip, text) in enumerate(zip(clips, islice(texts, batch_size), strict=True))]
        batches.append(collate(items))
    return batches


def run_trainer(preset: str, model_name: str, batch_size: int, warmup: int, steps: int, device: str,
                info: Any = None, random_masking: bool = False) -> dict[str, Any]:
    """Train `warmup` steps, then time `steps` more; returns samples/s (all ranks) and the peak memory."""
    from model import create_model
    from training.objective import CloverObjective, objective_config
    from training.trainer import TrainConfig, Trainer

    class _Unsaved(Trainer):
        def save(self, final: bool = False) -> None:  # checkpoints are not part of a step
            return None

    rank = info.rank if info is not None else 0
    world = info.world_size if info is not None else 1
    torch.manual_seed(0)
    model = create_model(model_name)
    batches = make_batches(model, preset, batch_size, seed=rank, random_masking=random_masking)
    with tempfile.TemporaryDirectory(prefix="clover-bench-train-") as out:
        cfg = TrainConfig(out=out, batch_size=batch_size, max_steps=warmup, warmup_steps=max(1, warmup),
                          log_every=10**9, workers=0, device=device)
        trainer = _Unsaved(model, CloverObjective(objective_config(preset), info), IndexDataset(batch_size * world * 8),
                           ReplayCollate(batches), cfg, info)
        trainer.train(progress=False)
        trainer.cfg.max_steps = warmup + steps
        reset_peak_rss()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        history = trainer.train(progress=False)
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - began
        peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if trainer.device.type == "cuda" else None
    return {"preset": preset, "batch_per_rank": batch_size, "ranks": world, "steps": steps,
            "seconds": round(seconds, 3), "samples_per_s": round(steps * batch_size * world / seconds, 2),
            "step_ms": round(1000 * seconds / steps, 1), "peak_rss_mib": round(peak_rss_mib(), 1),
            "peak_gpu_mib": round(peak_gpu, 1) if peak_gpu is not None else None,
            "final_loss": round(float(history[-1]["loss"]), 4),
            "precision": str(trainer.amp_dtype).replace("torch.", "") if trainer.amp_dtype else "fp32"}


def worker(args: argparse.Namespace) -> int:
    """One torchrun rank: the timed run of `--preset`; rank 0 writes the result to `--result`."""
    from training.distributed import cleanup, init_distributed

    device = "cuda" if torch.cuda.device_count() >= 2 and args.device.startswith("cuda") else "cpu"
    info = init_distributed(device)
    if device == "cuda":
        device = f"cuda:{info.local_rank}"
    result = run_trainer(args.preset, args.model, args.batch, args.warmup, args.steps, device, info,
                         args.random_masking)
    if info.is_main:
        Path(args.result).write_text(json.dumps({**result, "device": device}))
    cleanup()
    return 0


def ddp_run(args: argparse.Namespace, processes: int) -> dict[str, Any]:
    """torchrun --standalone --nproc_per_node=N on this script; cores are split evenly between the ranks."""
    threads = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                  // processes)
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "result.json"
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(Path(__file__).resolve()), "--worker", "--preset", args.ddp_preset, "--model", args.model,
                   "--batch", str(args.batch), "--warmup", str(args.warmup), "--steps", str(args.ddp_steps),
                   "--device", args.device, "--result", str(result)]
        command += ["--random-masking"] if args.random_masking else []
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(REPO),
               "TOKENIZERS_PARALLELISM": "false"}
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"torchrun with {processes} processes failed:\n{done.stderr[-3000:]}")
        return {**json.loads(result.read_text()), "threads_per_rank": threads}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="clover-tiny")
    parser.add_argument("--batch", type=int, default=16, help="samples per rank per step")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--no-ddp", action="store_true", help="skip the 1-vs-2-process DDP comparison")
    parser.add_argument("--ddp-preset", default="clover", choices=PRESETS)
    parser.add_argument("--ddp-steps", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="batch 4, 2 warm-up and 3 timed steps (2 for DDP)")
    parser.add_argument("--random-masking", action="store_true",
                        help="random text masking for every objective, for machines without spaCy (the masking is "
                             "done before the clock starts; only how many tokens the MLM head scores changes)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="clover", choices=PRESETS, help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.warmup, args.steps, args.ddp_steps = 4, 2, 3, 2
    if args.worker:
        return worker(args)

    runs = []
    for preset in PRESETS:
        runs.append(run_trainer(preset, args.model, args.batch, args.warmup, args.steps, args.device,
                                random_masking=args.random_masking))
        gc.collect()
    ddp = [] if args.no_ddp else [ddp_run(args, 1), ddp_run(args, 2)]

    machine = header(f"Training: {args.model} on {args.device}", args.quick)
    emit(f"batch {args.batch} per step, {args.warmup} warm-up + {args.steps} timed steps, synthetic pre-collated "
         f"batches, precision {runs[0]['precision']}, torch {torch.get_num_threads()} threads"
         + (", random text masking for every objective" if args.random_masking else "") + ".\n")
    peak = "peak GPU MiB" if runs[0]["peak_gpu_mib"] is not None else "peak RSS MiB"
    baseline = runs[0]["samples_per_s"]
    emit(table(["objective", "samples/s", "ms / step", "vs baseline", peak], [
        [r["preset"], r["samples_per_s"], r["step_ms"], f"{r['samples_per_s'] / baseline:.2f}x",
         r["peak_gpu_mib"] if r["peak_gpu_mib"] is not None else r["peak_rss_mib"]] for r in runs]))
    if ddp:
        single = ddp[0]["samples_per_s"]
        emit(f"\nDDP ({args.ddp_preset} objective, {ddp[0]['device']}, batch {args.batch} per rank, "
             f"{args.ddp_steps} timed steps, launched by torchrun):\n")
        emit(table(["processes", "threads / rank", "samples/s (all ranks)", "ms / step", "speed-up", "efficiency"], [
            [r["ranks"], r["threads_per_rank"], r["samples_per_s"], r["step_ms"],
             f"{r['samples_per_s'] / single:.2f}x", f"{r['samples_per_s'] / single / r['ranks']:.0%}"]
            for r in ddp]))
    write_result("training", {"model": args.model, "device": args.device, "batch": args.batch,
                              "random_masking": args.random_masking,
                              "steps": args.steps, "objectives": runs,
                              "clover_vs_baseline": round(runs[1]["samples_per_s"] / baseline, 3), "ddp": ddp},
                 args.quick, machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
