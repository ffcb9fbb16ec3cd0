"""Crash recovery: `clover index build` killed with SIGKILL at random moments, resumed, compared with a clean build.

    python bench/crash_trials.py --trials 20              # 20 trials, 1-2 kills each
    python bench/crash_trials.py --trials 100 --max-kills 3 --workers 2 --seed 7

The library is the indexer tests' mixed one (tests/indexer/conftest.py: generated MP4/MKV, two real sample
MP4s, one file of each broken kind), the checkpoint a random clover-tiny shrunk as in those tests. First one
uninterrupted build is the reference; its run -- from the moment it records itself in the catalog's `runs`
table (imports done, model loaded, recovery done) to the moment that row says `finished` -- takes R seconds.
Then each trial, on a fresh index directory, 1 to `--max-kills` times: start the build (a subprocess in its own
process group, so its decode workers die with it), wait for its run to begin, sleep a time drawn uniformly from
[0, R x the fraction of segments still to write (at least 0.2)], and SIGKILL the whole group; so kills land
anywhere in scanning, planning, decoding, between and inside batch commits (thumbnails, shard, transaction) and
in the final FAISS sync. Then run the same command to completion.

A trial passes when the resumed build exits 0, `clover index verify` reports no problem, no video or segment is
duplicated (unique paths; one row per (video, window)), no temporary file is left, and the index equals the
reference: the same videos with the same status and failure reason, the same windows, embeddings equal to fp16
precision, and as many FAISS vectors (tests/indexer/conftest.py's `index_snapshot` / `assert_same_index`).
A kill that lands after the build finished counts as a kill "too late" (the trial still checks the result).

tests/reliability/test_crash_trials.py runs 3 trials (marked slow).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, emit, header, table, write_result  # noqa: E402

WINDOW = 2.0
BATCH = 4


def build_command(index_dir: Path, library: Path, checkpoint: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "service.cli", "index", "build", str(library), "--index", str(index_dir),
            "--checkpoint", str(checkpoint), "--json", "--no-progress", "--window", str(WINDOW),
            "--stride", str(WINDOW), "--batch-size", str(BATCH), "--workers", str(workers)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def count_rows(index_dir: Path, table_name: str) -> int:
    """Rows in a catalog table, read-only (0 while the catalog or its tables do not exist yet)."""
    database = index_dir / "catalog.sqlite"
    if not database.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1) as connection:
            return int(connection.execute(f"SELECT count(*) FROM {table_name}").fetchone()[0])
    except sqlite3.Error:
        return 0


def timed_build(index_dir: Path, command: list[str]) -> dict[str, Any]:
    """An uninterrupted build; seconds from its start to its `runs` row appearing (imports, model load and recovery
    done) and to that row turning `finished` (everything written; only the process exit remains)."""
    began = time.monotonic()
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_at = finished_at = None
    while process.poll() is None:
        if run_at is None and count_rows(index_dir, "runs") > 0:
            run_at = time.monotonic() - began
        if finished_at is None and count_rows(index_dir, "runs WHERE status = 'finished'") > 0:
            finished_at = time.monotonic() - began
        time.sleep(0.01)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"the reference build failed:\n{stderr.decode()[-3000:]}")
    total = time.monotonic() - began
    return {"startup_s": run_at or 0.0, "finished_s": finished_at or total, "total_s": total,
            "summary": json.loads(stdout)}


def killed_build(index_dir: Path, command: list[str], delay: float) -> dict[str, Any]:
    """Start a build; `delay` seconds after its run begins (its `runs` row appears), SIGKILL its process group."""
    runs_before = count_rows(index_dir, "runs")
    process = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while process.poll() is None and count_rows(index_dir, "runs") <= runs_before:
            if time.monotonic() > deadline:
                raise RuntimeError("the build never started its run")
            time.sleep(0.01)
        time.sleep(delay)
        finished_first = process.poll() is not None
        if not finished_first:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    if finished_first and process.returncode != 0:
        raise RuntimeError(f"an interrupted build failed by itself:\n{stderr[-3000:]}")
    return {"delay_s": round(delay, 2), "too_late": finished_first, "committed": count_rows(index_dir, "segments")}


def check_index(index_dir: Path, reference: dict) -> list[str]:
    """Everything a resumed index must satisfy (see the module docstring); the problems found."""
    from tests.indexer.conftest import assert_same_index, index_snapshot

    problems = []
    verify = subprocess.run([sys.executable, "-m", "service.cli", "index", "verify", "--index", str(index_dir),
                             "--json"], cwd=REPO, env=_env(), capture_output=True, text=True)
    if verify.returncode != 0:
        problems.append(f"verify: {verify.stdout.strip()[-1000:] or verify.stderr[-1000:]}")
    with sqlite3.connect(index_dir / "catalog.sqlite") as connection:
        duplicated_paths = connection.execute(
            "SELECT count(*) FROM (SELECT path FROM videos GROUP BY path HAVING count(*) > 1)").fetchone()[0]
        duplicated_windows = connection.execute(
            "SELECT count(*) FROM (SELECT video_id, ordinal FROM segments GROUP BY video_id, ordinal "
            "HAVING count(*) > 1)").fetchone()[0]
    if duplicated_paths or duplicated_windows:
        problems.append(f"duplicates: {duplicated_paths} video paths, {duplicated_windows} windows")
    leftovers = [str(p.relative_to(index_dir)) for p in index_dir.rglob("*.tmp-*")]
    if leftovers:
        problems.append(f"temporaries left: {leftovers[:5]}")
    try:
        assert_same_index(index_snapshot(index_dir), reference)
    except AssertionError as error:
        problems.append(f"differs from the uninterrupted build: {str(error)[:500]}")
    return problems


def run_trials(work: Path, trials: int, seed: int = 0, workers: int = 1, max_kills: int = 2,
               log: Any = None) -> dict[str, Any]:
    """The whole experiment in `work`; returns the reference timings and one record per trial."""
    from bench.synthetic import make_checkpoint
    from tests.indexer.conftest import index_snapshot, make_library

    library = work / "library"
    if not library.exists():
        make_library(library)
    checkpoint = make_checkpoint(work / "checkpoint", embed_dim=64, video={"depths": [1, 1]})
    reference_dir = work / "reference"
    reference = timed_build(reference_dir, build_command(reference_dir, library, checkpoint, workers))
    snapshot = index_snapshot(reference_dir)
    run_s = reference["finished_s"] - reference["startup_s"]  # the run itself, from its row to `finished`
    total = max(1, int(reference["summary"]["segments"]))
    records = []
    rng = random.Random(seed)
    for trial in range(trials):
        index_dir = work / f"trial_{trial:03d}"
        command = build_command(index_dir, library, checkpoint, workers)
        began = time.monotonic()
        kills = []
        for _ in range(rng.randint(1, max_kills)):  # a resumed run has less left to do: draw from its share
            left = max(0.2, 1 - count_rows(index_dir, "segments") / total)
            kills.append(killed_build(index_dir, command, rng.uniform(0, run_s * left)))
        resumed = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
        problems = [] if resumed.returncode == 0 else [f"resume failed: {resumed.stderr[-1500:]}"]
        summary = json.loads(resumed.stdout) if resumed.returncode == 0 else {}
        problems += check_index(index_dir, snapshot)
        record = {"trial": trial, "kills": kills, "resumed_videos": summary.get("resumed"),
                  "recovered": summary.get("recovered"), "problems": problems,
                  "seconds": round(time.monotonic() - began, 1)}
        records.append(record)
        if log is not None:
            log(record)
    return {"reference": {"startup_s": round(reference["startup_s"], 2), "run_s": round(run_s, 2),
                          "total_s": round(reference["total_s"], 2),
                          "videos": reference["summary"]["videos"], "segments": reference["summary"]["segments"],
                          "failed": reference["summary"]["failed_total"]},
            "trials": records, "workers": workers, "seed": seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--max-kills", type=int, default=2, help="SIGKILLs per trial, drawn from 1..this")
    parser.add_argument("--workers", type=int, default=1, help="decode processes of the build")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, help="keep the indexes here (default: a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="3 trials")
    args = parser.parse_args(argv)
    if args.quick:
        args.trials = 3
    machine = header(f"Crash recovery: {args.trials} trials of kill -9 + resume", args.quick)

    def progress(record: dict[str, Any]) -> None:
        print(f"trial {record['trial']}: {'ok' if not record['problems'] else record['problems']}", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="clover-crash-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        result = run_trials(work, args.trials, args.seed, args.workers, args.max_kills, progress)
    ref = result["reference"]
    trials = result["trials"]
    kills = [kill for trial in trials for kill in trial["kills"]]
    failed = [trial for trial in trials if trial["problems"]]
    emit(f"reference build: {ref['videos']} files ({ref['segments']} segments, {ref['failed']} broken files "
         f"recorded as failed) in {ref['total_s']:.1f} s, of which the run itself (after imports and model load, "
         f"before the process exit) {ref['run_s']:.1f} s; "
         f"{args.workers} decode worker(s), batches of {BATCH} segments.\n")
    emit(table(["trial", "kills", "kill at (s into the run)", "segments committed at each kill",
                "resumed videos", "result"], [
        [t["trial"], len(t["kills"]),
         ", ".join(f"{k['delay_s']:.2f}" + (" (late)" if k["too_late"] else "") for k in t["kills"]),
         ", ".join(str(k["committed"]) for k in t["kills"]), t["resumed_videos"],
         "ok" if not t["problems"] else "; ".join(t["problems"])[:200]] for t in trials], align="lrllrl"))
    emit(f"\n{len(kills)} kills ({sum(k['too_late'] for k in kills)} after the build had finished), "
         f"{sum(0 < k['committed'] < ref['segments'] for k in kills)} of them with the build part-way through its "
         f"segments; {len(trials) - len(failed)}/{len(trials)} trials verified clean and equal to the reference.")
    emit(f"\n**{'PASS' if not failed else 'FAIL'}**")
    write_result("crash_trials", result, args.quick, machine)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
