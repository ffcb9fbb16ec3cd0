"""Question answering about one video."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.schemas.common import VideoId


class QARequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    video_id: VideoId
    question: str = Field(examples=["what color is the ball?"])
    candidates: list[str] | None = Field(
        None, description="multiple-choice answers; null = open-ended over the model's answer vocabulary")
    start: float | None = Field(None, ge=0, description="only use segments overlapping [start, end] seconds")
    end: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check_range(self) -> QARequest:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        return self


class QACandidatePublic(BaseModel):
    text: str
    score: float = Field(description="probability of this candidate (softmax over the candidates)")


class QAResponse(BaseModel):
    video_id: VideoId
    question: str
    answer: str
    score: float = Field(description="probability of the answer")
    candidates: list[QACandidatePublic] | None
    segment_ids: list[int] = Field(description="segments whose tokens were averaged to answer")
    took_ms: float
