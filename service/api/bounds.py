"""Checks of request values against the configured bounds (they are settings, so not in the static schemas)."""

from __future__ import annotations

from service.core.config import Settings
from service.core.errors import Unprocessable


def clean_text(value: str, name: str, settings: Settings) -> str:
    text = value.strip()
    if not text:
        raise Unprocessable(f"{name} must not be empty")
    if len(text) > settings.max_query_chars:
        raise Unprocessable(f"{name} is {len(text)} characters long; the limit is {settings.max_query_chars}")
    return text


def check_page(k: int, offset: int, settings: Settings, k_name: str = "k") -> None:
    if k < 1 or k > settings.max_k:
        raise Unprocessable(f"{k_name} must be between 1 and {settings.max_k}, got {k}")
    if offset < 0 or offset > settings.max_offset:
        raise Unprocessable(f"offset must be between 0 and {settings.max_offset}, got {offset}")


def check_rerank_k(rerank_k: int | None, settings: Settings) -> int:
    value = settings.rerank_k if rerank_k is None else rerank_k
    if value < 1 or value > settings.max_rerank_k:
        raise Unprocessable(f"rerank_k must be between 1 and {settings.max_rerank_k}, got {value}")
    return value


def clean_candidates(candidates: list[str] | None, settings: Settings) -> list[str] | None:
    if candidates is None:
        return None
    if len(candidates) < 2 or len(candidates) > settings.max_candidates:
        raise Unprocessable(
            f"candidates must hold between 2 and {settings.max_candidates} answers, got {len(candidates)}")
    cleaned = [c.strip() for c in candidates]
    for i, text in enumerate(cleaned):
        if not text:
            raise Unprocessable(f"candidates[{i}] must not be empty")
        if len(text) > settings.max_candidate_chars:
            raise Unprocessable(f"candidates[{i}] is longer than {settings.max_candidate_chars} characters")
    return cleaned
