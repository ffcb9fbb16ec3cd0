"""End-to-end indexing with the tiny model: consistency, failures, incremental updates, delete, verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from indexer.catalog import Catalog
from indexer.layout import IndexOpenError, IndexPaths, read_manifest
from indexer.pipeline import delete_videos, index_paths, rebuild_index, verify_index
from indexer.reader import IndexReader
from indexer.stores import SegmentStore
from indexer.vectors import index_ids
from tests.indexer.conftest import BROKEN_REASONS, BUILD_OPTIONS, GOOD_FILES, make_library
from tests.video_factory import write_video


def consistency(index_dir: Path) -> dict:
    """Catalog segments, FAISS ids and stored embedding rows must be the same set."""
    paths = IndexPaths(index_dir)
    catalog = Catalog(paths.default_db_url())
    try:
        locations = catalog.indexed_segment_locations()
        counts = catalog.counts()
    finally:
        catalog.dispose()
    faiss_ids = np.sort(index_ids(faiss.read_index(str(paths.vectors))))
    catalog_ids = np.array([i for i, _, _ in locations], np.int64)
    store = SegmentStore(paths)
    rows_on_disk = sum(store.shard_rows(name) for name in store.shard_names())
    embeddings = store.read_embeddings([(s, r) for _, s, r in locations]) if locations else np.zeros((0, 1))
    assert np.array_equal(faiss_ids, catalog_ids), "FAISS ids != catalog segment ids"
    assert len(set(catalog_ids.tolist())) == len(catalog_ids), "duplicate segment ids"
    if len(locations):
        norms = np.linalg.norm(embeddings.astype(np.float32), axis=1)
        assert np.allclose(norms, 1.0, atol=1e-2)
    manifest = read_manifest(paths)
    assert manifest.num_vectors == len(faiss_ids) == counts["segments"]
    return {"segments": counts["segments"], "rows_on_disk": rows_on_disk, "counts": counts}


def test_build_indexes_good_files_and_records_failures(built_index):
    index_dir, summary = built_index
    assert summary["indexed"] == len(GOOD_FILES)
    assert summary["failed"] == len(BROKEN_REASONS)
    assert summary["segments_added"] == summary["segments"] == sum(GOOD_FILES.values())
    reasons = {Path(f["path"]).name: f["error"] for f in summary["failures"]}
    assert reasons.keys() == BROKEN_REASONS.keys()
    for name, reason in BROKEN_REASONS.items():
        assert reasons[name].startswith(reason), (name, reasons[name])
    state = consistency(index_dir)
    assert state["segments"] == state["rows_on_disk"] == sum(GOOD_FILES.values())
    assert summary["scanned"] == len(GOOD_FILES) + len(BROKEN_REASONS)  # readme.txt is not a video
    json.dumps(summary)  # the service returns it as JSON


def test_segments_cover_each_video(built_index):
    index_dir, _ = built_index
    with IndexReader.open(index_dir) as reader:
        videos, total = reader.list_videos(status="indexed")
        assert total == len(GOOD_FILES)
        for video in videos:
            segments = reader.segments_of_video(video.video_id)
            assert len(segments) == GOOD_FILES[Path(video.path).name] == video.num_segments
            assert segments[0].start == 0.0 and segments[-1].end == pytest.approx(video.duration, abs=1e-3)
            for segment in segments:
                assert Path(segment.thumbnail_path).is_file()
                assert Path(segment.thumbnail_path).read_bytes()[:2] == b"\xff\xd8"  # JPEG
            assert video.indexed_at is not None and video.indexed_at.tzinfo is not None


def test_reader_api(built_index, fingerprint, tiny_model):
    index_dir, _ = built_index
    reader = IndexReader.open(index_dir, checkpoint_fingerprint=fingerprint)
    try:
        assert reader.dim == 64 and reader.num_vectors == sum(GOOD_FILES.values())
        assert reader.fingerprint == fingerprint and reader.index_dir == index_dir.resolve()
        video = reader.video(reader.list_videos(query="bikes")[0][0].video_id)
        assert video.title == "bikes" and (video.width, video.height) == (640, 272)
        assert reader.video(str(video.video_id)) == video and reader.video(video.path) == video
        assert reader.video(10**6) is None
        segments = reader.segments_of_video(video.video_id)
        ids = [s.segment_id for s in segments]
        embeddings = reader.segment_embeddings(ids)  # [S, D] float32
        assert embeddings.dtype == np.float32 and embeddings.shape == (len(ids), 64)
        scores, found = reader.search(embeddings, k=3)
        assert scores.shape == found.shape == (len(ids), 3) and found.dtype == np.int64
        assert found[:, 0].tolist() == ids  # each segment is its own nearest neighbour
        assert np.allclose(scores[:, 0], 1.0, atol=5e-3)
        scores, found = reader.search(embeddings[:1], k=100)
        assert (found[0] == -1).sum() == 100 - reader.num_vectors and np.isneginf(
            scores[0][found[0] == -1]
        ).all()
        assert reader.segments([ids[1], -1, 10**6, ids[0]]) == [segments[1], segments[0]]
        owners = reader.segment_owners(np.array([ids[1], -1, 10**6, ids[0]]))
        assert owners.tolist() == [video.video_id, -1, -1, video.video_id]  # unknown ids: -1, never an error
        assert reader.videos([video.video_id, 10**6, video.video_id]) == {video.video_id: video}
        tokens = reader.video_tokens(ids[:2])
        assert tokens.dtype == np.float16 and tokens.shape == (2, *tiny_model.video_token_shape)
        stats = reader.stats()
        assert {
            "videos",
            "segments",
            "failed",
            "vectors",
            "factory",
            "dim",
            "bytes_per_segment",
        } <= stats.keys()
        assert (stats["videos"], stats["failed"], stats["factory"]) == (11, len(BROKEN_REASONS), "Flat")
        page, total = reader.list_videos(offset=2, limit=3)
        assert len(page) == 3 and total == 11
        with pytest.raises(ValueError):
            reader.search(np.zeros((1, 5), np.float32), 3)
    finally:
        reader.close()


def test_stored_embeddings_match_the_model(built_index, tiny_model):
    """The stored vector of a segment is what encode_video gives for that window's frames."""
    import torch

    from indexer.decode import Window, window_frame_indices
    from model.transforms import VideoTransform
    from model.video_io import probe_video, read_frames

    index_dir, _ = built_index
    with IndexReader.open(index_dir) as reader:
        video = reader.list_videos(query="b.mp4")[0][0]
        segment = reader.segments_of_video(video.video_id)[1]
        stored = reader.segment_embeddings([segment.segment_id])[0]
    info = probe_video(video.path)
    indices = window_frame_indices(info, Window(1, segment.start, segment.end), tiny_model.config.num_frames)
    clip = VideoTransform(tiny_model.config.image_size)(read_frames(video.path, indices))
    with torch.inference_mode():
        expected = tiny_model.encode_video(clip[None])[0].numpy()
    np.testing.assert_allclose(stored, expected, atol=3e-3)


def test_opening_with_another_checkpoint_is_a_clear_error(built_index, tiny_model):
    index_dir, _ = built_index
    with pytest.raises(IndexOpenError, match="index built with checkpoint"):
        IndexReader.open(index_dir, checkpoint_fingerprint="0" * 64)
    with pytest.raises(IndexOpenError, match="index built with checkpoint"):
        index_paths(index_dir, [], tiny_model, checkpoint_fingerprint="0" * 64)
    with pytest.raises(IndexOpenError, match="not an index"):
        IndexReader.open(index_dir.parent / "nothing-here")


def test_fingerprint_derived_from_the_model_object(tiny_model, fingerprint):
    from indexer.pipeline import checkpoint_fingerprint_of

    assert checkpoint_fingerprint_of(tiny_model) == fingerprint


@pytest.fixture()
def own_index(tmp_path, library, tiny_model, fingerprint):
    """A private copy of the library and a fresh build of it, for tests that change things."""
    root = make_library(tmp_path / "library")
    index_dir = tmp_path / "idx"
    summary = index_paths(index_dir, [root], tiny_model, checkpoint_fingerprint=fingerprint, **BUILD_OPTIONS)
    return root, index_dir, summary


def test_incremental_update_does_exactly_the_needed_work(own_index, tiny_model, fingerprint):
    root, index_dir, first = own_index
    run = lambda **kw: index_paths(  # noqa: E731
        index_dir, [root], tiny_model, checkpoint_fingerprint=fingerprint, **{**BUILD_OPTIONS, **kw}
    )
    again = run()
    assert (again["to_index"], again["segments_added"], again["unchanged"]) == (0, 0, 11)
    rows_before = consistency(index_dir)["rows_on_disk"]

    (root / "generated" / "a.mp4").touch()  # same bytes, new mtime: no work
    write_video(root / "generated" / "b.mp4", num_frames=20, fps=10, seed=9)  # changed: 5 s -> 2 s
    write_video(root / "generated" / "new.mp4", num_frames=40, fps=10, seed=4)  # new: 4 s -> 2 segments
    (root / "samples" / "bikes.mp4").unlink()  # vanished
    update = run(prune=True)
    assert (update["new"], update["changed"], update["unchanged"], update["pruned"]) == (1, 1, 9, 1)
    assert update["to_index"] == 2 and update["segments_added"] == 1 + 2
    expected = sum(GOOD_FILES.values()) - 3 + 1 + 2 - 5
    state = consistency(index_dir)
    assert state["segments"] == expected
    assert state["rows_on_disk"] == rows_before + 3  # old rows stay until compaction
    with IndexReader.open(index_dir) as reader:
        assert reader.video(str((root / "samples" / "bikes.mp4").resolve())) is None
        assert reader.num_vectors == expected

    rebuilt = rebuild_index(index_dir, factory="HNSW32")  # compacts and switches factory without encoding
    assert rebuilt["factory"] == "HNSW32" and rebuilt["vectors"] == expected
    assert consistency(index_dir)["rows_on_disk"] == expected
    assert verify_index(index_dir)["ok"]
    with IndexReader.open(index_dir) as reader:
        assert reader.stats()["factory"] == "HNSW32" and reader.stats()["search_params"] == "efSearch=128"
        ids = [s.segment_id for s in reader.segments_of_video(reader.list_videos(query="new")[0][0].video_id)]
        assert reader.search(reader.segment_embeddings(ids), 1)[1][:, 0].tolist() == ids


def test_delete_by_id_and_path(own_index):
    root, index_dir, first = own_index
    with IndexReader.open(index_dir) as reader:
        a = reader.list_videos(query="a.mp4")[0][0]
        old = reader  # a reader opened before the delete keeps its FAISS index
        old.segment_owners([])  # and its segment -> video map, read now as the service does at open
        before = old.num_vectors
        result = delete_videos(index_dir, [a.video_id, str(root / "generated" / "sub" / "c.mkv"), "nope.mp4"])
        assert result["deleted"] == 2 and result["not_found"] == ["nope.mp4"]
        assert old.num_vectors == before  # unchanged until reopened
        ids = old.search(np.ones((1, 64), np.float32) / 8, before)[1][0]
        assert len(old.segments(ids.tolist())) == before - 3  # deleted segments are simply absent
        # the old reader's segment -> video map is as old as it; the catalog lookups are the truth
        assert (old.segment_owners(ids) == a.video_id).sum() >= 1 and a.video_id not in old.videos([a.video_id])
        present, tokens = old.present_video_tokens(ids.tolist())  # re-ranking drops them instead of failing
        assert len(present) == len(tokens) == before - 3 and present == [i for i in ids.tolist() if i in present]
        with pytest.raises(KeyError):
            old.video_tokens(ids.tolist())
    state = consistency(index_dir)
    assert state["segments"] == sum(GOOD_FILES.values()) - 3
    with IndexReader.open(index_dir) as reader:
        assert reader.video(a.video_id) is None and reader.num_vectors == state["segments"]
    assert not list((index_dir / "thumbs").rglob(f"{a.video_id}_*.jpg"))


def test_verify_and_repair(own_index, tiny_model, fingerprint):
    root, index_dir, _ = own_index
    assert verify_index(index_dir)["ok"]
    paths = IndexPaths(index_dir)
    paths.vectors.unlink()  # lost FAISS file
    shard = sorted(SegmentStore(paths).shard_names())[0]
    (paths.embeddings / f"{shard}.npy").unlink()  # lost shard: its videos must be re-encoded
    (paths.root / f"vectors.faiss.tmp-{12345}").write_bytes(b"junk")  # a killed writer's temporary
    report = verify_index(index_dir)
    assert not report["ok"]
    assert any("missing or incomplete" in p for p in report["problems"])
    assert any("vectors.faiss is missing" in p for p in report["problems"])
    repaired = verify_index(index_dir, repair=True)
    assert repaired["repaired"] and verify_index(index_dir)["problems"][0].endswith("`update` finishes them)")
    consistency(index_dir)
    update = index_paths(index_dir, [root], tiny_model, checkpoint_fingerprint=fingerprint, **BUILD_OPTIONS)
    assert update["resumed"] >= 1 and update["failed"] == 0
    assert verify_index(index_dir)["ok"]
    assert consistency(index_dir)["segments"] == sum(GOOD_FILES.values())


def test_pooled_tokens_are_expanded_for_the_model(tmp_path, tiny_model, fingerprint):
    video = write_video(tmp_path / "v.mp4", num_frames=20, fps=10, seed=5)
    grid = tiny_model.video_encoder.token_grid  # (t, h, w)
    keep = grid[1] * grid[2]  # one time step
    index_dir = tmp_path / "idx"
    index_paths(
        index_dir, [video], tiny_model, checkpoint_fingerprint=fingerprint, pool_tokens=keep, workers=0
    )
    with IndexReader.open(index_dir) as reader:
        ids = [s.segment_id for s in reader.segments_of_video(1)]
        tokens = reader.video_tokens(ids)
        assert tokens.shape == (len(ids), *tiny_model.video_token_shape)
        assert reader.stats()["bytes_per_segment"]["tokens"] == keep * tiny_model.video_token_shape[1] * 2
        per_step = tokens.reshape(len(ids), grid[0], keep, -1)
        assert np.array_equal(per_step[:, 0], per_step[:, -1])  # one pooled step repeated over time
    with pytest.raises(IndexOpenError, match="tokens per segment"):
        index_paths(index_dir, [video], tiny_model, checkpoint_fingerprint=fingerprint, pool_tokens=keep * 2)


def test_manifest_titles_and_metadata(tmp_path, library, tiny_model, fingerprint):
    manifest = tmp_path / "m.jsonl"
    rows = [
        {
            "path": str(library / "generated" / "a.mp4"),
            "title": "A red square",
            "metadata": {"tags": ["red"]},
        },
        {"path": str(library / "broken" / "zero.mp4"), "title": "Empty"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    index_dir = tmp_path / "idx"
    summary = index_paths(index_dir, [manifest], tiny_model, checkpoint_fingerprint=fingerprint, workers=0)
    assert (summary["indexed"], summary["failed"]) == (1, 1)
    with IndexReader.open(index_dir) as reader:
        video = reader.list_videos(query="red square")[0][0]
        assert video.metadata == {"tags": ["red"]} and video.status == "indexed"
        assert reader.list_videos(status="failed")[0][0].error == "zero-byte file"
    shutil.rmtree(index_dir)
