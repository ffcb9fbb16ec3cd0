"""Decide the work: which scanned files are new, changed, unchanged, or vanished, against the catalog.

Unchanged = same size and mtime as recorded (no read at all), or, when those moved, the same content
fingerprint (a touched or copied file). Changed files and videos left `pending` by an interrupted run are reset:
their old segments are dropped in the same transaction that marks them pending, so a kill at any point leaves
them pending and the next run redoes them whole. Files already recorded as failed are not retried unless they
changed (or `retry_failed`), so a library with a few broken files does no work on re-runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import select

from indexer.catalog import STATUS_FAILED, STATUS_PENDING, Catalog, Video, utcnow
from indexer.layout import IndexPaths
from indexer.maintenance import delete_video_rows, reset_videos
from indexer.scan import SourceFile, content_fingerprint
from indexer.scheduler import VideoJob


@dataclass
class Plan:
    jobs: list[VideoJob] = field(default_factory=list)
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    resumed: int = 0  # pending from an interrupted run
    retried: int = 0  # failed before, retried on request


def plan_work(
    paths: IndexPaths,
    catalog: Catalog,
    sources: list[SourceFile],
    full_hash: bool = False,
    retry_failed: bool = False,
    run_id: int | None = None,
) -> Plan:
    plan = Plan()
    with catalog.session() as session:
        known = {video.path: video for video in session.scalars(select(Video)).all()}
    to_reset: list[tuple[int, dict]] = []
    inserts: list[dict] = []
    for source in sources:
        video = known.get(source.path)
        described = (
            {"title": source.title, "extra": source.metadata} if source.title or source.metadata else {}
        )
        if video is None:
            inserts.append(_new_row(source, _fingerprint(source, full_hash), run_id))
            plan.new += 1
            continue
        if described and (video.title != source.title or (video.extra or {}) != source.metadata):
            _update_columns(catalog, video.id, described)  # a new title costs no re-encode
        if video.status == STATUS_PENDING:
            plan.resumed += 1
            to_reset.append((video.id, _stat_columns(source)))
            continue
        if video.size_bytes == source.size and video.mtime_ns == source.mtime_ns:
            if video.status == STATUS_FAILED and retry_failed:
                plan.retried += 1
                to_reset.append((video.id, {}))
            else:
                plan.unchanged += 1
            continue
        fingerprint = _fingerprint(source, full_hash)
        if (
            fingerprint is not None
            and fingerprint == video.fingerprint
            and not (video.status == STATUS_FAILED and retry_failed)
        ):
            plan.unchanged += 1  # touched, same bytes: remember the new mtime, keep the vectors
            _update_columns(catalog, video.id, _stat_columns(source))
            continue
        plan.changed += 1
        to_reset.append((video.id, {**_stat_columns(source), "fingerprint": fingerprint}))
    if inserts:
        with catalog.session() as session:
            session.add_all(Video(**row) for row in inserts)
    for video_id, columns in to_reset:
        reset_videos(paths, catalog, [video_id], **columns)
    wanted = {source.path for source in sources}
    with catalog.session() as session:
        rows = session.execute(select(Video.id, Video.path).where(Video.status == STATUS_PENDING)).all()
    plan.jobs = sorted((VideoJob(int(i), str(p)) for i, p in rows if p in wanted), key=lambda job: job.path)
    return plan


def _fingerprint(source: SourceFile, full_hash: bool) -> str | None:
    """None for a file that cannot be read: the decode stage then records why, like any other bad file."""
    try:
        return content_fingerprint(source.path, source.size, full=full_hash)
    except OSError:
        return None


def _stat_columns(source: SourceFile) -> dict:
    return {"size_bytes": source.size, "mtime_ns": source.mtime_ns}


def _new_row(source: SourceFile, fingerprint: str | None, run_id: int | None) -> dict:
    return {
        "path": source.path,
        "title": source.title or os.path.splitext(os.path.basename(source.path))[0],
        "fingerprint": fingerprint,
        "size_bytes": source.size,
        "mtime_ns": source.mtime_ns,
        "status": STATUS_PENDING,
        "extra": dict(source.metadata),
        "run_id": run_id,
    }


def _update_columns(catalog: Catalog, video_id: int, columns: dict) -> None:
    with catalog.session() as session:
        video = session.get(Video, video_id)
        for name, value in columns.items():
            setattr(video, name, value)
        video.updated_at = utcnow()


def prune_vanished(paths: IndexPaths, catalog: Catalog) -> list[str]:
    """Delete catalog entries whose file no longer exists; returns their paths."""
    with catalog.session() as session:
        rows = session.execute(select(Video.id, Video.path)).all()
    gone = [(int(video_id), str(path)) for video_id, path in rows if not os.path.exists(path)]
    delete_video_rows(paths, catalog, [video_id for video_id, _ in gone])
    return [path for _, path in gone]
