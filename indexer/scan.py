"""Find the videos to index: directories (recursively), single files, and JSONL/CSV manifests.

A manifest row names a `path` (relative paths are relative to the manifest), optionally a `title` and a
`metadata` object (JSON; in CSV a JSON string, or any other columns). Files are identified by their resolved
absolute path; whether a known file changed is decided by size + mtime first (free) and, when those differ, by a
content fingerprint, so a `touch` or a copy that keeps the bytes does not cost a re-encode.

Only regular files whose path is valid UTF-8 are kept. Anything else the scan meets is a problem reported with a
reason, never an exception and never a catalog row: a path that does not exist, a symlink loop, a named pipe,
socket or device (opening a pipe to fingerprint it would block the build forever), and a name that is not UTF-8
(the catalog stores paths as text, and any escaped stand-in would name no file, or another one).
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VIDEO_EXTENSIONS = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
    }
)
MANIFEST_EXTENSIONS = frozenset({".jsonl", ".csv"})
EDGE_BYTES = 1 << 20  # quick fingerprint: first and last MiB, plus the size


class ManifestError(ValueError):
    """A manifest that cannot be read (bad JSON line, missing `path` column)."""


@dataclass(frozen=True)
class SourceFile:
    """One video to index as the scan found it (stat only; the bytes are read when fingerprinted)."""

    path: str  # absolute, resolved
    size: int
    mtime_ns: int
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def scan_library(sources: Iterable[str | os.PathLike]) -> tuple[list[SourceFile], list[tuple[str, str]]]:
    """(files found, problems) for directories, video files and manifests; each path appears once.

    A path that does not exist, a symlink loop, a named pipe or a name that is not UTF-8 is a problem (path as
    `printable_path` writes it, reason), not an exception, so one odd entry does not stop a library build.
    Files named explicitly (or in a manifest) are kept whatever their extension: the decoder decides.
    """
    found: dict[str, SourceFile] = {}
    problems: list[tuple[str, str]] = []
    for source in sources:
        source_path = Path(source).expanduser()
        if source_path.is_dir():
            for file_path in _walk_videos(source_path):
                _add(found, problems, file_path)
        elif source_path.is_file() and source_path.suffix.lower() in MANIFEST_EXTENSIONS:
            for row_path, title, metadata in read_manifest(source_path):
                _add(found, problems, row_path, title, metadata)
        elif source_path.exists() or source_path.is_symlink():
            _add(found, problems, source_path)
        else:
            problems.append((printable_path(str(source_path)), "file not found"))
    return sorted(found.values(), key=lambda f: f.path), list(dict.fromkeys(problems))  # each problem once


def _walk_videos(root: Path) -> Iterable[Path]:
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                yield Path(directory) / name


def _add(
    found: dict[str, SourceFile],
    problems: list[tuple[str, str]],
    path: Path,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    try:
        resolved = str(Path(path).resolve())
    except RuntimeError:  # Python < 3.13 raises this for a symlink loop; 3.13 leaves it to the stat below
        problems.append((printable_path(os.path.abspath(path)), "symlink loop"))
        return
    try:
        stat_result = os.stat(resolved)
    except FileNotFoundError:
        problems.append((printable_path(resolved), "file not found"))
        return
    except OSError as error:
        reason = "symlink loop" if error.errno == errno.ELOOP else f"cannot stat file: {error.strerror or error}"
        problems.append((printable_path(resolved), reason))
        return
    if not stat.S_ISREG(stat_result.st_mode):
        problems.append((printable_path(resolved), f"not a regular file ({_file_kind(stat_result.st_mode)})"))
        return
    if not _is_utf8(resolved):
        problems.append((printable_path(resolved), "path is not valid UTF-8 (rename the file to index it)"))
        return
    previous = found.get(resolved)
    if previous is not None and title is None and not metadata:
        return  # a directory walk must not erase a manifest's title
    found[resolved] = SourceFile(
        resolved, stat_result.st_size, stat_result.st_mtime_ns, title, dict(metadata or {})
    )


def printable_path(path: str) -> str:
    """`path` as text every encoder accepts: bytes of a name that are not UTF-8 become `\\xNN` escapes.

    Names that are not UTF-8 reach Python as lone surrogates (PEP 383), which a UTF-8 database or JSON response
    refuses; this is the form used to *report* such a path (it cannot be opened: use the original for that).
    """
    try:
        raw = os.fsencode(path)
    except UnicodeEncodeError:  # a surrogate that no file name produced (e.g. "\\udcff" written in JSON)
        return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def _is_utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "directory"),
        (stat.S_ISFIFO, "named pipe"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
    ):
        if test(mode):
            return kind
    return "special file"


def read_manifest(path: Path) -> list[tuple[Path, str | None, dict[str, Any]]]:
    """Rows of (path, title, metadata) from a JSONL or CSV manifest."""
    base = path.parent
    rows: list[tuple[Path, str | None, dict[str, Any]]] = []
    if path.suffix.lower() == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ManifestError(f"{path}:{line_number}: {error.msg}") from None
                rows.append(_manifest_row(base, record, f"{path}:{line_number}"))
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise ManifestError(f"{path}: CSV manifest needs a 'path' column")
            for line_number, record in enumerate(reader, 2):
                rows.append(_manifest_row(base, dict(record), f"{path}:{line_number}"))
    return rows


def _manifest_row(base: Path, record: Any, where: str) -> tuple[Path, str | None, dict[str, Any]]:
    if not isinstance(record, dict) or not record.get("path"):
        raise ManifestError(f"{where}: a manifest row needs a 'path'")
    path = Path(str(record.pop("path"))).expanduser()
    title = record.pop("title", None) or None
    if isinstance(title, str):  # JSON can spell lone surrogates ("\\udcff"), which a UTF-8 catalog refuses
        title = title.encode("utf-8", "backslashreplace").decode("utf-8")
    metadata = record.pop("metadata", None)
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata) if metadata.strip() else {}
        except json.JSONDecodeError:
            raise ManifestError(f"{where}: 'metadata' is not JSON") from None
    metadata = dict(metadata or {})
    metadata.update({key: value for key, value in record.items() if value not in (None, "")})
    return (path if path.is_absolute() else base / path), title, metadata


def content_fingerprint(path: str, size: int, full: bool = False) -> str:
    """sha256 over the size and the first and last MiB (or every byte with `full`), as hex.

    The quick form reads 2 MiB whatever the file size, and still changes when a file is re-encoded, cut or
    appended to (the size or the tail moves); `full` is for libraries where files are edited in place.
    """
    digest = hashlib.sha256(str(size).encode())
    # O_NONBLOCK: a path swapped for a named pipe since the scan must fail here, not wait for a writer forever.
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        handle = os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
    with handle:
        if full or size <= 2 * EDGE_BYTES:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
            return ("full:" if full else "quick:") + digest.hexdigest()
        digest.update(handle.read(EDGE_BYTES))
        handle.seek(size - EDGE_BYTES)
        digest.update(handle.read(EDGE_BYTES))
    return "quick:" + digest.hexdigest()
