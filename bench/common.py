"""What every benchmark script shares: the machine it ran on, markdown output, JSON results, latency statistics
and memory readings.

Each script prints markdown (a `##` title, the exact command, the date and the machine, then tables) and writes
one small JSON file under `bench/results/` (`NAME.json`, or `NAME-quick.json` for a `--quick` smoke run, so a
smoke run never overwrites the figures of a full one).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"


# ---------------------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def gpu_names() -> list[str]:
    """Names of the visible CUDA devices (torch when it is already imported, else nvidia-smi); [] without one."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        return []
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def machine_info() -> dict[str, Any]:
    """CPU model, cores (all, and usable by this process), RAM, GPUs, and the versions that matter."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_gib": _ram_gib(),
        "gpus": gpu_names(),
        "python": platform.python_version(),
    }
    for module in ("torch", "faiss"):
        if module in sys.modules:
            info[module] = getattr(sys.modules[module], "__version__", "?")
    return info


def machine_line(info: dict[str, Any]) -> str:
    gpus = ", ".join(info["gpus"]) if info["gpus"] else "no GPU"
    versions = ", ".join(f"{m} {info[m]}" for m in ("torch", "faiss") if m in info)
    return (f"{info['cpu']}, {info['usable_cores']}/{info['cores']} cores usable, {info['ram_gib']} GiB RAM, "
            f"{gpus}; Python {info['python']}" + (f", {versions}" if versions else ""))


def command_line() -> str:
    """How this script was run, as a person would type it from the repository root."""
    script = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        script = script.resolve().relative_to(REPO)
    return shlex.join(["python", str(script), *sys.argv[1:]])


def now_utc() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------------------------------------- output


def emit(text: str = "") -> None:
    """Print at once: a long benchmark shows its tables as they are measured."""
    print(text, flush=True)


def header(title: str, quick: bool) -> dict[str, Any]:
    """Print the title, command, date and machine; returns the machine info for the JSON result."""
    info = machine_info()
    emit(f"## {title}" + (" (QUICK MODE: smoke-run sizes, not reference figures)" if quick else ""))
    emit()
    emit(f"- command: `{command_line()}`")
    emit(f"- date: {now_utc()}")
    emit(f"- machine: {machine_line(info)}")
    emit()
    return info


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str | None = None) -> str:
    """A markdown table; `align` is one letter per column, l or r (default: first column left, others right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_result(name: str, payload: dict[str, Any], quick: bool, machine: dict[str, Any]) -> Path:
    """bench/results/NAME[-quick].json with the command, date and machine next to the figures."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"
    record = {"benchmark": name, "quick": quick, "command": command_line(), "date": now_utc(),
              "machine": machine, **payload}
    path.write_text(json.dumps(record, indent=1, default=_jsonable) + "\n")
    emit(f"\n_results: `{path.relative_to(REPO)}`_")
    return path


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------- statistics


def latency_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p90 / p99 / mean in milliseconds (rounded: these go into tables and small JSON files)."""
    if not len(seconds):
        return {"n": 0}
    values = np.asarray(seconds, dtype=np.float64) * 1000
    return {
        "n": int(len(values)),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p90_ms": round(float(np.percentile(values, 90)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
    }


def median(values: Sequence[float]) -> float:
    return float(np.median(np.asarray(values, dtype=np.float64)))


# ---------------------------------------------------------------------------------------------- memory


def rss_mib(pid: int | None = None) -> float:
    """Resident memory of a process (this one by default), from /proc."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int | None = None) -> float:
    """High-water resident memory since the process started or since `reset_peak_rss`."""
    return _status_kib(pid, "VmHWM") / 1024


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM (Linux: write 5 to clear_refs), so the next peak belongs to the next phase.

    Returns False where the kernel refuses; the peak then covers the whole process life (say so in the table).
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _status_kib(pid: int | None, field: str) -> float:
    path = Path(f"/proc/{pid or 'self'}/status")
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return float(line.split()[1])
    return float("nan")


def fmt_bytes(count: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(count) >= size:
            return f"{count / size:.1f} {unit}"
    return f"{count:.0f} B"
