"""Settings from CLOVER_* environment variables and from `clover serve` options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.core.config import Settings
from service.serve import build_parser, main, settings_from_args


def test_environment_fills_every_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("CLOVER_INDEX_DIR", str(tmp_path / "idx"))
    monkeypatch.setenv("CLOVER_CHECKPOINT", str(tmp_path / "ckpt"))
    monkeypatch.setenv("CLOVER_LIBRARY_ROOTS", f"{tmp_path}/a, {tmp_path}/b")
    monkeypatch.setenv("CLOVER_CORS_ORIGINS", '["http://localhost:3000"]')
    monkeypatch.setenv("CLOVER_MAX_K", "7")
    monkeypatch.setenv("CLOVER_API_KEY", "s3cret")
    s = Settings()
    assert s.index_dir == tmp_path / "idx" and s.max_k == 7
    assert s.library_roots == [tmp_path / "a", tmp_path / "b"]
    assert s.cors_origins == ["http://localhost:3000"]
    assert s.api_key is not None and s.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)  # the key never shows in logs
    assert s.resolved_upload_dir == tmp_path / "idx" / "uploads"
    assert (tmp_path / "idx" / "uploads").resolve() in s.allowed_roots


def test_empty_api_key_means_no_key(monkeypatch):
    monkeypatch.setenv("CLOVER_API_KEY", "  ")
    assert Settings(index_dir="i", checkpoint="c").api_key is None


def test_command_line_wins_over_environment(monkeypatch):
    monkeypatch.setenv("CLOVER_PORT", "9000")
    monkeypatch.setenv("CLOVER_INDEX_DIR", "/env/index")
    args = build_parser().parse_args(["--index", "/cli/index", "--checkpoint", "/c", "--library-root", "/v1",
                                      "--library-root", "/v2", "--db", "sqlite:///x.db"])
    s = settings_from_args(args)
    assert s.index_dir == Path("/cli/index") and s.port == 9000
    assert s.library_roots == [Path("/v1"), Path("/v2")] and s.db_url == "sqlite:///x.db"


def test_inconsistent_bounds_are_refused():
    with pytest.raises(ValidationError, match="rerank_k"):
        Settings(index_dir="i", checkpoint="c", rerank_k=50, max_rerank_k=10)


def test_serve_reports_missing_settings(monkeypatch, capsys):
    monkeypatch.delenv("CLOVER_INDEX_DIR", raising=False)
    monkeypatch.delenv("CLOVER_CHECKPOINT", raising=False)
    assert main([]) == 2
    assert "--index / CLOVER_INDEX_DIR" in capsys.readouterr().err
