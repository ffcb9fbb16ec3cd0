"""Sharded builds: which part of a library one process indexes, and where it writes it.

A library is split into N shards by a stable hash of each file's resolved path, so every process of a
`torchrun` launch (or every machine given `--shard I/N`) computes the same split without talking to the others,
and adding or removing a file never moves any other file to another shard (an incremental `update` of a shard
re-encodes nothing that was already there). Shards are balanced in file count, not in hours of video.

Each shard is a complete index of its own (`clover index build --shard I/N --index DIR` writes
`DIR/shard-III-of-NNN`); `clover index merge DIR/shard-* --into FINAL` (see `indexer.merge`) joins them.
No process group is needed: shards never communicate, so one failed rank costs only its own shard, which the
same command resumes.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str) -> tuple[int, int]:
    """ "I/N" -> (I, N) with 0 <= I < N; ValueError with the reason otherwise."""
    match = _SPEC.match(spec or "")
    if not match:
        raise ValueError(f"shard must be written I/N (e.g. 0/4), not {spec!r}")
    index, count = int(match.group(1)), int(match.group(2))
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {spec!r}: need N >= 1 and 0 <= I < N")
    return index, count


def format_shard(shard: tuple[int, int]) -> str:
    return f"{shard[0]}/{shard[1]}"


def shard_dir_name(shard: tuple[int, int]) -> str:
    """Zero-padded so `DIR/shard-*` lists the shards in order."""
    return f"shard-{shard[0]:03d}-of-{shard[1]:03d}"


def shard_of(path: str, num_shards: int) -> int:
    """The shard a resolved path belongs to: the first 8 bytes of its sha256, modulo N.

    Not Python's `hash()`, which is salted per process: every rank and every later run must agree.
    """
    digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def in_shard(path: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or shard_of(path, shard[1]) == shard[0]


def shard_from_env(environ: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) when launched by torchrun with more than one process, else None."""
    environ = os.environ if environ is None else environ
    if "RANK" not in environ or "WORLD_SIZE" not in environ:
        return None
    world_size = int(environ["WORLD_SIZE"])
    return (int(environ["RANK"]), world_size) if world_size > 1 else None


def local_device(environ: dict[str, str] | None = None) -> str:
    """What `--device auto` means: cuda:LOCAL_RANK under torchrun (one GPU per rank), cuda alone, or cpu."""
    import torch

    environ = os.environ if environ is None else environ
    if not torch.cuda.is_available():
        return "cpu"
    if "LOCAL_RANK" in environ:
        return f"cuda:{int(environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return "cuda"


def shard_index_dir(index_dir: str | Path, shard: tuple[int, int] | None) -> Path:
    """Where a build writes: `index_dir` itself, or its `shard-III-of-NNN` subdirectory for a shard.

    A path that already ends in that name (the shard directory given directly) is used as it is.
    """
    index_dir = Path(index_dir)
    if shard is None or index_dir.name == shard_dir_name(shard):
        return index_dir
    return index_dir / shard_dir_name(shard)
