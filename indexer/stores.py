"""fp16 segment embeddings and video tokens on disk, in shards of one written batch each.

`embeddings/<shard>.npy` holds `[n, D]` and `tokens/<shard>.npy` holds `[n, K, C]` for the same n segments; the
catalog maps a segment id to (shard, row). Shards are immutable once written (atomically), so a reader can
memory-map them while a writer adds more. Deleting a video only drops catalog rows: the rows it leaves in its
shards are garbage until `compact` rewrites the live rows (what `clover index rebuild` does).

Tokens may be pooled over time before storing (`--pool-tokens N`): N = t' * h * w with t' dividing the model's
temporal token count t. The reader expands them back to the model's K by repeating each pooled step, so
re-ranking and QA always receive the token grid the fusion encoder's position embeddings expect.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from indexer.layout import IndexPaths, atomic_write

MAX_OPEN_SHARDS = 256


def pooled_token_count(token_grid: tuple[int, int, int], keep: int | None) -> int:
    """Validate a `--pool-tokens` request; returns K itself when no pooling is asked."""
    t, h, w = token_grid
    total = t * h * w
    if keep is None or keep >= total:
        return total
    spatial = h * w
    if keep <= 0 or keep % spatial or t % (keep // spatial):
        allowed = [spatial * d for d in range(1, t + 1) if t % d == 0]
        raise ValueError(f"--pool-tokens must be one of {allowed} for the token grid {token_grid}")
    return keep


def pool_tokens(tokens: np.ndarray, token_grid: tuple[int, int, int], keep: int) -> np.ndarray:
    """[B, K, C] in (t, h, w) order -> [B, keep, C] by averaging groups of consecutive time steps."""
    t, h, w = token_grid
    steps = keep // (h * w)
    if steps == t:
        return tokens
    batch, _, channels = tokens.shape
    grouped = tokens.reshape(batch, steps, t // steps, h * w, channels).astype(np.float32)
    return grouped.mean(axis=2).reshape(batch, keep, channels).astype(tokens.dtype)


def expand_tokens(tokens: np.ndarray, token_grid: tuple[int, int, int]) -> np.ndarray:
    """[B, N, C] pooled over time -> [B, K, C], each pooled step repeated over the time steps it stands for."""
    t, h, w = token_grid
    batch, stored, channels = tokens.shape
    steps = stored // (h * w)
    if steps == t:
        return tokens
    grouped = tokens.reshape(batch, steps, 1, h * w, channels)
    return np.broadcast_to(grouped, (batch, steps, t // steps, h * w, channels)).reshape(
        batch, t * h * w, channels
    )


class SegmentStore:
    """Write and read shards of fp16 embeddings and tokens."""

    def __init__(self, paths: IndexPaths):
        self.paths = paths
        self._open: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()  # (kind, shard) -> memmap
        self._sequence = itertools.count()
        self._lock = threading.Lock()  # the service reads from several threads

    # ---- writing ---------------------------------------------------------------------------------------

    def new_shard_name(self) -> str:
        """Unique and sortable by creation time, even across processes and restarts."""
        return f"{time.time_ns():020d}-{os.getpid()}-{next(self._sequence)}"

    def write_shard(self, name: str, embeddings: np.ndarray, tokens: np.ndarray) -> int:
        """Durably write one shard (embeddings [n, D], tokens [n, K, C], both fp16); returns the bytes written."""
        if len(embeddings) != len(tokens):
            raise ValueError("embeddings and tokens must have one row per segment")
        for directory, array in ((self.paths.embeddings, embeddings), (self.paths.tokens, tokens)):
            payload = np.ascontiguousarray(array, dtype=np.float16)
            atomic_write(directory / f"{name}.npy", lambda tmp, a=payload: _save_npy(tmp, a))
        return int(embeddings.size + tokens.size) * 2

    def remove_shards(self, names: Sequence[str]) -> None:
        for name in names:
            for kind in ("embeddings", "tokens"):
                with self._lock:
                    self._open.pop((kind, name), None)
                (self.paths.root / kind / f"{name}.npy").unlink(missing_ok=True)

    # ---- reading ---------------------------------------------------------------------------------------

    def shard_names(self) -> set[str]:
        """Shards that have both files on disk (a half-written pair counts as absent)."""
        names = {}
        for kind in ("embeddings", "tokens"):
            directory = self.paths.root / kind
            if directory.is_dir():
                for entry in directory.glob("*.npy"):
                    names[entry.stem] = names.get(entry.stem, 0) + 1
        return {name for name, count in names.items() if count == 2}

    def all_shard_files(self) -> set[str]:
        """Every shard name with at least one file on disk."""
        found = set()
        for kind in ("embeddings", "tokens"):
            directory = self.paths.root / kind
            if directory.is_dir():
                found.update(entry.stem for entry in directory.glob("*.npy"))
        return found

    def read_embeddings(self, locations: Sequence[tuple[str, int]]) -> np.ndarray:
        """fp16 [N, D] for (shard, row) locations, in the order given."""
        return self._gather("embeddings", locations)

    def read_tokens(self, locations: Sequence[tuple[str, int]]) -> np.ndarray:
        """fp16 [N, K, C] (as stored: possibly pooled) for (shard, row) locations, in the order given."""
        return self._gather("tokens", locations)

    def shard_rows(self, name: str) -> int:
        return int(self._memmap("embeddings", name).shape[0])

    def bytes_on_disk(self) -> dict[str, int]:
        sizes = {}
        for kind in ("embeddings", "tokens", "thumbs"):
            directory = self.paths.root / kind
            sizes[kind] = (
                sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
                if directory.is_dir()
                else 0
            )
        return sizes

    def close(self) -> None:
        with self._lock:
            self._open.clear()

    def _gather(self, kind: str, locations: Sequence[tuple[str, int]]) -> np.ndarray:
        if not locations:
            raise ValueError("no segments to read")
        by_shard: dict[str, list[int]] = {}
        for position, (shard, _) in enumerate(locations):
            by_shard.setdefault(shard, []).append(position)
        first = self._memmap(kind, locations[0][0])
        out = np.empty((len(locations), *first.shape[1:]), np.float16)
        for shard, positions in by_shard.items():
            rows = np.array([locations[p][1] for p in positions])
            out[positions] = self._memmap(kind, shard)[rows]
        return out

    def _memmap(self, kind: str, shard: str) -> np.ndarray:
        key = (kind, shard)
        with self._lock:
            array = self._open.get(key)
            if array is None:
                array = np.load(self.paths.root / kind / f"{shard}.npy", mmap_mode="r")
                self._open[key] = array
                if len(self._open) > MAX_OPEN_SHARDS:
                    self._open.popitem(last=False)
            else:
                self._open.move_to_end(key)
            return array


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as handle:  # a handle, because np.save(path) would append ".npy" to the temporary
        np.save(handle, array)
