"""Run every benchmark (one subprocess each) and collect their markdown into one file.

    python bench/run_all.py                                   # make bench: full sizes (an hour or more on 2 cores)
    python bench/run_all.py --quick                           # make bench-quick: a smoke run of every script
    python bench/run_all.py --checkpoint runs/tiny/final --data data/sw6k
    python bench/run_all.py --only search,http

The markdown goes to bench/results/latest.md (latest-quick.md with --quick, so a smoke run never replaces full
figures), ready to paste into docs/benchmarks.md; each script also writes its own JSON next to it. A script that
fails does not stop the others: its error tail is put in the markdown and the exit status is 1.
`--checkpoint` goes to the scripts that serve or evaluate a trained model (http, quality); `--data` (a synthworld
directory) to quality. The reliability checks (soak, crash trials, API fuzzing) are separate: docs/reliability.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS_DIR, command_line, emit, machine_info, machine_line, now_utc  # noqa: E402

# name -> (script, takes --checkpoint, takes --data)
SCRIPTS: dict[str, tuple[str, bool, bool]] = {
    "search": ("bench_search.py", False, False),
    "http": ("bench_http.py", True, False),
    "indexing": ("bench_indexing.py", False, False),
    "model": ("bench_model.py", False, False),
    "training": ("bench_training.py", False, False),
    "quality": ("bench_quality.py", True, True),
}


def run_one(name: str, args: argparse.Namespace) -> tuple[str, bool, float]:
    """(markdown, succeeded, seconds) of one script."""
    script, takes_checkpoint, takes_data = SCRIPTS[name]
    command = [sys.executable, str(REPO / "bench" / script)]
    if args.quick:
        command.append("--quick")
    if takes_checkpoint and args.checkpoint:
        command += ["--checkpoint", str(args.checkpoint)]
    if takes_data and args.data:
        command += ["--data", str(args.data)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    began = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
        stdout, stderr, ok = done.stdout, done.stderr, done.returncode == 0
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        stderr, ok = f"timed out after {args.timeout} s", False
    seconds = time.perf_counter() - began
    if ok:
        return stdout.strip(), True, seconds
    tail = "\n".join(stderr.strip().splitlines()[-25:])
    return (f"## {name}: FAILED ({seconds:.0f} s)\n\n`{' '.join(command[1:])}`\n\n```\n{tail}\n```\n\n"
            + (f"partial output:\n\n{stdout.strip()}" if stdout.strip() else "")), False, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="each script's smoke-run sizes (~2-3 minutes in all)")
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint for http and quality")
    parser.add_argument("--data", type=Path, help="synthworld directory for quality")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(SCRIPTS)}")
    parser.add_argument("--timeout", type=int, default=4 * 3600, help="seconds allowed per script")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(SCRIPTS)
    unknown = set(names) - set(SCRIPTS)
    if unknown:
        parser.error(f"unknown benchmarks {sorted(unknown)}; choose from {', '.join(SCRIPTS)}")

    sections, failed, durations = [], [], {}
    for name in names:
        emit(f"running {name} ...")
        text, ok, seconds = run_one(name, args)
        durations[name] = seconds
        emit(f"  {name}: {'ok' if ok else 'FAILED'} in {seconds:.0f} s")
        sections.append(text)
        if not ok:
            failed.append(name)
    summary = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in durations.items())
    intro = (f"# Benchmarks{' (QUICK MODE: smoke-run sizes, not reference figures)' if args.quick else ''}\n\n"
             f"`{command_line()}` on {now_utc()}; {machine_line(machine_info())}. Wall time per script: "
             f"{summary}.\n")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    target = RESULTS_DIR / ("latest-quick.md" if args.quick else "latest.md")
    target.write_text("\n\n".join([intro, *sections]) + "\n")
    emit(f"\nwrote {target.relative_to(REPO)}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
