"""The catalog: videos, their segments and indexing runs, in any database SQLAlchemy 2 speaks.

SQLite in the index directory by default (WAL, so the service reads while an indexer writes); PostgreSQL (or
anything else) through a URL. The catalog is the source of truth for what is indexed: a segment row exists only
once its embedding and tokens are durably on disk, and a video is `indexed` only when all its segments are
committed, in the same transaction as the last of them. FAISS is derived from it and can always be rebuilt.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

STATUS_INDEXED = "indexed"
STATUS_FAILED = "failed"
STATUS_PENDING = "pending"  # known, not (completely) indexed: redone by the next build or update
STATUSES = (STATUS_INDEXED, STATUS_FAILED, STATUS_PENDING)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class Video(Base):
    __tablename__ = "videos"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused, even after deleting the newest

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(Text, unique=True, index=True)  # absolute, resolved
    title: Mapped[str | None] = mapped_column(Text)
    fingerprint: Mapped[str | None] = mapped_column(String(80))  # content hash (see scan.content_fingerprint)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    duration: Mapped[float | None] = mapped_column(Float)
    fps: Mapped[float | None] = mapped_column(Float)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    num_frames: Mapped[int | None] = mapped_column(Integer)
    codec: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True, default=STATUS_PENDING)
    error: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    num_segments: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    indexed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    run_id: Mapped[int | None] = mapped_column(Integer)

    segments: Mapped[list[Segment]] = relationship(
        back_populates="video", cascade="all, delete-orphan", passive_deletes=True, order_by="Segment.ordinal"
    )


class Segment(Base):
    __tablename__ = "segments"
    # Never reuse a segment id: a reader holding an older FAISS file must find a deleted id gone, not pointing
    # at some other segment (PostgreSQL sequences never reuse; SQLite needs AUTOINCREMENT for that).
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)  # = the FAISS id
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)  # position of the window in its video
    start: Mapped[float] = mapped_column(Float)  # seconds
    end: Mapped[float] = mapped_column(Float)
    shard: Mapped[str] = mapped_column(
        String(64), index=True
    )  # embeddings/<shard>.npy and tokens/<shard>.npy
    row: Mapped[int] = mapped_column(Integer)  # row inside the shard
    thumbnail: Mapped[str | None] = mapped_column(Text)  # relative to the index directory

    video: Mapped[Video] = relationship(back_populates="segments")


class Run(Base):
    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    command: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="running")  # running, finished, interrupted
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    checkpoint_fingerprint: Mapped[str | None] = mapped_column(String(80))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the writer, nor it them
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives a killed process (not power loss)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


class Catalog:
    """An engine plus session factory, with the queries the indexer and the reader share."""

    def __init__(self, url: str, create: bool = True):
        self.url = url
        self.engine = make_engine(url)
        if create:
            Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session whose transaction commits on success and rolls back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        self.engine.dispose()

    # ---- queries shared by writer, maintenance and reader ----------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.session() as session:
            by_status = dict(session.execute(select(Video.status, func.count()).group_by(Video.status)).all())
            indexed_segments = session.scalar(
                select(func.count(Segment.id)).join(Video).where(Video.status == STATUS_INDEXED)
            )
            all_segments = session.scalar(select(func.count(Segment.id)))
        return {
            "videos": int(sum(by_status.values())),
            "indexed": int(by_status.get(STATUS_INDEXED, 0)),
            "failed": int(by_status.get(STATUS_FAILED, 0)),
            "pending": int(by_status.get(STATUS_PENDING, 0)),
            "segments": int(indexed_segments or 0),
            "segment_rows": int(all_segments or 0),
        }

    def indexed_segment_locations(self) -> list[tuple[int, str, int]]:
        """(segment_id, shard, row) of every segment of an indexed video, by segment id."""
        with self.session() as session:
            rows = session.execute(
                select(Segment.id, Segment.shard, Segment.row)
                .join(Video)
                .where(Video.status == STATUS_INDEXED)
                .order_by(Segment.id)
            ).all()
        return [(int(i), str(s), int(r)) for i, s, r in rows]

    def referenced_shards(self) -> set[str]:
        with self.session() as session:
            return set(session.scalars(select(Segment.shard).distinct()).all())
