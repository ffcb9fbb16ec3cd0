"""A real `clover serve` (uvicorn) in a subprocess, for the HTTP benchmark, the soak and the reliability tests.

    with serve(index_dir, checkpoint, env={"CLOVER_API_KEY": "k"}) as server:
        httpx.get(f"{server.url}/search", params={"q": "a red circle"})
        server.rss_mib()  # resident memory of the server process

Settings go in as `CLOVER_*` environment variables (service/core/config.py), exactly as an operator sets them.
The server's log goes to a file, printed (its tail) when the server fails to become ready.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.common import REPO, rss_mib


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def rss_mib(self) -> float:
        return rss_mib(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


@contextmanager
def serve(
    index_dir: str | Path, checkpoint: str | Path, *, env: dict[str, str] | None = None,
    log_path: str | Path | None = None, ready_timeout: float = 180.0, log_level: str = "warning",
) -> Iterator[Server]:
    """Start the server on a free loopback port, wait for /readyz = 200, stop it (SIGTERM, then SIGKILL) after."""
    port = free_port()
    if log_path is None:
        handle, name = tempfile.mkstemp(prefix="clover-serve-", suffix=".log")
        os.close(handle)
        log_path = Path(name)
    log_path = Path(log_path)
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                **(env or {})}
    command = [sys.executable, "-m", "service.serve", "--index", str(index_dir), "--checkpoint", str(checkpoint),
               "--host", "127.0.0.1", "--port", str(port), "--log-level", log_level]
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server, ready_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"the server was not ready after {timeout:.0f} s:\n{server.log_tail()}")
        time.sleep(0.2)
