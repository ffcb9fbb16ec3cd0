"""Build and maintain an index: scan -> plan -> decode (workers) -> encode (batches) -> write -> sync FAISS.

The write API the service's admin endpoints use is here too: `index_paths` (incremental: unchanged files cost
a stat) and `delete_videos`. Both take the index's writer lock, replace every file a reader may hold open
atomically, and leave a running `IndexReader` on the old data until it is reopened.

Timing per stage is reported in the summary (as clip-retrieval's runner logs read / inference / write time):
`decode_wait` is time the encoder sat idle waiting for decoded clips; if it dominates, add `--workers`.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select

from indexer.catalog import Catalog, Run, Video, utcnow
from indexer.decode import CRASH_HOOK_ENV, DecodedChunk, DecodeSettings, ProbeResult
from indexer.encode import SegmentEncoder, token_grid_of
from indexer.layout import (
    IndexManifest,
    IndexOpenError,
    IndexPaths,
    mask_db_url,
    read_manifest,
    resolve_db_url,
    write_manifest,
    writer_lock,
)
from indexer.maintenance import compact, delete_video_rows, recover, resolve_video_ids, sync_vectors, verify
from indexer.plan import plan_work, prune_vanished
from indexer.scan import scan_library
from indexer.scheduler import DecodeFailure, DecodeStage
from indexer.shard import format_shard, in_shard, parse_shard
from indexer.stores import SegmentStore, pooled_token_count
from indexer.vectors import validate_factory
from indexer.writer import BatchWriter, PendingSegment

DEFAULT_WINDOW = 4.0
DEFAULT_STRIDE = 4.0


@dataclass
class IndexOptions:
    window: float | None = None  # seconds; None = the index's setting, or DEFAULT_WINDOW for a new index
    stride: float | None = None
    batch_size: int = 16  # segments per encoder batch (and per shard / catalog transaction)
    workers: int = 2  # decode processes; 0 = one background thread
    factory: str | None = None  # FAISS factory string; None = the index's setting ("auto" for a new index)
    pool_tokens: int | None = None  # store this many tokens per segment (temporal pooling); None = all K
    full_hash: bool = False  # fingerprint whole files instead of size + first/last MiB
    retry_failed: bool = False  # re-try files recorded as failed even if unchanged
    prune: bool = False  # drop catalog entries whose file is gone
    checkpoint_seconds: float = 300.0  # rewrite FAISS this often during a long build, so readers see progress
    progress: bool = False  # tqdm bar on stderr
    use_gpu_faiss: bool | None = None  # None = when faiss-gpu sees a GPU
    # (I, N): index only the files whose path hashes to shard I of N (indexer.shard), so N processes can share
    # a library; None = every file, or the shard an existing index was built as
    library_shard: tuple[int, int] | None = None


# ---------------------------------------------------------------------------------------------- opening


def checkpoint_fingerprint_of(model: Any, explicit: str | None = None) -> str:
    """The checkpoint's sha256 of model.safetensors, for a model object that may not carry it.

    Serialising the state dict with safetensors (as `save_pretrained` does) gives the same bytes, hence the
    same sha256, as the file it was loaded from.
    """
    if explicit:
        return explicit
    for attribute in ("checkpoint_fingerprint", "fingerprint"):
        value = getattr(model, attribute, None)
        if isinstance(value, str) and value:
            return value
    from safetensors.torch import save

    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    return hashlib.sha256(save(state, metadata={"format": "pt"})).hexdigest()


def _catalog_label(paths: IndexPaths, db_url: str) -> str:
    return "catalog.sqlite" if db_url == paths.default_db_url() else mask_db_url(db_url)


@dataclass
class _Opened:
    paths: IndexPaths
    manifest: IndexManifest
    catalog: Catalog
    store: SegmentStore


@contextmanager
def open_for_writing(index_dir: str | Path, db_url: str | None = None) -> Iterator[_Opened]:
    """An existing index under the writer lock (for delete / rebuild / verify)."""
    paths = IndexPaths(Path(index_dir))
    if read_manifest(paths) is None:
        raise IndexOpenError(f"{paths.root} is not an index (no index.json)")
    with writer_lock(paths):
        manifest = read_manifest(paths)
        catalog = Catalog(resolve_db_url(paths, manifest, db_url))
        try:
            yield _Opened(paths, manifest, catalog, SegmentStore(paths))
        finally:
            catalog.dispose()


def _manifest_for(
    paths: IndexPaths, model: Any, fingerprint: str, options: IndexOptions, db_url: str
) -> IndexManifest:
    """The existing manifest after checking it fits this model and these options, or a new one."""
    manifest = read_manifest(paths)
    if manifest is not None:
        if manifest.checkpoint_fingerprint != fingerprint:
            raise IndexOpenError(
                f"index built with checkpoint {manifest.checkpoint_fingerprint[:12]}, not {fingerprint[:12]}: "
                "use another --index directory for this checkpoint"
            )
        for name in ("window", "stride"):
            wanted = getattr(options, name)
            if wanted is not None and abs(wanted - getattr(manifest, name)) > 1e-9:
                raise IndexOpenError(
                    f"index uses --{name} {getattr(manifest, name)}; segments of one index must be cut alike"
                )
        if options.pool_tokens is not None and options.pool_tokens != manifest.token_shape[0]:
            raise IndexOpenError(
                f"index stores {manifest.token_shape[0]} tokens per segment, not {options.pool_tokens}"
            )
        if options.factory and options.factory != manifest.factory:
            validate_factory(options.factory, manifest.dim)
            manifest.factory = options.factory  # applied by this run's FAISS sync
        if (
            options.library_shard is not None
            and format_shard(options.library_shard) != manifest.library_shard
        ):
            holds = f"shard {manifest.library_shard}" if manifest.library_shard else "a whole library"
            raise IndexOpenError(
                f"{paths.root} holds {holds}, not shard {format_shard(options.library_shard)}: "
                "each shard needs its own index directory"
            )
        return manifest
    validate_factory(options.factory or "auto", int(model.config.embed_dim))
    grid = token_grid_of(model)
    num_tokens, channels = (int(x) for x in model.video_token_shape)
    stored = pooled_token_count(grid, options.pool_tokens)
    manifest = IndexManifest(
        checkpoint_fingerprint=fingerprint,
        dim=int(model.config.embed_dim),
        token_shape=(stored, channels),
        model_token_shape=(num_tokens, channels),
        token_grid=grid,
        num_frames=int(model.config.num_frames),
        image_size=int(model.config.image_size),
        window=options.window or DEFAULT_WINDOW,
        stride=options.stride or options.window or DEFAULT_STRIDE,
        factory=options.factory or "auto",
        catalog=_catalog_label(paths, db_url),
        library_shard=format_shard(options.library_shard) if options.library_shard else "",
    )
    write_manifest(paths, manifest)
    return manifest


# ---------------------------------------------------------------------------------------------- index


def index_paths(
    index_dir: str | Path,
    paths: Sequence[str | Path],
    model: Any,
    db_url: str | None = None,
    *,
    checkpoint_fingerprint: str | None = None,
    options: IndexOptions | None = None,
    command: str = "index",
    **option_overrides: Any,
) -> dict[str, Any]:
    """Index (or re-index) videos, directories and manifests into `index_dir`; returns a summary dict.

    Incremental: unchanged files are skipped, changed ones re-encoded, broken ones recorded as failed with a
    reason. Safe to kill at any moment: re-running the same call finishes the job with the same result.
    """
    options = options or IndexOptions()
    if option_overrides:
        known = {f.name for f in fields(IndexOptions)}
        unknown = set(option_overrides) - known
        if unknown:
            raise TypeError(f"unknown index options: {sorted(unknown)}")
        options = IndexOptions(**{**options.__dict__, **option_overrides})
    began = time.perf_counter()
    index_paths_ = IndexPaths(Path(index_dir))
    index_paths_.create()
    fingerprint = checkpoint_fingerprint_of(model, checkpoint_fingerprint)
    with writer_lock(index_paths_):
        url = resolve_db_url(index_paths_, read_manifest(index_paths_), db_url)
        manifest = _manifest_for(index_paths_, model, fingerprint, options, url)
        if options.library_shard is None and manifest.library_shard:  # `update` of a shard stays that shard
            options = replace(options, library_shard=parse_shard(manifest.library_shard))
        catalog = Catalog(url)
        try:
            return _index(index_paths_, manifest, catalog, paths, model, options, command, began)
        finally:
            catalog.dispose()


def _index(paths, manifest, catalog, sources_in, model, options, command, began) -> dict[str, Any]:
    store = SegmentStore(paths)
    recovered = recover(paths, catalog, store)
    with catalog.session() as session:
        run = Run(
            command=command,
            checkpoint_fingerprint=manifest.checkpoint_fingerprint,
            options=_jsonable(options),
        )
        session.add(run)
        session.flush()
        run_id = int(run.id)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    sources, problems = scan_library(sources_in)
    if options.library_shard is not None:  # every rank scans the same library and keeps its own part
        sources = [source for source in sources if in_shard(source.path, options.library_shard)]
        problems = [problem for problem in problems if in_shard(problem[0], options.library_shard)]
    _remember_libraries(manifest, sources_in)
    pruned = prune_vanished(paths, catalog) if options.prune else []
    plan = plan_work(
        paths, catalog, sources, full_hash=options.full_hash, retry_failed=options.retry_failed, run_id=run_id
    )
    timings["scan"] = time.perf_counter() - t0

    writer = BatchWriter(paths, catalog, store, run_id)
    settings = DecodeSettings(
        manifest.num_frames,
        manifest.image_size,
        manifest.window,
        manifest.stride,
        crash_marker=os.environ.get(CRASH_HOOK_ENV) or None,
    )
    encoder = SegmentEncoder(model, stored_tokens=manifest.token_shape[0])
    stage_stats = _run_stages(
        paths, manifest, catalog, store, plan.jobs, settings, encoder, writer, options, timings
    )

    t0 = time.perf_counter()
    synced = sync_vectors(paths, catalog, store, manifest, use_gpu=options.use_gpu_faiss)
    timings["sync"] = time.perf_counter() - t0
    counts = catalog.counts()
    failures = _failure_records(catalog, [video_id for video_id, _ in writer.failed])
    seconds = time.perf_counter() - began
    summary = {
        "index_dir": str(paths.root),
        "command": command,
        "library_shard": manifest.library_shard,
        "run_id": run_id,
        "scanned": len(sources),
        "new": plan.new,
        "changed": plan.changed,
        "unchanged": plan.unchanged,
        "resumed": plan.resumed,
        "retried": plan.retried,
        "to_index": len(plan.jobs),
        "indexed": len(writer.indexed_video_ids),
        "failed": len(writer.failed),
        "failures": failures,
        "missing": [{"path": path, "error": reason} for path, reason in problems],
        "pruned": len(pruned),
        "segments_added": writer.segments_written,
        "video_ids": sorted({*writer.indexed_video_ids, *(v for v, _ in writer.failed)}),
        "videos": counts["videos"],
        "segments": counts["segments"],
        "failed_total": counts["failed"],
        "pending": counts["pending"],
        "vectors": synced["vectors"],
        "factory": synced["factory"],
        "recovered": recovered,
        "seconds": round(seconds, 3),
        "clips_per_s": round(writer.segments_written / max(stage_stats["loop_seconds"], 1e-9), 2),
        "timings": {name: round(value, 3) for name, value in timings.items()},
    }
    with catalog.session() as session:
        run_row = session.get(Run, run_id)
        run_row.status, run_row.finished_at, run_row.summary = "finished", utcnow(), _jsonable(summary)
    return summary


def _run_stages(
    paths, manifest, catalog, store, jobs, settings, encoder, writer, options, timings
) -> dict[str, float]:
    """The decode -> encode -> write loop, with FAISS checkpoints for long builds."""
    stage = DecodeStage(settings, workers=options.workers)
    batch: list[tuple[PendingSegment, torch.Tensor]] = []
    progress = _progress_bar(len(jobs), options.progress)
    timings.update(decode_wait=0.0, decode_worker=0.0, encode=0.0, write=0.0, checkpoints=0.0)
    loop_began = last_checkpoint = time.perf_counter()

    def flush(items: list[tuple[PendingSegment, torch.Tensor]]) -> None:
        t = time.perf_counter()
        encoded = encoder.encode(torch.stack([clip for _, clip in items]))  # [B, T, 3, S, S] -> fp16
        timings["encode"] += time.perf_counter() - t
        t = time.perf_counter()
        writer.write_batch([segment for segment, _ in items], encoded)
        timings["write"] += time.perf_counter() - t
        if progress is not None:
            progress.set_postfix(
                clips_per_s=f"{writer.segments_written / (time.perf_counter() - loop_began):.1f}"
            )

    with closing(stage.run(jobs)) as results:  # closed on any exit: the worker pool never outlives the run
        while True:
            t = time.perf_counter()
            item = next(results, None)
            timings["decode_wait"] += time.perf_counter() - t
            if item is None:
                break
            if isinstance(item, ProbeResult):
                writer.expect(item.video_id, item.info, len(item.windows))
                timings["decode_worker"] += item.seconds
            elif isinstance(item, DecodeFailure):
                batch = [(segment, clip) for segment, clip in batch if segment.video_id != item.video_id]
                writer.fail(item.video_id, item.reason)
                if progress is not None:
                    progress.update(1)
            elif isinstance(item, DecodedChunk):
                timings["decode_worker"] += item.seconds
                for window, clip, thumbnail in zip(item.windows, item.clips, item.thumbnails, strict=True):
                    batch.append((PendingSegment(item.video_id, window, thumbnail), clip))
                while len(batch) >= options.batch_size:
                    flush(batch[: options.batch_size])
                    batch = batch[options.batch_size :]
                if progress is not None:
                    progress.n = len(writer.indexed_video_ids) + len(writer.failed)
                    progress.refresh()
            if time.perf_counter() - last_checkpoint > options.checkpoint_seconds:
                t = time.perf_counter()
                sync_vectors(paths, catalog, store, manifest, use_gpu=options.use_gpu_faiss)
                timings["checkpoints"] += time.perf_counter() - t
                last_checkpoint = time.perf_counter()
    if batch:
        flush(batch)
    if progress is not None:
        progress.n = len(writer.indexed_video_ids) + len(writer.failed)
        progress.close()
    incomplete = writer.incomplete_videos()
    if incomplete:  # cannot happen unless a stage lost a chunk; never report such videos as indexed
        raise RuntimeError(f"videos {incomplete} lost segments between decode and write")
    return {"loop_seconds": time.perf_counter() - loop_began}


def _remember_libraries(manifest: IndexManifest, sources: Sequence[str | Path]) -> None:
    """Directories and manifests given to a build are what a later `update` with no arguments rescans."""
    for source in sources:
        path = Path(source).expanduser()
        if path.is_dir() or path.suffix.lower() in (".jsonl", ".csv"):
            resolved = str(path.resolve())
            if resolved not in manifest.libraries:
                manifest.libraries.append(resolved)


def known_sources(index_dir: str | Path, db_url: str | None = None) -> list[str]:
    """What `update` rescans when given no paths: the libraries of earlier builds and every catalogued file."""
    paths = IndexPaths(Path(index_dir))
    manifest = read_manifest(paths)
    if manifest is None:
        raise IndexOpenError(f"{paths.root} is not an index (no index.json)")
    catalog = Catalog(resolve_db_url(paths, manifest, db_url))
    try:
        with catalog.session() as session:
            catalogued = list(session.scalars(select(Video.path)).all())
    finally:
        catalog.dispose()
    return [*manifest.libraries, *catalogued]


def _progress_bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="video", file=sys.stderr, dynamic_ncols=True)


def _failure_records(catalog: Catalog, video_ids: list[int]) -> list[dict[str, Any]]:
    if not video_ids:
        return []
    with catalog.session() as session:
        rows = session.execute(select(Video.id, Video.path, Video.error).where(Video.id.in_(video_ids))).all()
    return [{"video_id": int(i), "path": str(p), "error": e} for i, p, e in sorted(rows, key=lambda r: r[1])]


def _jsonable(value: Any) -> Any:
    if isinstance(value, IndexOptions):
        value = value.__dict__
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------- maintenance


def delete_videos(
    index_dir: str | Path, video_ids_or_paths: Sequence[Any], db_url: str | None = None
) -> dict[str, Any]:
    """Remove videos (by catalog id or path) from catalog, thumbnails and FAISS; their files are not touched."""
    with open_for_writing(index_dir, db_url) as opened:
        recover(opened.paths, opened.catalog, opened.store)
        video_ids, not_found = resolve_video_ids(opened.catalog, list(video_ids_or_paths))
        deleted = delete_video_rows(opened.paths, opened.catalog, video_ids)
        synced = sync_vectors(opened.paths, opened.catalog, opened.store, opened.manifest)
    return {"deleted": deleted, "video_ids": video_ids, "not_found": not_found, "vectors": synced["vectors"]}


def rebuild_index(
    index_dir: str | Path,
    factory: str | None = None,
    db_url: str | None = None,
    compact_shards: bool = True,
    use_gpu: bool | None = None,
) -> dict[str, Any]:
    """Rebuild FAISS from the stored embeddings (no decoding, no model), optionally with a new factory."""
    with open_for_writing(index_dir, db_url) as opened:
        began = time.perf_counter()
        recover(opened.paths, opened.catalog, opened.store)
        compacted = compact(opened.paths, opened.catalog, opened.store) if compact_shards else None
        synced = sync_vectors(
            opened.paths,
            opened.catalog,
            opened.store,
            opened.manifest,
            factory=factory,
            rebuild=True,
            use_gpu=use_gpu,
        )
    return {**synced, "compacted": compacted, "seconds": round(time.perf_counter() - began, 3)}


def verify_index(index_dir: str | Path, db_url: str | None = None, repair: bool = False) -> dict[str, Any]:
    with open_for_writing(index_dir, db_url) as opened:
        return verify(opened.paths, opened.catalog, opened.store, opened.manifest, repair=repair)
