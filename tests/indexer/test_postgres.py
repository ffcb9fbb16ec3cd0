"""The catalog on a real PostgreSQL server (a fresh database, dropped afterwards)."""

from __future__ import annotations

import os
import uuid

import pytest

from indexer.pipeline import delete_videos, index_paths, verify_index
from indexer.reader import IndexReader
from tests.indexer.conftest import BUILD_OPTIONS, assert_same_index, index_snapshot

pytestmark = pytest.mark.postgres

SERVER = os.environ.get("CLOVER_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(scope="module")
def postgres_url():
    psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed")
    try:
        admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        pytest.skip(f"no PostgreSQL server at {SERVER} ({str(error).strip().splitlines()[0]})")
    name = f"clover_test_{uuid.uuid4().hex[:12]}"
    admin.execute(f'CREATE DATABASE "{name}"')
    server = SERVER.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{server}/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_build_update_delete_on_postgres(
    postgres_url, tmp_path, library, built_index, tiny_model, fingerprint
):
    index_dir = tmp_path / "idx"
    run = lambda: index_paths(  # noqa: E731
        index_dir,
        [library],
        tiny_model,
        db_url=postgres_url,
        checkpoint_fingerprint=fingerprint,
        **BUILD_OPTIONS,
    )
    first = run()
    assert not (index_dir / "catalog.sqlite").exists()
    assert_same_index(index_snapshot(index_dir, db_url=postgres_url), index_snapshot(built_index[0]))
    assert run()["to_index"] == 0
    with IndexReader.open(index_dir, checkpoint_fingerprint=fingerprint, db_url=postgres_url) as reader:
        failed, total = reader.list_videos(status="failed", query="NOISE")
        assert total == 1 and failed[0].error.startswith("not a video")
        assert reader.stats()["catalog"].startswith("postgresql+psycopg://")
        victim = reader.list_videos(query="bikes")[0][0].video_id
    result = delete_videos(index_dir, [victim], db_url=postgres_url)
    assert result["vectors"] == first["segments"] - 5
    assert verify_index(index_dir, db_url=postgres_url)["ok"]
    # index.json remembers the (password-free) URL, so the reader finds the catalog without being told
    with IndexReader.open(index_dir) as reader:
        assert reader.num_vectors == first["segments"] - 5 and reader.video(victim) is None
