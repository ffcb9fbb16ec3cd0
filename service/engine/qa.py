"""Question answering about one indexed video, from its cached segment tokens.

The fusion encoder was trained on the token grid of *one* clip ([K, C], flattened (t, h, w)). A video in the
index is several segments, each with its own grid, so the engine picks the segments that overlap the asked
time range (all of them when no range is given), keeps at most `qa_max_segments` evenly spaced ones, and
averages their grids element-wise into one [1, K, C] grid: every position still means the same (t, h, w) cell,
so the model sees the shape and statistics it was trained on, summarised over the span. (Concatenating grids
would give a sequence length the fusion encoder never saw.)

Open-ended: softmax over the model's answer vocabulary, answer = argmax, score = its probability.
Multiple-choice: softmax over the model's scores for the given candidates, answer = the best candidate.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from service.core.errors import BadRequest, Conflict
from service.engine import inference
from service.engine.lookup import require_video, stored_arrays_may_vanish

if TYPE_CHECKING:
    from service.engine.engine import Engine


@dataclass
class QAOutcome:
    video: Any
    answer: str
    score: float
    candidates: list[tuple[str, float]] | None  # (text, probability) in the order given, for multiple choice
    segment_ids: list[int]  # the segments whose tokens were averaged


class QAEngine:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def answer(
        self,
        raw_video_id: str,
        question: str,
        candidates: list[str] | None = None,
        start: float | None = None,
        end: float | None = None,
    ) -> QAOutcome:
        model = self.engine.require_model()
        if candidates is None and not getattr(model, "answer_vocab", None):
            raise Conflict(
                "this checkpoint has no open-ended QA head (answer vocabulary is empty); "
                "pass `candidates` for multiple-choice QA or serve a QA fine-tuned checkpoint"
            )
        return await self.engine.run(self._answer_sync, raw_video_id, question, candidates, start, end)

    def _answer_sync(self, raw_video_id: str, question: str, candidates: list[str] | None,
                     start: float | None, end: float | None) -> QAOutcome:
        engine = self.engine
        with engine.readers.lease() as reader:
            video = require_video(reader, raw_video_id)
            segments = _select_segments(reader.segments_of_video(video.video_id), video, start, end,
                                        engine.settings.qa_max_segments)
            segment_ids = [int(s.segment_id) for s in segments]
            with stored_arrays_may_vanish():
                tokens = reader.video_tokens(segment_ids)  # (N, K, C) fp16
        grid = np.asarray(tokens, dtype=np.float32).mean(axis=0, keepdims=True)  # (1, K, C)
        model = engine.require_model()
        t0 = time.perf_counter()
        if candidates is None:
            probs = inference.answer_open(model, grid, question)  # (A,)
            best = int(np.argmax(probs))
            outcome = QAOutcome(video, str(model.answer_vocab[best]), float(probs[best]), None, segment_ids)
        else:
            probs = inference.answer_choice(model, grid, question, candidates)  # (C,)
            best = int(np.argmax(probs))
            scored = [(text, float(p)) for text, p in zip(candidates, probs, strict=True)]
            outcome = QAOutcome(video, candidates[best], float(probs[best]), scored, segment_ids)
        engine.metrics.inference.observe(time.perf_counter() - t0, op="qa_open" if candidates is None else "qa_choice")
        return outcome


def _select_segments(segments: list[Any], video: Any, start: float | None, end: float | None,
                     max_segments: int) -> list[Any]:
    if not segments:
        raise Conflict(f"video {video.video_id} has no indexed segments (status: {video.status})")
    lo = 0.0 if start is None else float(start)
    hi = math.inf if end is None else float(end)
    chosen = sorted((s for s in segments if s.start < hi and s.end > lo), key=lambda s: (s.start, s.end))
    if not chosen:
        span = f"[{lo:g}, {'end' if math.isinf(hi) else f'{hi:g}'}]"
        length = f"{video.duration:g} s" if video.duration is not None else "of unknown length"
        raise BadRequest(f"no indexed segment of video {video.video_id} overlaps {span} s (the video is {length})")
    if len(chosen) > max_segments:  # evenly spaced, first and last kept
        picks = np.linspace(0, len(chosen) - 1, max_segments).round().astype(int)
        chosen = [chosen[i] for i in sorted(set(picks.tolist()))]
    return chosen
