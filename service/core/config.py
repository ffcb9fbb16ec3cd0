"""Service settings: one pydantic-settings object, filled from `CLOVER_*` environment variables.

`clover serve` passes its command-line options as keyword arguments, which take priority over the environment,
so every option can be given either way. List settings accept JSON (`["a", "b"]`) or a comma-separated string.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_list(value: Any) -> Any:
    """Accept a JSON list or a comma-separated string for list settings (env vars are strings)."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text.startswith("["):
            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Everything `clover serve` can be told; defaults suit one CPU machine serving a personal library."""

    model_config = SettingsConfigDict(env_prefix="CLOVER_", extra="ignore", validate_default=True)

    # --- what to serve
    index_dir: Path  # an index directory written by `clover index build`
    checkpoint: Path  # the Clover checkpoint the index was built with (its fingerprint must match)
    db_url: str | None = None  # catalog DB URL; None = the SQLite catalog inside the index directory
    device: str = "cpu"  # torch device for query encoding, re-ranking and QA ("cpu", "cuda", "cuda:1", "auto")

    # --- network
    host: str = "127.0.0.1"  # loopback by default: exposing the service is an explicit choice
    port: int = Field(8000, ge=0, le=65535)
    cors_origins: Annotated[list[str], NoDecode] = []  # browser origins allowed to call the API ("*" = any)
    api_key: SecretStr | None = None  # when set, admin routes need `X-API-Key`; None = admin routes are open

    # --- files the service may touch
    library_roots: Annotated[list[Path], NoDecode] = []  # only videos under these dirs are indexed or streamed
    upload_dir: Path | None = None  # where uploads land (always an allowed root); None = <index_dir>/uploads

    # --- input bounds: every request is bounded so no input can make the server do unbounded work
    max_k: int = Field(100, ge=1)  # most results one search page may ask for
    max_offset: int = Field(1000, ge=0)  # deepest page offset (deep pages cost a larger FAISS search)
    max_query_chars: int = Field(500, ge=1)  # longest query or question, in characters
    max_candidates: int = Field(16, ge=2)  # most multiple-choice candidates in one QA request
    max_candidate_chars: int = Field(200, ge=1)  # longest single candidate answer
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1)  # largest video upload; bigger is 413
    max_body_bytes: int = Field(1024 * 1024, ge=1024)  # largest non-upload request body (JSON)
    max_search_candidates: int = Field(10_000, ge=1)  # most segments one search pulls from FAISS (filters)

    # --- search and QA behaviour
    rerank_k: int = Field(20, ge=1)  # videos re-scored by the fusion encoder when rerank=true and none is given
    max_rerank_k: int = Field(100, ge=1)  # upper bound on a request's rerank_k (each costs a fusion pass)
    qa_max_segments: int = Field(32, ge=1)  # segments whose tokens are averaged for one QA answer

    # --- concurrency
    batch_window_ms: float = Field(3.0, ge=0)  # how long a query waits for others to share its encode_text call
    batch_max_size: int = Field(32, ge=1)  # most queries encoded in one call
    inference_threads: int = Field(2, ge=1)  # threads running model and FAISS calls off the event loop
    query_cache_size: int = Field(1024, ge=0)  # LRU of query embeddings (repeat and paged queries skip the model)
    load_in_background: bool = True  # start answering /healthz at once; /readyz is 503 until loading finishes
    reload_wait_s: float = Field(30.0, ge=0)  # how long POST /admin/reload waits for a running index job
    index_workers: int | None = Field(None, ge=0)  # decode processes for admin indexing; None = indexer default

    log_level: Literal["critical", "error", "warning", "info", "debug", "trace"] = "info"

    @field_validator("cors_origins", "library_roots", mode="before")
    @classmethod
    def _parse_list(cls, value: Any) -> Any:
        return _split_list(value)

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        # CLOVER_API_KEY="" must not mean "the key is the empty string" (anyone could send it).
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_bounds(self) -> Settings:
        if self.rerank_k > self.max_rerank_k:
            raise ValueError(f"rerank_k ({self.rerank_k}) must not exceed max_rerank_k ({self.max_rerank_k})")
        return self

    @property
    def resolved_upload_dir(self) -> Path:
        return self.upload_dir if self.upload_dir is not None else self.index_dir / "uploads"

    @property
    def allowed_roots(self) -> list[Path]:
        """Library roots plus the upload directory, resolved (symlinks followed) once."""
        roots = [*self.library_roots, self.resolved_upload_dir]
        return [Path(root).expanduser().resolve() for root in roots]
