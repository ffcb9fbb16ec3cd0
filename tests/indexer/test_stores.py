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


def test_scan_reports_what_is_not_a_regular_utf8_file(tmp_path):
    """Symlink loops, named pipes and names that are not UTF-8 are problems with a reason, never exceptions,
    and never opened (a pipe would block the scan until a writer came)."""
    library = tmp_path / "lib"
    library.mkdir()
    (library / "good.mp4").write_bytes(b"x")
    (library / "loop_a.mp4").symlink_to(library / "loop_b.mp4")
    (library / "loop_b.mp4").symlink_to(library / "loop_a.mp4")
    os.mkfifo(library / "pipe.mp4")
    (library / "dir.mp4").mkdir()
    with open(os.fsencode(library) + b"/bad\xff\xfename.mp4", "wb") as handle:
        handle.write(b"x")
    manifest = tmp_path / "m.jsonl"
    rows = [{"path": "lib/pipe.mp4"}, {"path": "lib/dir.mp4"}, {"path": "lib/good.mp4", "title": "odd \udcff"}]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))  # json.dumps writes "\\udcff"
    files, problems = scan_library([library, manifest])
    assert [(os.path.basename(f.path), f.title) for f in files] == [("good.mp4", "odd \\udcff")]
    assert sorted((os.path.basename(path), reason) for path, reason in problems) == [
        ("bad\\xff\\xfename.mp4", "path is not valid UTF-8 (rename the file to index it)"),
        ("dir.mp4", "not a regular file (directory)"),  # named in the manifest (a walk does not list it)
        ("loop_a.mp4", "symlink loop"),
        ("loop_b.mp4", "symlink loop"),
        ("pipe.mp4", "not a regular file (named pipe)"),  # found by the walk and named in the manifest: once
    ]
    for path, _ in problems:
        path.encode("utf-8")  # reported paths are text any JSON response or database accepts


def test_fingerprint_refuses_a_named_pipe_instead_of_blocking(tmp_path):
    pipe = tmp_path / "pipe.mp4"
    os.mkfifo(pipe)
    with pytest.raises(OSError, match="not a regular file"):
        content_fingerprint(str(pipe), 0)


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
