"""Which files the service may index or serve.

A path is allowed only when its real path (symlinks followed) lies inside one of the allowed roots, which are
themselves resolved. Checking the resolved path, not the string, is what defeats `..`, symlinks that point out
of a root, and absolute paths elsewhere; `..` is still refused outright so a request never even probes outside.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from service.core.errors import BadRequest, Forbidden, NotFound

# Containers the decoders (decord / PyAV) read; anything else is not worth handing to the indexer.
VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".wmv"})


def is_within(path: Path, roots: Iterable[Path]) -> bool:
    """True when the already-resolved `path` is one of `roots` or lies beneath one."""
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_request_path(raw: str, roots: list[Path]) -> Path:
    """Resolve a client-given path (absolute, or relative to a root) to a real path inside a root.

    Raises BadRequest for malformed paths, Forbidden for paths outside every root, NotFound when it is inside
    a root but does not exist.
    """
    if not roots:
        raise Forbidden("no library roots are configured (set CLOVER_LIBRARY_ROOTS or --library-root)")
    text = raw.strip()
    if not text or "\x00" in text:
        raise BadRequest("path must be a non-empty string without NUL bytes")
    given = Path(text)
    if ".." in given.parts:
        raise BadRequest("path must not contain '..'")
    if given.is_absolute():
        real = Path(os.path.realpath(given))
        if not is_within(real, roots):
            raise Forbidden(f"path {text!r} is outside the allowed library roots")
        if real.exists():
            return real
    else:
        for root in roots:
            candidate = root / given
            if not os.path.lexists(candidate):
                continue
            real = Path(os.path.realpath(candidate))
            if not is_within(real, roots):  # a symlink inside the root that points out of it
                raise Forbidden(f"path {text!r} resolves outside the allowed library roots")
            if real.exists():
                return real
    raise NotFound(f"path {text!r} does not exist under the library roots")


def video_files_under(path: Path, roots: list[Path]) -> list[Path]:
    """The video files a resolved path stands for: itself, or every video file below a directory.

    Each file is resolved again, so a symlink inside an allowed directory that points out of the roots is
    skipped rather than indexed.
    """
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTENSIONS:
            raise BadRequest(f"{path.name!r} is not a video file (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
        return [path]
    files = sorted({real for real in _walk_videos(path) if is_within(real, roots)})
    if not files:
        raise BadRequest(f"no video files found under {str(path)!r}")
    return files


def _walk_videos(directory: Path) -> Iterator[Path]:
    for dirpath, _dirnames, filenames in os.walk(directory, followlinks=False):
        for name in filenames:
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                real = Path(os.path.realpath(os.path.join(dirpath, name)))
                if real.is_file():
                    yield real


def servable_file(path: str | os.PathLike[str], roots: list[Path], what: str = "video file") -> Path:
    """Resolve a path read from the catalog for serving; refuse it unless it lies inside a root."""
    real = Path(os.path.realpath(path))
    if not is_within(real, roots):
        raise Forbidden(f"the {what} lies outside the allowed roots and is not served")
    if not real.is_file():
        raise NotFound(f"the {what} is missing on disk")
    return real


def safe_upload_name(filename: str | None) -> str:
    """A file name for an upload: the base name only, odd characters replaced, a video extension required."""
    base = Path((filename or "").replace("\\", "/")).name
    stem, suffix = os.path.splitext(base)
    if suffix.lower() not in VIDEO_EXTENSIONS:
        raise BadRequest(f"upload must be a video file (extensions: {', '.join(sorted(VIDEO_EXTENSIONS))})")
    clean = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem).strip("._") or "upload"
    return f"{clean[:100]}{suffix.lower()}"
