"""The index directory: where each file lives, `index.json`, atomic writes and the single-writer lock.

```
INDEX/index.json       format version, checkpoint fingerprint, dim, factory, segmenting, counts
INDEX/catalog.sqlite   default catalog (any SQLAlchemy URL may replace it)
INDEX/vectors.faiss    FAISS IndexIDMap2 over segment ids
INDEX/embeddings/      fp16 segment embeddings, one shard per written batch
INDEX/tokens/          fp16 video tokens, same shards
INDEX/thumbs/          one JPEG per segment
INDEX/.writer.lock     flock held by the one process that writes
```

Every file a reader may open is replaced atomically (write a temporary sibling, fsync, `os.replace`), so a reader
sees the old file or the new one, never half of one, and a killed writer leaves only temporaries behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
TEMP_MARKER = (
    ".tmp-"  # temporaries are named "<final name>.tmp-<pid>"; anything with it is garbage after a crash
)


class IndexOpenError(RuntimeError):
    """The directory cannot be used as an index: missing, unreadable, newer format, or another checkpoint."""


@dataclass(frozen=True)
class IndexPaths:
    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "index.json"

    @property
    def default_catalog(self) -> Path:
        return self.root / "catalog.sqlite"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors.faiss"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def tokens(self) -> Path:
        return self.root / "tokens"

    @property
    def thumbs(self) -> Path:
        return self.root / "thumbs"

    @property
    def lock(self) -> Path:
        return self.root / ".writer.lock"

    def default_db_url(self) -> str:
        return f"sqlite:///{self.default_catalog}"

    def create(self) -> None:
        for directory in (self.root, self.embeddings, self.tokens, self.thumbs):
            directory.mkdir(parents=True, exist_ok=True)


@dataclass
class IndexManifest:
    """The contents of index.json. Counts describe vectors.faiss as last written."""

    checkpoint_fingerprint: str
    dim: int  # D of the segment embeddings
    token_shape: tuple[int, int]  # (K, C) of the stored tokens (K after pooling)
    model_token_shape: tuple[
        int, int
    ]  # (K, C) the model produces; the reader expands pooled tokens back to it
    token_grid: tuple[int, int, int]  # (t, h, w) of the model's token grid, K = t * h * w
    num_frames: int  # frames sampled per segment
    image_size: int
    window: float  # segment length in seconds
    stride: float  # seconds between segment starts
    factory: str = "auto"  # what the user asked for: a FAISS factory string, or "auto" (chosen by size)
    built_factory: str = "Flat"  # the factory vectors.faiss was built with
    search_params: str = ""  # FAISS parameter string applied after loading, e.g. "efSearch=128"
    num_vectors: int = 0
    num_videos: int = 0
    num_segments: int = 0
    num_failed: int = 0
    catalog: str = "catalog.sqlite"  # "catalog.sqlite" or a DB URL with any password masked
    libraries: list[str] = field(default_factory=list)  # directories / manifests that `update` rescans
    library_shard: str = ""  # "I/N": this index holds one part of a sharded build (indexer.shard); "" = all
    format_version: int = FORMAT_VERSION
    updated_at: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexManifest:
        version = int(data.get("format_version", 0))
        if version > FORMAT_VERSION:
            raise IndexOpenError(
                f"index format {version} is newer than this code understands ({FORMAT_VERSION})"
            )
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("token_shape", "model_token_shape", "token_grid"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)


def read_manifest(paths: IndexPaths) -> IndexManifest | None:
    if not paths.manifest.is_file():
        return None
    try:
        return IndexManifest.from_dict(json.loads(paths.manifest.read_text()))
    except (ValueError, TypeError) as error:
        raise IndexOpenError(f"{paths.manifest} is unreadable: {error}") from error


def write_manifest(paths: IndexPaths, manifest: IndexManifest) -> None:
    manifest.updated_at = time.time()
    atomic_write_bytes(paths.manifest, manifest.to_json().encode())


def temp_path(final: Path) -> Path:
    return final.with_name(f"{final.name}{TEMP_MARKER}{os.getpid()}")


def atomic_write(final: Path, write: Callable[[Path], Any], durable: bool = True) -> None:
    """Call `write(temporary)` then rename over `final`; with `durable`, fsync the file and its directory."""
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = temp_path(final)
    try:
        write(temporary)
        if durable:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, final)
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
    if durable:
        fsync_directory(final.parent)


def atomic_write_bytes(final: Path, payload: bytes, durable: bool = True) -> None:
    atomic_write(final, lambda tmp: tmp.write_bytes(payload), durable=durable)


def fsync_directory(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse directory fsync; the rename is still atomic
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def remove_temporaries(paths: IndexPaths) -> int:
    """Delete temporaries a killed writer left behind (only ever called while holding the writer lock)."""
    removed = 0
    for directory in (paths.root, paths.embeddings, paths.tokens):
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            if TEMP_MARKER in entry.name:
                entry.unlink(missing_ok=True)
                removed += 1
    if paths.thumbs.is_dir():
        for entry in paths.thumbs.rglob(f"*{TEMP_MARKER}*"):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


@contextlib.contextmanager
def writer_lock(paths: IndexPaths, timeout: float = 3600.0) -> Iterator[None]:
    """One writer per index directory (CLI build, service admin job, ...); readers never take it.

    An flock dies with its process, so a writer killed with -9 never leaves a stale lock.
    """
    paths.root.mkdir(parents=True, exist_ok=True)
    with open(paths.lock, "a+") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise IndexOpenError(f"another process is writing {paths.root}") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def mask_db_url(url: str) -> str:
    """A DB URL safe to write into index.json: the password replaced by ***."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy understands: do not risk writing it
        return "<unparseable db url>"


def resolve_db_url(paths: IndexPaths, manifest: IndexManifest | None, db_url: str | None) -> str:
    if db_url:
        return db_url
    if manifest is None or manifest.catalog in ("", "catalog.sqlite"):
        return paths.default_db_url()
    if "***" in manifest.catalog or manifest.catalog.startswith("<"):
        raise IndexOpenError(f"this index's catalog is at {manifest.catalog}: pass its URL (--db / db_url)")
    return manifest.catalog
