"""Fixtures for the reliability tests: the service tests' tiny checkpoint and world, and a real server over a copy.

`tiny_checkpoint`, `library` and `world` are the session fixtures of tests/service/conftest.py, imported so the
tiny checkpoint and index are built once per session whichever test directory asks first.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.server import Server, serve
from tests.service.conftest import World, library, tiny_checkpoint, world  # noqa: F401 (fixtures)

ADMIN_KEY = "reliability-admin-key"


@dataclass
class Served:
    server: Server
    index_dir: Path  # the served copy of the world's index
    extra: Path  # an empty library root of this server's own (resolved)

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def serve_copy(world: World, base: Path, prepare: Callable[[Path, Path], None] | None = None,  # noqa: F811
               **env: str) -> Iterator[Served]:
    """A real server over a fresh copy of the world's index, so admin writes never reach other tests.

    Defaults: admin key ADMIN_KEY, library roots = the world's library and an empty `extra` directory, decoding
    in a thread (no worker processes); `env` (CLOVER_* variables) overrides them. `prepare(index_dir, extra)`
    runs before the server starts.
    """
    index_dir = base / "index"
    shutil.copytree(world.index_dir, index_dir)
    extra = (base / "extra").resolve()
    extra.mkdir()
    if prepare is not None:
        prepare(index_dir, extra)
    settings = {"CLOVER_API_KEY": ADMIN_KEY, "CLOVER_LIBRARY_ROOTS": f"{world.library},{extra}",
                "CLOVER_INDEX_WORKERS": "0", **env}
    with serve(index_dir, world.checkpoint, env=settings, log_path=base / "server.log") as server:
        yield Served(server, index_dir, extra)
