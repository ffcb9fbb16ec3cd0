"""Catalog reads for the /videos routes: listing, details, and the files (thumbnails, videos) they serve.

File paths come from the catalog, which the indexer wrote, but they are still checked before being served:
videos must lie under the allowed library roots and thumbnails under the index directory, so neither a
tampered catalog nor a symlink can turn the service into a reader of arbitrary files.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.core.errors import NotFound
from service.core.paths import servable_file
from service.engine.lookup import require_video

if TYPE_CHECKING:
    from service.engine.engine import Engine


class CatalogEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def list_videos(self, offset: int, limit: int, status: str | None, query: str | None) -> tuple[list[Any], int]:
        def work() -> tuple[list[Any], int]:
            with self.engine.readers.lease() as reader:
                videos, total = reader.list_videos(offset, limit, status=status, query=query)
                return list(videos), int(total)

        return await self.engine.run(work)

    async def video_with_segments(self, raw_video_id: str) -> tuple[Any, list[Any]]:
        def work() -> tuple[Any, list[Any]]:
            with self.engine.readers.lease() as reader:
                video = require_video(reader, raw_video_id)
                segments = sorted(reader.segments_of_video(video.video_id), key=lambda s: (s.start, s.end))
                return video, segments

        return await self.engine.run(work)

    async def video(self, raw_video_id: str) -> Any:
        def work() -> Any:
            with self.engine.readers.lease() as reader:
                return require_video(reader, raw_video_id)

        return await self.engine.run(work)

    async def video_file(self, raw_video_id: str) -> tuple[Any, Path]:
        """The video's record and its real path on disk, if it may be served."""
        video = await self.video(raw_video_id)
        roots = self.engine.settings.allowed_roots
        path = await self.engine.run(servable_file, video.path, roots, "video file")
        return video, path

    async def thumbnail_file(self, raw_video_id: str, segment_id: int | None) -> Path:
        """A segment's JPEG; without segment_id, the segment in the middle of the video."""

        def work() -> Path:
            with self.engine.readers.lease() as reader:
                video = require_video(reader, raw_video_id)
                segments = sorted(reader.segments_of_video(video.video_id), key=lambda s: (s.start, s.end))
            if segment_id is not None:
                chosen = next((s for s in segments if int(s.segment_id) == segment_id), None)
                if chosen is None:
                    raise NotFound(f"video {video.video_id} has no segment {segment_id}")
            elif segments:
                chosen = segments[len(segments) // 2]
            else:
                raise NotFound(f"video {video.video_id} has no indexed segments, so no thumbnail")
            if not chosen.thumbnail_path:
                raise NotFound(f"segment {chosen.segment_id} has no thumbnail")
            index_dir = Path(self.engine.settings.index_dir).resolve()
            path = Path(chosen.thumbnail_path)
            path = path if path.is_absolute() else index_dir / path
            return servable_file(path, [index_dir], "thumbnail")

        return await self.engine.run(work)
