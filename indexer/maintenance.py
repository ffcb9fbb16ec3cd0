"""Keeping the parts of an index consistent: start-up recovery, FAISS sync, delete, compaction, verify.

Everything here runs under the writer lock. The catalog plus the shards are the truth; FAISS, the counts in
index.json and the thumbnails follow from them, so every repair is "make the derived parts match the truth".
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import delete, select, update

from indexer.catalog import STATUS_INDEXED, STATUS_PENDING, Catalog, Run, Segment, Video, utcnow
from indexer.layout import IndexManifest, IndexPaths, remove_temporaries, write_manifest
from indexer.stores import SegmentStore
from indexer.vectors import (
    TooFewVectorsError,
    VectorIndexError,
    apply_search_params,
    build_index,
    default_search_params,
    empty_index,
    index_ids,
    read_index,
    resolve_factory,
    supports_removal,
    write_index,
)
from indexer.writer import remove_thumbnails


def recover(paths: IndexPaths, catalog: Catalog, store: SegmentStore) -> dict[str, int]:
    """Undo what a killed writer left half-done: temporaries, unreferenced shards, 'running' runs."""
    temporaries = remove_temporaries(paths)
    orphans = sorted(store.all_shard_files() - catalog.referenced_shards())
    store.remove_shards(orphans)
    with catalog.session() as session:
        interrupted = session.execute(
            update(Run).where(Run.status == "running").values(status="interrupted", finished_at=utcnow())
        ).rowcount
    return {
        "temporaries_removed": temporaries,
        "orphan_shards_removed": len(orphans),
        "interrupted_runs": interrupted,
    }


def reset_videos(paths: IndexPaths, catalog: Catalog, video_ids: Sequence[int], **columns: Any) -> None:
    """Drop the segments of these videos and mark them pending (to be encoded again)."""
    if not video_ids:
        return
    ids = list(video_ids)
    with catalog.session() as session:
        shards = _shards_of(session, ids)
        session.execute(delete(Segment).where(Segment.video_id.in_(ids)))
        session.execute(
            update(Video)
            .where(Video.id.in_(ids))
            .values(
                status=STATUS_PENDING,
                error=None,
                num_segments=0,
                indexed_at=None,
                updated_at=utcnow(),
                **columns,
            )
        )
    _drop_dead_shards(paths, catalog, shards)
    for video_id in ids:
        remove_thumbnails(paths, video_id)


def _shards_of(session: Any, video_ids: list[int]) -> set[str]:
    return set(session.scalars(select(Segment.shard).where(Segment.video_id.in_(video_ids)).distinct()).all())


def _drop_dead_shards(paths: IndexPaths, catalog: Catalog, candidates: set[str]) -> None:
    """Delete shards no segment references any more (after the commit that dropped their last rows)."""
    if candidates:
        SegmentStore(paths).remove_shards(sorted(candidates - catalog.referenced_shards()))


def sync_vectors(
    paths: IndexPaths,
    catalog: Catalog,
    store: SegmentStore,
    manifest: IndexManifest,
    factory: str | None = None,
    rebuild: bool = False,
    use_gpu: bool | None = None,
) -> dict[str, Any]:
    """Make vectors.faiss hold exactly the indexed segments, then rewrite index.json with the counts.

    Incremental when the existing file was built with the same factory and supports the needed removals
    (HNSW cannot remove); otherwise a full rebuild from the stored embeddings. Both files are replaced
    atomically, so a reader keeps using whatever it loaded.
    """
    locations = catalog.indexed_segment_locations()  # [(segment_id, shard, row)] by id
    wanted_ids = np.array([segment_id for segment_id, _, _ in locations], np.int64)
    requested = factory or manifest.factory
    target = resolve_factory(requested, len(locations), manifest.dim) if locations else "Flat"
    index, mode = None, "rebuilt"
    if not rebuild and target == manifest.built_factory and paths.vectors.is_file():
        index = _load_quietly(paths.vectors)
    if index is not None:
        present = index_ids(index)
        remove = np.setdiff1d(present, wanted_ids)
        add = np.setdiff1d(wanted_ids, present)
        if len(remove) and not supports_removal(index):
            index = None
        else:
            if len(remove):
                index.remove_ids(remove)
            if len(add):
                by_id = {segment_id: (shard, row) for segment_id, shard, row in locations}
                vectors = store.read_embeddings([by_id[int(i)] for i in add]).astype(np.float32)
                index.add_with_ids(vectors, add)
            mode = "incremental" if len(remove) or len(add) else "unchanged"
    if index is None:
        if locations:
            vectors = store.read_embeddings([(shard, row) for _, shard, row in locations]).astype(np.float32)
            try:
                index = build_index(vectors, wanted_ids, target, use_gpu=use_gpu)
            except TooFewVectorsError:
                if rebuild:  # asked for explicitly: say why not
                    raise
                # A build must not fail after hours of encoding because its library is still small: exact
                # search until there are enough vectors, then the next sync trains the requested factory.
                target, mode = "Flat", "flat-until-trainable"
                index = build_index(vectors, wanted_ids, target)
        else:
            index = empty_index(manifest.dim)
    apply_search_params(index, default_search_params(target))
    if mode != "unchanged" or not paths.vectors.is_file():
        write_index(index, paths.vectors)
    counts = catalog.counts()
    manifest.factory = requested or "auto"
    manifest.built_factory = target
    manifest.search_params = default_search_params(target)
    manifest.num_vectors = int(index.ntotal)
    manifest.num_videos = counts["videos"]
    manifest.num_segments = counts["segments"]
    manifest.num_failed = counts["failed"]
    write_manifest(paths, manifest)
    return {"mode": mode, "vectors": int(index.ntotal), "factory": target}


def _load_quietly(path: Path) -> Any:
    try:
        return read_index(path)
    except RuntimeError:  # unreadable file: rebuilt from the shards
        return None


def delete_video_rows(paths: IndexPaths, catalog: Catalog, video_ids: Sequence[int]) -> int:
    if not video_ids:
        return 0
    with catalog.session() as session:
        shards = _shards_of(session, list(video_ids))
        session.execute(delete(Segment).where(Segment.video_id.in_(list(video_ids))))
        deleted = session.execute(delete(Video).where(Video.id.in_(list(video_ids)))).rowcount
    _drop_dead_shards(paths, catalog, shards)
    for video_id in video_ids:
        remove_thumbnails(paths, video_id)
    return int(deleted)


def resolve_video_ids(catalog: Catalog, ids_or_paths: Sequence[Any]) -> tuple[list[int], list[str]]:
    """Catalog ids for ids (ints or digit strings) and paths; plus what matched nothing."""
    found, missing = [], []
    with catalog.session() as session:
        for item in ids_or_paths:
            text = str(item).strip()
            video_id = None
            if isinstance(item, int) or (text.isdigit() and not os.path.exists(text)):
                video_id = session.scalar(select(Video.id).where(Video.id == int(text)))
            if video_id is None:
                video_id = session.scalar(select(Video.id).where(Video.path == str(Path(text).resolve())))
            if video_id is None:
                missing.append(text)
            else:
                found.append(int(video_id))
    return sorted(set(found)), missing


def compact(
    paths: IndexPaths, catalog: Catalog, store: SegmentStore, rows_per_shard: int = 4096
) -> dict[str, int]:
    """Rewrite live rows into fresh shards and drop the old ones (reclaims space from deleted videos).

    New shards are written first, then one transaction repoints every segment, then the old files go: a kill
    at any point leaves either the old or the new shards referenced, and the other set is deleted as orphans.
    """
    with catalog.session() as session:
        rows = session.execute(select(Segment.id, Segment.shard, Segment.row).order_by(Segment.id)).all()
    old_shards = store.all_shard_files()
    moves: list[tuple[int, str, int]] = []
    for begin in range(0, len(rows), rows_per_shard):
        part = rows[begin : begin + rows_per_shard]
        locations = [(str(shard), int(row)) for _, shard, row in part]
        name = store.new_shard_name()
        store.write_shard(name, store.read_embeddings(locations), store.read_tokens(locations))
        moves.extend((int(segment_id), name, offset) for offset, (segment_id, _, _) in enumerate(part))
    with catalog.session() as session:
        session.execute(update(Segment), [{"id": i, "shard": s, "row": r} for i, s, r in moves])
    store.remove_shards(sorted(old_shards))
    return {
        "segments": len(moves),
        "shards_before": len(old_shards),
        "shards_after": len(store.all_shard_files()),
    }


def verify(
    paths: IndexPaths, catalog: Catalog, store: SegmentStore, manifest: IndexManifest, repair: bool = False
) -> dict[str, Any]:
    """Check that catalog, shards, FAISS, thumbnails and index.json agree; with `repair`, make them agree.

    Repair marks videos whose data is missing as pending (the next `update` re-encodes them), deletes orphan
    shards and temporaries, and rebuilds FAISS from the shards.
    """
    problems: list[str] = []
    on_disk = store.shard_names()
    shard_rows = {name: store.shard_rows(name) for name in on_disk}
    broken_videos: set[int] = set()
    with catalog.session() as session:
        segments = session.execute(
            select(
                Segment.id, Segment.video_id, Segment.shard, Segment.row, Segment.thumbnail, Video.status
            ).join(Video)
        ).all()
        videos = session.execute(select(Video.id, Video.status, Video.num_segments)).all()
    per_video: dict[int, int] = {}
    missing_thumbs = 0
    for _, video_id, shard, row, thumbnail, status in segments:
        per_video[video_id] = per_video.get(video_id, 0) + 1
        if shard not in shard_rows or row >= shard_rows[shard]:
            broken_videos.add(video_id)
        if status == STATUS_INDEXED and thumbnail and not (paths.root / thumbnail).is_file():
            missing_thumbs += 1
    for video_id, status, num_segments in videos:
        if status == STATUS_INDEXED and per_video.get(video_id, 0) != (num_segments or 0):
            broken_videos.add(video_id)
    if broken_videos:
        problems.append(f"{len(broken_videos)} indexed videos have missing or incomplete segment data")
    pending = sum(1 for _, status, _ in videos if status == STATUS_PENDING)
    if pending:
        problems.append(f"{pending} videos are pending (an interrupted build; `update` finishes them)")
    orphans = store.all_shard_files() - {shard for _, _, shard, _, _, _ in segments}
    if orphans:
        problems.append(f"{len(orphans)} shard files are referenced by no segment")
    if missing_thumbs:
        problems.append(f"{missing_thumbs} thumbnails are missing")
    expected_ids = np.array(
        sorted(i for i, _, _, _, _, status in segments if status == STATUS_INDEXED), np.int64
    )
    index = _load_quietly(paths.vectors) if paths.vectors.is_file() else None
    if index is None:
        problems.append("vectors.faiss is missing or unreadable")
    else:
        present = np.sort(index_ids(index))
        if not np.array_equal(present, expected_ids):
            extra = len(np.setdiff1d(present, expected_ids))
            absent = len(np.setdiff1d(expected_ids, present))
            problems.append(f"FAISS disagrees with the catalog: {extra} stale vectors, {absent} missing")
    counts = catalog.counts()
    if (manifest.num_segments, manifest.num_videos) != (counts["segments"], counts["videos"]):
        problems.append("index.json counts are out of date")
    report: dict[str, Any] = {"ok": not problems, "problems": problems, "repaired": []}
    if repair and problems:
        if broken_videos:
            reset_videos(paths, catalog, sorted(broken_videos))
            report["repaired"].append(f"marked {len(broken_videos)} videos pending for re-encoding")
        recovered = recover(paths, catalog, store)
        if recovered["orphan_shards_removed"] or recovered["temporaries_removed"]:
            report["repaired"].append(
                f"removed {recovered['orphan_shards_removed']} orphan shards, {recovered['temporaries_removed']} temporaries"
            )
        try:
            sync_vectors(paths, catalog, store, manifest, rebuild=True)
            report["repaired"].append("rebuilt vectors.faiss and index.json from the stored embeddings")
        except VectorIndexError as error:
            report["repaired"].append(f"could not rebuild FAISS: {error}")
    report["counts"] = counts
    return report
