"""`clover index merge`: join the shards of a sharded build (or any indexes of one checkpoint) into one index.

Sources are read, never changed (each is locked against writers while it is read). Into the target go:

- runs: every source run, re-numbered, with `merged_from`, `source_run_id` and `source_started_at` added to its
  options (so a second merge recognises and skips it), plus one `merge` run for this command;
- videos: re-numbered in path order (the order one unsharded build would have numbered them), failed ones with
  their reasons; their segments get fresh ids from the target catalog, their embeddings and tokens are copied
  bit for bit into new store shards and their thumbnails renamed after the new video ids;
- FAISS: built from the merged embeddings by `sync_vectors`, with `--factory` or the default for the merged
  size (trained and filled on the GPU when faiss-gpu sees one); index.json last, atomically.

Idempotent, like `update`: a video whose path is already in the target with the same content fingerprint,
status and description is skipped; one that differs (its shard re-encoded a changed file, or a killed merge
left it pending) is replaced. Videos the target has and no source has are kept unless `prune` (what a shard's
`update --prune` dropped). The crash-safety argument is the writer's: a video is inserted `pending`, becomes
`indexed` in the transaction of its last segment, and a kill leaves only pending videos and orphan files,
which the next merge replaces and removes.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select, update

from indexer.catalog import STATUS_INDEXED, STATUS_PENDING, Catalog, Run, Segment, Video, utcnow
from indexer.layout import (
    IndexManifest,
    IndexOpenError,
    IndexPaths,
    atomic_write,
    mask_db_url,
    read_manifest,
    resolve_db_url,
    write_manifest,
    writer_lock,
)
from indexer.maintenance import delete_video_rows, recover, sync_vectors
from indexer.shard import format_shard, parse_shard
from indexer.stores import SegmentStore
from indexer.vectors import validate_factory
from indexer.writer import thumbnail_relpath

# What must be equal for segments of two indexes to live in one: same encoder, same cutting, same storage.
SAME_GEOMETRY = (
    "dim",
    "token_shape",
    "model_token_shape",
    "token_grid",
    "num_frames",
    "image_size",
    "window",
    "stride",
)
# Video columns that decide whether the target's copy of a path is already the source's (ids, times and the
# run are the target's own).
SIGNATURE = ("fingerprint", "status", "error", "num_segments", "title", "extra", "size_bytes", "mtime_ns")
COPIED_COLUMNS = tuple(
    attribute.key
    for attribute in Video.__mapper__.column_attrs
    if attribute.key not in ("id", "run_id", "status", "num_segments", "indexed_at", "updated_at")
)
SHARD_BYTES = 256 << 20  # target store shard size: bounds memory, whatever the token size
SOURCE_LOCK_SECONDS = 10.0  # a source still being built is an error, not an hour's wait
VIDEO_CHUNK = 500  # video ids per catalog query (SQLite's bound-parameter limit)
INSERT_CHUNK = 10_000  # videos per insert transaction


class MergeError(IndexOpenError):
    """Indexes that cannot be merged: another checkpoint or segmenting, overlapping or unfinished shards."""


@dataclass
class _Source:
    number: int
    paths: IndexPaths
    manifest: IndexManifest
    catalog: Catalog
    store: SegmentStore


@dataclass
class _Copy:
    """One source video to be copied, and its id in the target once inserted."""

    source: _Source
    video: dict[str, Any]
    target_id: int = 0


def merge_indexes(
    sources: Sequence[str | Path],
    into: str | Path,
    factory: str | None = None,
    db_url: str | None = None,
    prune: bool = False,
    use_gpu: bool | None = None,
) -> dict[str, Any]:
    """Merge the indexes in `sources` into `into` (created if needed); returns a summary dict."""
    began = time.perf_counter()
    source_dirs = _distinct_dirs(sources, Path(into))
    manifests = [_source_manifest(directory) for directory in source_dirs]
    reference = manifests[0]
    for directory, manifest in zip(source_dirs, manifests, strict=True):
        _check_compatible(reference, manifest, f"{source_dirs[0]}", f"{directory}")
    shards, missing = _check_library_shards(source_dirs, manifests)
    if factory:
        validate_factory(factory, reference.dim)  # before any work
    target = IndexPaths(Path(into))
    with ExitStack() as stack:
        opened = []
        for number, (directory, manifest) in enumerate(zip(source_dirs, manifests, strict=True)):
            paths = IndexPaths(directory)
            stack.enter_context(writer_lock(paths, timeout=SOURCE_LOCK_SECONDS))
            catalog = Catalog(resolve_db_url(paths, manifest, None), create=False)
            stack.callback(catalog.dispose)
            opened.append(_Source(number, paths, manifest, catalog, SegmentStore(paths)))
        source_videos = _source_videos(
            opened
        )  # refuses unfinished or overlapping sources, still writing nothing
        target.create()
        stack.enter_context(writer_lock(target))
        manifest = _target_manifest(target, reference, manifests, factory, db_url)
        catalog = Catalog(resolve_db_url(target, manifest, db_url))
        stack.callback(catalog.dispose)
        # From here on the directory is an index, even if the merge is killed.
        write_manifest(target, manifest)
        summary = _merge(opened, source_videos, target, manifest, catalog, factory, prune, use_gpu)
    summary.update(
        sources=[str(d) for d in source_dirs],
        library_shards=shards,
        missing_shards=missing,
        seconds=round(time.perf_counter() - began, 3),
    )
    return summary


def _merge(
    sources: list[_Source],
    source_videos: list[tuple[_Source, dict[str, Any]]],
    target: IndexPaths,
    manifest: IndexManifest,
    catalog: Catalog,
    factory: str | None,
    prune: bool,
    use_gpu: bool | None,
) -> dict[str, Any]:
    store = SegmentStore(target)
    recover(target, catalog, store)
    with catalog.session() as session:
        options = {"sources": [str(s.paths.root) for s in sources], "factory": factory, "prune": prune}
        merge_run = Run(
            command="merge", checkpoint_fingerprint=manifest.checkpoint_fingerprint, options=options
        )
        session.add(merge_run)
        session.flush()
        merge_run_id = int(merge_run.id)
    run_ids, runs_copied = _copy_runs(sources, catalog)

    with catalog.session() as session:
        existing = {v.path: v for v in session.scalars(select(Video)).all()}
    copies, replaced_ids, unchanged = [], [], 0
    for source, video in source_videos:
        known = existing.get(video["path"])
        if known is not None and all(getattr(known, name) == video[name] for name in SIGNATURE):
            unchanged += 1
            continue
        if known is not None:
            replaced_ids.append(int(known.id))
        copies.append(_Copy(source, video))
    wanted = {video["path"] for _, video in source_videos}
    pruned_ids = [int(v.id) for path, v in existing.items() if path not in wanted] if prune else []
    doomed = replaced_ids + pruned_ids
    for begin in range(0, len(doomed), VIDEO_CHUNK):
        delete_video_rows(target, catalog, doomed[begin : begin + VIDEO_CHUNK])

    _insert_videos(catalog, copies, run_ids)
    segments_copied = _copy_segments(target, catalog, store, copies)

    synced = sync_vectors(target, catalog, store, manifest, factory=factory, use_gpu=use_gpu)
    counts = catalog.counts()
    summary = {
        "index_dir": str(target.root),
        "command": "merge",
        "run_id": merge_run_id,
        "videos_added": len(copies) - len(replaced_ids),
        "videos_replaced": len(replaced_ids),
        "videos_unchanged": unchanged,
        "videos_pruned": len(pruned_ids),
        "segments_copied": segments_copied,
        "runs_copied": runs_copied,
        "videos": counts["videos"],
        "segments": counts["segments"],
        "failed_total": counts["failed"],
        "pending": counts["pending"],
        "vectors": synced["vectors"],
        "factory": synced["factory"],
        "faiss_mode": synced["mode"],
    }
    with catalog.session() as session:
        run = session.get(Run, merge_run_id)
        run.status, run.finished_at, run.summary = "finished", utcnow(), dict(summary)
    return summary


# ---------------------------------------------------------------------------------------------- checks


def _distinct_dirs(sources: Sequence[str | Path], into: Path) -> list[Path]:
    if not sources:
        raise MergeError("name at least one index to merge")
    resolved = [Path(s).expanduser().resolve() for s in sources]
    if len(set(resolved)) != len(resolved):
        raise MergeError("an index is named twice among the sources")
    if into.expanduser().resolve() in resolved:
        raise MergeError(f"{into} is one of the sources: merge into another directory")
    return resolved


def _source_manifest(directory: Path) -> IndexManifest:
    manifest = read_manifest(IndexPaths(directory))
    if manifest is None:
        raise MergeError(f"{directory} is not an index (no index.json)")
    return manifest


def _check_compatible(
    reference: IndexManifest, other: IndexManifest, reference_dir: str, other_dir: str
) -> None:
    if other.checkpoint_fingerprint != reference.checkpoint_fingerprint:
        raise MergeError(
            f"{other_dir} was encoded with checkpoint {other.checkpoint_fingerprint[:12]}, {reference_dir} with "
            f"{reference.checkpoint_fingerprint[:12]}: only indexes of one checkpoint can be merged"
        )
    for name in SAME_GEOMETRY:
        if getattr(other, name) != getattr(reference, name):
            raise MergeError(
                f"{other_dir} has {name} {getattr(other, name)}, {reference_dir} has {getattr(reference, name)}: "
                "segments of one index must be cut and stored alike"
            )


def _check_library_shards(dirs: list[Path], manifests: list[IndexManifest]) -> tuple[list[str], list[str]]:
    """The shard labels of the sources, and those of their split that are not among them (not an error: a
    later merge with the rest adds them). Two sources of one shard, or shards of two splits, are errors."""
    labels = [m.library_shard for m in manifests if m.library_shard]
    seen: dict[str, Path] = {}
    for directory, manifest in zip(dirs, manifests, strict=True):
        if manifest.library_shard in seen:
            raise MergeError(
                f"{seen[manifest.library_shard]} and {directory} are both shard {manifest.library_shard}"
            )
        if manifest.library_shard:
            seen[manifest.library_shard] = directory
    counts = {parse_shard(label)[1] for label in labels}
    if len(counts) > 1:
        raise MergeError(
            f"shards of different splits ({', '.join(sorted(labels))}): merge one split at a time"
        )
    if not counts:
        return [], []
    count = counts.pop()
    missing = [format_shard((i, count)) for i in range(count) if format_shard((i, count)) not in seen]
    return sorted(labels, key=lambda label: parse_shard(label)[0]), missing


def _target_manifest(
    target: IndexPaths,
    reference: IndexManifest,
    sources: list[IndexManifest],
    factory: str | None,
    db_url: str | None,
) -> IndexManifest:
    manifest = read_manifest(target)
    if manifest is None:
        manifest = IndexManifest(
            **{name: getattr(reference, name) for name in ("checkpoint_fingerprint", *SAME_GEOMETRY)},
            factory=factory or "auto",
            catalog=mask_db_url(db_url) if db_url else "catalog.sqlite",
        )
    else:
        if manifest.library_shard:
            raise MergeError(
                f"{target.root} is shard {manifest.library_shard} of a build: merge into another directory"
            )
        _check_compatible(manifest, reference, str(target.root), "the sources")
        if factory:
            manifest.factory = factory
    for source in sources:  # `update` of the merged index rescans every shard's libraries, in one process
        manifest.libraries.extend(lib for lib in source.libraries if lib not in manifest.libraries)
    return manifest


# ---------------------------------------------------------------------------------------------- copying


def _copy_runs(sources: list[_Source], catalog: Catalog) -> tuple[dict[tuple[int, int], int], int]:
    """Copy every source run not copied before; returns ((source number, source run id) -> target id, copied)."""
    with catalog.session() as session:
        known = {}
        for run_id, options in session.execute(select(Run.id, Run.options)).all():
            options = options or {}
            if "merged_from" in options:
                key = (options["merged_from"], options.get("source_run_id"), options.get("source_started_at"))
                known[key] = int(run_id)
    mapping, copied = {}, 0
    for source in sources:
        with source.catalog.session() as session:
            runs = session.scalars(select(Run).order_by(Run.id)).all()
        with catalog.session() as session:
            for run in runs:
                started = run.started_at.isoformat() if run.started_at else None
                key = (str(source.paths.root), int(run.id), started)
                if key in known:
                    mapping[(source.number, int(run.id))] = known[key]
                    continue
                options = {
                    **(run.options or {}),
                    "merged_from": key[0],
                    "source_run_id": key[1],
                    "source_started_at": key[2],
                }
                row = Run(
                    command=run.command,
                    status="interrupted" if run.status == "running" else run.status,
                    started_at=run.started_at,
                    finished_at=run.finished_at,
                    checkpoint_fingerprint=run.checkpoint_fingerprint,
                    options=options,
                    summary=run.summary,
                )
                session.add(row)
                session.flush()
                mapping[(source.number, int(run.id))] = int(row.id)
                copied += 1
    return mapping, copied


def _source_videos(sources: list[_Source]) -> list[tuple[_Source, dict[str, Any]]]:
    """Every source video as a dict of its columns, in path order; refuses unfinished or overlapping sources."""
    found: list[tuple[_Source, dict[str, Any]]] = []
    owner: dict[str, Path] = {}
    for source in sources:
        with source.catalog.session() as session:
            videos = session.scalars(select(Video)).all()
            pending = sum(1 for v in videos if v.status == STATUS_PENDING)
            if pending:
                raise MergeError(
                    f"{source.paths.root} has {pending} pending videos (its build was interrupted or is running): "
                    "run the same build again to finish it, then merge"
                )
            for video in videos:
                if video.path in owner:
                    raise MergeError(f"{video.path} is in both {owner[video.path]} and {source.paths.root}")
                owner[video.path] = source.paths.root
                row = {name: getattr(video, name) for name in (*COPIED_COLUMNS, *SIGNATURE, "id", "run_id")}
                row["indexed_at"] = video.indexed_at
                found.append((source, row))
    return sorted(found, key=lambda item: item[1]["path"])


def _insert_videos(catalog: Catalog, copies: list[_Copy], run_ids: dict[tuple[int, int], int]) -> None:
    """Insert the copied videos with fresh ids (in path order): failed ones as they are, indexed ones pending
    until their segments are copied."""
    for begin in range(0, len(copies), INSERT_CHUNK):
        _insert_chunk(catalog, copies[begin : begin + INSERT_CHUNK], run_ids)


def _insert_chunk(catalog: Catalog, copies: list[_Copy], run_ids: dict[tuple[int, int], int]) -> None:
    with catalog.session() as session:
        rows = []
        for copy in copies:
            video = copy.video
            empty = video["status"] != STATUS_INDEXED or video["num_segments"] == 0
            row = Video(
                **{name: video[name] for name in COPIED_COLUMNS},
                status=video["status"] if empty else STATUS_PENDING,
                num_segments=video["num_segments"] if empty else 0,
                indexed_at=video["indexed_at"] if empty else None,
                run_id=run_ids.get((copy.source.number, video["run_id"])),
            )
            session.add(row)
            rows.append(row)
        session.flush()
        for copy, row in zip(copies, rows, strict=True):
            copy.target_id = int(row.id)


def _copy_segments(target: IndexPaths, catalog: Catalog, store: SegmentStore, copies: list[_Copy]) -> int:
    """Copy segments in path order into target shards of about SHARD_BYTES; returns how many were copied."""
    to_copy = [c for c in copies if c.video["status"] == STATUS_INDEXED and c.video["num_segments"]]
    if not to_copy:
        return 0
    manifest = to_copy[0].source.manifest
    row_bytes = 2 * (manifest.dim + int(np.prod(manifest.token_shape)))  # fp16 embedding + tokens
    rows_per_shard = max(1, SHARD_BYTES // row_bytes)
    committed = {c.target_id: 0 for c in to_copy}
    batch: list[tuple[_Copy, Any]] = []
    copied = 0
    for item in _source_segments(to_copy):
        batch.append(item)
        if len(batch) >= rows_per_shard:
            copied += _write_batch(target, catalog, store, batch, committed)
            batch = []
    if batch:
        copied += _write_batch(target, catalog, store, batch, committed)
    incomplete = [c.video["path"] for c in to_copy if committed[c.target_id] != c.video["num_segments"]]
    if incomplete:
        raise MergeError(
            f"{len(incomplete)} indexed videos lack segments in their source (e.g. {incomplete[0]}): "
            "run `clover index verify --repair` and `update` on that shard, then merge again"
        )
    return copied


def _source_segments(copies: list[_Copy]) -> Iterator[tuple[_Copy, Any]]:
    """(copy, segment row) for every segment of `copies`, in their order then by ordinal; a chunk at a time."""
    for begin in range(0, len(copies), VIDEO_CHUNK):
        chunk = copies[begin : begin + VIDEO_CHUNK]
        by_source: dict[int, list[_Copy]] = {}
        for copy in chunk:
            by_source.setdefault(copy.source.number, []).append(copy)
        segments: dict[tuple[int, int], list[Any]] = {}
        for number, group in by_source.items():
            with group[0].source.catalog.session() as session:
                rows = session.execute(
                    select(
                        Segment.video_id,
                        Segment.ordinal,
                        Segment.start,
                        Segment.end,
                        Segment.shard,
                        Segment.row,
                        Segment.thumbnail,
                    )
                    .where(Segment.video_id.in_([c.video["id"] for c in group]))
                    .order_by(Segment.video_id, Segment.ordinal)
                ).all()
            for row in rows:
                segments.setdefault((number, int(row.video_id)), []).append(row)
        for copy in chunk:
            for row in segments.get((copy.source.number, copy.video["id"]), []):
                yield copy, row


def _write_batch(
    target: IndexPaths, catalog: Catalog, store: SegmentStore, batch: list[tuple[_Copy, Any]], committed: dict
) -> int:
    """Thumbnails, then one durable shard, then one transaction: the writer's order, for the same reasons."""
    thumbnails = []
    for copy, row in batch:
        relpath = None
        source_thumb = copy.source.paths.root / row.thumbnail if row.thumbnail else None
        if source_thumb is not None and source_thumb.is_file():
            relpath = thumbnail_relpath(copy.target_id, row.ordinal)
            atomic_write(
                target.root / relpath, lambda tmp, src=source_thumb: shutil.copyfile(src, tmp), durable=False
            )
        thumbnails.append(relpath)
    embeddings = _gather(batch, "read_embeddings")  # [n, D] fp16
    tokens = _gather(batch, "read_tokens")  # [n, K, C] fp16, as stored (possibly pooled)
    shard = store.new_shard_name()
    store.write_shard(shard, embeddings, tokens)
    with catalog.session() as session:
        for position, ((copy, row), thumbnail) in enumerate(zip(batch, thumbnails, strict=True)):
            session.add(
                Segment(
                    video_id=copy.target_id,
                    ordinal=row.ordinal,
                    start=row.start,
                    end=row.end,
                    shard=shard,
                    row=position,
                    thumbnail=thumbnail,
                )
            )
            committed[copy.target_id] += 1
        done = {
            copy.target_id: copy
            for copy, _ in batch
            if committed[copy.target_id] == copy.video["num_segments"]
        }
        for target_id, copy in done.items():
            session.execute(
                update(Video)
                .where(Video.id == target_id)
                .values(
                    status=STATUS_INDEXED,
                    num_segments=copy.video["num_segments"],
                    indexed_at=copy.video["indexed_at"],
                    updated_at=utcnow(),
                )
            )
    return len(batch)


def _gather(batch: list[tuple[_Copy, Any]], method: str) -> np.ndarray:
    """Rows of one kind from the batch's sources, in batch order."""
    by_source: dict[int, list[int]] = {}
    for position, (copy, _) in enumerate(batch):
        by_source.setdefault(copy.source.number, []).append(position)
    out = None
    for positions in by_source.values():
        source = batch[positions[0]][0].source
        rows = getattr(source.store, method)([(batch[p][1].shard, int(batch[p][1].row)) for p in positions])
        if out is None:
            out = np.empty((len(batch), *rows.shape[1:]), np.float16)
        out[positions] = rows
    return out
