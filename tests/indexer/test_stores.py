"""Shards of fp16 embeddings and tokens, token pooling, scanning and fingerprints."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from indexer.layout import IndexPaths
from indexer.scan import ManifestError, content_fingerprint, scan_library
from indexer.stores import SegmentStore, expand_tokens, pool_tokens, pooled_token_count


def test_shards_round_trip(tmp_path):
    paths = IndexPaths(tmp_path)
    paths.create()
    store = SegmentStore(paths)
    rng = np.random.default_rng(0)
    first, second = store.new_shard_name(), store.new_shard_name()
    assert first < second  # sortable by creation
    e1, t1 = rng.standard_normal((3, 8)), rng.standard_normal((3, 4, 2))
    e2, t2 = rng.standard_normal((2, 8)), rng.standard_normal((2, 4, 2))
    assert store.write_shard(first, e1, t1) == (24 + 24) * 2
    store.write_shard(second, e2, t2)
    assert store.shard_names() == {first, second}
    got = store.read_embeddings([(second, 1), (first, 0), (first, 2)])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, np.stack([e2[1], e1[0], e1[2]]), atol=1e-2)
    np.testing.assert_allclose(store.read_tokens([(first, 1)])[0], t1[1], atol=1e-2)
    store.remove_shards([first])
    assert store.shard_names() == {second}
    assert not list(tmp_path.rglob("*.tmp-*"))


def test_token_pooling_over_time():
    grid = (4, 2, 3)  # t, h, w -> K = 24
    tokens = np.arange(2 * 24 * 5, dtype=np.float32).reshape(2, 24, 5).astype(np.float16)
    assert pooled_token_count(grid, None) == 24 and pooled_token_count(grid, 12) == 12
    with pytest.raises(ValueError, match="must be one of"):
        pooled_token_count(grid, 7)
    with pytest.raises(ValueError):
        pooled_token_count(grid, 18)  # 3 time steps do not divide 4
    pooled = pool_tokens(tokens, grid, 12)  # [2, 12, 5]: time steps (0,1) and (2,3) averaged
    grouped = tokens.astype(np.float32).reshape(2, 2, 2, 6, 5).mean(axis=2).reshape(2, 12, 5)
    np.testing.assert_allclose(pooled, grouped, rtol=1e-3)
    expanded = expand_tokens(pooled, grid)
    assert expanded.shape == (2, 24, 5)
    np.testing.assert_array_equal(expanded[:, :6], expanded[:, 6:12])
    assert expand_tokens(tokens, grid) is tokens


def test_scan_directories_and_manifests(tmp_path):
    (tmp_path / "lib" / "sub").mkdir(parents=True)
    (tmp_path / "lib" / ".hidden").mkdir()
    for name in ("a.mp4", "sub/b.MKV", "notes.txt", ".hidden/c.mp4", "sub/.d.mp4"):
        (tmp_path / "lib" / name).write_bytes(b"x")
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps({"path": "lib/a.mp4", "title": "A", "metadata": {"k": 1}}) + "\n\n")
    csv_file = tmp_path / "m.csv"
    csv_file.write_text("path,title,source\nlib/extra.bin,Extra,web\n")
    (tmp_path / "lib" / "extra.bin").write_bytes(b"y")
    files, problems = scan_library([tmp_path / "lib", jsonl, csv_file, tmp_path / "missing.mp4"])
    by_name = {os.path.basename(f.path): f for f in files}
    assert sorted(by_name) == ["a.mp4", "b.MKV", "extra.bin"]
    assert by_name["a.mp4"].title == "A" and by_name["a.mp4"].metadata == {"k": 1}
    assert by_name["extra.bin"].title == "Extra" and by_name["extra.bin"].metadata == {"source": "web"}
    assert problems == [(str(tmp_path / "missing.mp4"), "file not found")]
    bad = tmp_path / "bad.csv"
    bad.write_text("file\nx.mp4\n")
    with pytest.raises(ManifestError, match="'path' column"):
        scan_library([bad])


def test_fingerprint_sees_changes_at_either_end(tmp_path):
    path = tmp_path / "v.bin"
    data = bytearray(np.random.default_rng(0).bytes(3 << 20))
    path.write_bytes(data)
    original = content_fingerprint(str(path), len(data))
    data[10] ^= 1
    path.write_bytes(data)
    assert content_fingerprint(str(path), len(data)) != original
    data[10] ^= 1
    data[-10] ^= 1
    path.write_bytes(data)
    assert content_fingerprint(str(path), len(data)) != original
    data[-10] ^= 1
    data[len(data) // 2] ^= 1  # the middle is only seen by the full hash
    path.write_bytes(data)
    assert content_fingerprint(str(path), len(data)) == original
    assert content_fingerprint(str(path), len(data), full=True).startswith("full:")
