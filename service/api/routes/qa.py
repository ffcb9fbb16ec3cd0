"""POST /qa: a question about one video, open-ended or multiple-choice."""

from __future__ import annotations

import time

from fastapi import APIRouter

from service.api.bounds import clean_candidates, clean_text
from service.api.deps import EngineDep, SettingsDep
from service.schemas.common import ERROR_RESPONSES, ErrorResponse
from service.schemas.qa import QACandidatePublic, QARequest, QAResponse

router = APIRouter(tags=["qa"], responses={
    **ERROR_RESPONSES, 409: {"model": ErrorResponse, "description": "open-ended QA without a QA head"}})


@router.post("/qa", response_model=QAResponse)
async def answer_question(body: QARequest, engine: EngineDep, settings: SettingsDep) -> QAResponse:
    """Answer from the video's cached tokens (segments overlapping [start, end], averaged)."""
    t0 = time.perf_counter()
    question = clean_text(body.question, "question", settings)
    candidates = clean_candidates(body.candidates, settings)
    outcome = await engine.qa.answer(str(body.video_id), question, candidates, body.start, body.end)
    return QAResponse(
        video_id=outcome.video.video_id,
        question=question,
        answer=outcome.answer,
        score=round(outcome.score, 6),
        candidates=None if outcome.candidates is None else [
            QACandidatePublic(text=text, score=round(score, 6)) for text, score in outcome.candidates],
        segment_ids=outcome.segment_ids,
        took_ms=round((time.perf_counter() - t0) * 1000, 2),
    )
