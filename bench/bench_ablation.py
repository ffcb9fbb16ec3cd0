"""The paper's ablation on synthworld: baseline, +TMA, +semantic masking, +ranking (= Clover), same budget and seed.

    python bench/bench_ablation.py --data data/sw6k --steps 200              # about 35 minutes on 2 CPU cores
    python bench/bench_ablation.py --data data/sw6k --variants baseline,clover --steps 100

Each variant is `clover train --objective VARIANT --config tiny-synthworld-b32 --max-steps STEPS` (the same
model, data order, seed, batch and schedule; only the objective's switches differ, see training/objective.py),
then the same open-ended QA fine-tune on cached video tokens (`clover finetune --task open-qa`, `--qa-steps`),
then `clover eval` on the test split: dual-encoder text->video R@1/5/10 and open-QA accuracy per type. The step
time of every variant comes from its own metrics log (median samples/s after the first logging interval), so
the Clover / baseline ratio is measured in the same run. The CLIs run as subprocesses, exactly as a user runs
them; the frame cache of the training split is built once and shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, emit, header, table, write_result  # noqa: E402

VARIANTS = {  # name -> (`--objective` preset, what it adds)
    "baseline": ("baseline", "InfoNCE + cross-entropy MLM, random masking"),
    "+TMA": ("tma", "tri-modal alignment instead of InfoNCE"),
    "+semantic masking": ("tma+semantic", "POS-based masking, focal MLM"),
    "+ranking (Clover)": ("clover", "pair-wise ranking"),
}


def clover(*args: str, log: Path) -> None:
    """Run one `clover` subcommand; its output goes to `log` (shown when it fails)."""
    command = [sys.executable, "-m", "service.cli", *args]
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                              env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}); see {log}")


def step_seconds(metrics: Path, batch_size: int) -> float:
    rates = [json.loads(line)["samples_per_s"] for line in metrics.read_text().splitlines()[1:]]
    return batch_size / statistics.median(rates)


def run_variant(name: str, preset: str, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    run = root / preset
    run.mkdir(parents=True, exist_ok=True)
    cache = run / "cache"
    if not cache.exists():
        shared = root / "frame-cache"
        shared.mkdir(exist_ok=True)
        cache.symlink_to(shared.resolve())
    began = time.perf_counter()
    if not (run / "final").is_dir():
        clover("train", "--data", str(args.data), "--model", "clover-tiny", "--out", str(run), "--objective", preset,
               "--config", args.config, "--max-steps", str(args.steps), "--warmup-steps", str(args.warmup),
               "--seed", str(args.seed), "--quiet", log=run / "train.log")
    trained = time.perf_counter()
    qa = root / f"{preset}-qa"
    if not (qa / "final").is_dir():
        clover("finetune", "--task", "open-qa", "--init", str(run / "final"), "--data", str(args.data),
               "--out", str(qa), "--max-steps", str(args.qa_steps), "--seed", str(args.seed), "--quiet",
               log=qa.with_suffix(".log"))
    result_file = root / f"{preset}-eval.json"
    if not result_file.is_file():
        clover("eval", "--checkpoint", str(qa / "final"), "--data", str(args.data), "--split", args.split,
               "--rerank-k", "0", "--qa-types", "open", "--json", str(result_file), log=root / f"{preset}-eval.log")
    result = json.loads(result_file.read_text())
    batch = json.loads((run / "run_config.json").read_text())["train"]["batch_size"]
    return {"variant": name, "objective": preset, "step_s": step_seconds(run / "metrics.jsonl", batch),
            "train_minutes": (trained - began) / 60, "retrieval": result["retrieval"]["t2v"],
            "qa": result["qa"]["open"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a synthworld directory (clover synth)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "ablation")
    parser.add_argument("--variants", default=",".join(v for v, _ in VARIANTS.values()),
                        help="objective presets to run, in order")
    parser.add_argument("--config", default="tiny-synthworld-b32")
    parser.add_argument("--steps", type=int, default=200, help="pretraining steps of every variant")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--qa-steps", type=int, default=300, help="open-QA fine-tuning steps of every variant")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    wanted = [v for v in args.variants.split(",") if v]
    names = {preset: name for name, (preset, _) in VARIANTS.items()}
    unknown = [v for v in wanted if v not in names]
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {sorted(names)}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [run_variant(names[preset], preset, args, args.out) for preset in wanted]

    machine = header("Ablation on synthworld (same steps, batch, schedule and seed)", False)
    emit(f"data `{args.data}`, {args.steps} pretraining steps (`--config {args.config}`), {args.qa_steps} open-QA "
         f"fine-tuning steps, evaluated on `{args.split}`.\n")
    base = next((r["step_s"] for r in rows if r["objective"] == "baseline"), None)
    what = {preset: text for preset, text in VARIANTS.values()}
    table_rows = []
    for r in rows:
        t2v, qa = r["retrieval"], r["qa"]
        subtypes = ", ".join(f"{k} {v:.0f}" for k, v in sorted(qa.items())
                             if isinstance(v, float) and k not in ("overall", "answers_in_vocab"))
        table_rows.append([r["variant"], what[r["objective"]], f"{t2v['R@1']:.1f}", f"{t2v['R@5']:.1f}",
                           f"{t2v['R@10']:.1f}", f"{qa['overall']:.1f}", subtypes, f"{r['step_s']:.2f}",
                           f"{r['step_s'] / base:.2f}x" if base else "-"])
    emit(table(["variant", "adds", "R@1", "R@5", "R@10", "open QA %", "per type %", "s/step", "vs baseline"],
               table_rows, align="llrrrrlrr"))
    write_result("ablation", {"settings": {k: str(v) for k, v in vars(args).items()}, "variants": rows}, False,
                 machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
