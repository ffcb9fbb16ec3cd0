"""How FAISS candidates become a result list: one best segment per video, then checked against the catalog."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.engine.search import _best_segment_per_video, _resolve


@dataclass
class Video:
    video_id: int
    title: str = ""


@dataclass
class Segment:
    segment_id: int
    video_id: int


class Catalog:
    """The two reads `_resolve` makes, over what the catalog holds *now* (the FAISS file may be older)."""

    def __init__(self, videos: list[Video], segments: list[Segment]):
        self._videos = {v.video_id: v for v in videos}
        self._segments = {s.segment_id: s for s in segments}
        self.reads = 0

    def videos(self, ids):
        self.reads += 1
        return {i: self._videos[i] for i in ids if i in self._videos}

    def segments(self, ids):
        self.reads += 1
        return [self._segments[i] for i in ids if i in self._segments]


def test_best_segment_per_video_keeps_each_videos_top_score_in_order():
    owners = np.array([7, 7, 8, -1, 9, 8])
    segments = np.array([70, 71, 80, -1, 90, 81])
    scores = np.array([0.5, 0.9, 0.8, 0.99, 0.1, 0.85], np.float32)
    best = _best_segment_per_video(owners, segments, scores, exclude=9)
    assert [(v, s) for v, s, _ in best] == [(7, 71), (8, 81)]  # padding (-1) and the excluded video dropped
    assert best[0][2] == np.float32(0.9)


def test_resolve_drops_deleted_videos_and_segment_ids_reused_by_another_video():
    catalog = Catalog(
        videos=[Video(1), Video(2), Video(4, "skip me")],
        segments=[Segment(10, 1), Segment(20, 5), Segment(40, 4)],  # segment 20 now belongs to video 5
    )
    candidates = [(1, 10, 0.9), (2, 20, 0.8), (3, 30, 0.7), (4, 40, 0.6)]  # video 3 and its segment are gone
    known: dict = {}
    out = _resolve(catalog, candidates, known, keep=lambda video: video.title != "skip me")
    assert [(v.video_id, s.segment_id, score) for v, s, score in out] == [(1, 10, 0.9)]
    assert catalog.reads == 2  # one query for the videos, one for the segments, however many candidates
    assert known == {1: Video(1), 2: Video(2), 3: None, 4: Video(4, "skip me")}  # remembered for a wider round
