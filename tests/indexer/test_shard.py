"""Sharded builds and `clover index merge`: the split, the merged index against an unsharded build, idempotency."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
from sqlalchemy import select, update

from indexer.catalog import STATUS_PENDING, Catalog, Run, Video
from indexer.cli import main
from indexer.layout import IndexOpenError, IndexPaths, read_manifest, write_manifest
from indexer.merge import MergeError, merge_indexes
from indexer.pipeline import delete_videos, index_paths, verify_index
from indexer.reader import IndexReader
from indexer.shard import parse_shard, shard_from_env, shard_index_dir, shard_of
from indexer.vectors import build_index, index_ids
from tests.indexer.conftest import BROKEN_REASONS, GOOD_FILES, WINDOW, assert_same_index, index_snapshot
from tests.indexer.test_pipeline import consistency
from tests.video_factory import write_video

REPO = Path(__file__).resolve().parents[2]


def run_cli(*argv: str) -> tuple[int, dict]:
    """`clover index ... --json` in this process (fixtures cannot use capsys)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([*argv, "--json"])
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else {}


def build_args(library: Path, index: Path, checkpoint: Path) -> list[str]:
    return [
        "build", str(library), "--index", str(index), "--checkpoint", str(checkpoint), "--workers", "0",
        "--batch-size", "4", "--window", str(WINDOW), "--no-progress",
    ]  # fmt: skip


def catalog_rows(index_dir: Path) -> dict[str, tuple[str, int]]:
    """path -> (status, num_segments) of every video of an index."""
    catalog = Catalog(IndexPaths(index_dir).default_db_url(), create=False)
    try:
        with catalog.session() as session:
            rows = session.execute(select(Video.path, Video.status, Video.num_segments)).all()
    finally:
        catalog.dispose()
    return {str(p): (str(s), int(n)) for p, s, n in rows}


def run_count(index_dir: Path) -> int:
    catalog = Catalog(IndexPaths(index_dir).default_db_url(), create=False)
    try:
        with catalog.session() as session:
            return len(session.scalars(select(Run.id)).all())
    finally:
        catalog.dispose()


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, library, tiny_checkpoint) -> dict:
    """The shared library built as shards 0/2 and 1/2 through the CLI, then merged."""
    root = tmp_path_factory.mktemp("sharded")
    summaries = []
    for shard in ("0/2", "1/2"):
        code, summary = run_cli(*build_args(library, root / "idx", tiny_checkpoint), "--shard", shard)
        assert code == 0, summary
        summaries.append(summary)
    shard_dirs = sorted((root / "idx").glob("shard-*"))
    code, merged = run_cli("merge", *map(str, shard_dirs), "--into", str(root / "merged"))
    assert code == 0, merged
    return {
        "root": root,
        "shards": shard_dirs,
        "builds": summaries,
        "merged": merged,
        "into": root / "merged",
    }


# ---------------------------------------------------------------------------------------------- the split


def test_shard_specs_and_environment():
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 3 / 8 ") == (3, 8)
    for bad in ("", "1", "2/2", "-1/2", "0/0", "a/b"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    assert shard_from_env({}) is None
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None  # one process: the whole library
    assert shard_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4)
    assert shard_index_dir("idx", None) == Path("idx")
    assert shard_index_dir("idx", (2, 16)) == Path("idx/shard-002-of-016")
    assert shard_index_dir("idx/shard-002-of-016", (2, 16)) == Path("idx/shard-002-of-016")


def test_partition_is_a_stable_hash_of_the_path():
    paths = [f"/videos/{i:04d}.mp4" for i in range(2000)]
    owners = [shard_of(p, 4) for p in paths]
    expected = [int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "big") % 4 for p in paths]
    assert owners == expected  # the same in every process and every run (not Python's salted hash())
    assert min(np.bincount(owners)) > 400  # balanced in file count
    assert [shard_of(p, 4) for p in paths + ["/videos/new.mp4"]][:2000] == owners  # a new file moves nothing


def test_shards_partition_the_library_exactly(sharded, built_index):
    whole = catalog_rows(built_index[0])
    parts = [catalog_rows(d) for d in sharded["shards"]]
    assert [d.name for d in sharded["shards"]] == ["shard-000-of-002", "shard-001-of-002"]
    assert not parts[0].keys() & parts[1].keys()
    assert parts[0].keys() | parts[1].keys() == whole.keys()
    assert {**parts[0], **parts[1]} == whole  # same status and segment count per file
    for number, (directory, part) in enumerate(zip(sharded["shards"], parts, strict=True)):
        assert all(shard_of(path, 2) == number for path in part)
        assert read_manifest(IndexPaths(directory)).library_shard == f"{number}/2"
        assert sharded["builds"][number]["library_shard"] == f"{number}/2"
        assert verify_index(directory)["ok"]  # each shard is a complete index of its own
    assert sum(b["scanned"] for b in sharded["builds"]) == len(GOOD_FILES) + len(BROKEN_REASONS)


def test_a_shard_directory_keeps_its_shard(
    sharded, built_index, tiny_model, fingerprint, tiny_checkpoint, library
):
    shard_one = sharded["shards"][1]
    empty = next(k for k in range(50) if all(shard_of(p, 50) != k for p in catalog_rows(built_index[0])))
    nothing = index_paths(
        sharded["root"] / "empty", [library], tiny_model, checkpoint_fingerprint=fingerprint,
        library_shard=(empty, 50),
    )  # fmt: skip
    assert (nothing["scanned"], nothing["videos"], nothing["vectors"]) == (0, 0, 0)  # more ranks than files
    with pytest.raises(IndexOpenError, match="holds shard 1/2, not shard 0/2"):
        index_paths(
            shard_one, [library], tiny_model, checkpoint_fingerprint=fingerprint, library_shard=(0, 2)
        )
    common = [
        "--index",
        str(shard_one),
        "--checkpoint",
        str(tiny_checkpoint),
        "--workers",
        "0",
        "--no-progress",
    ]
    code, updated = run_cli("update", *common)  # no --shard: the directory's own shard, not everything
    assert code == 0 and updated["library_shard"] == "1/2"
    assert updated["scanned"] == len(catalog_rows(shard_one)) and updated["to_index"] == 0
    assert main(["build", str(library), *common, "--shard", "1/2", "--db", "sqlite:///x.db"]) == 1


# ---------------------------------------------------------------------------------------------- the merge


def test_merge_equals_an_unsharded_build(sharded, built_index):
    merged, into = sharded["merged"], sharded["into"]
    whole_dir, whole = built_index
    assert merged["missing_shards"] == [] and merged["library_shards"] == ["0/2", "1/2"]
    assert (merged["videos"], merged["segments"], merged["failed_total"]) == (
        whole["videos"],
        whole["segments"],
        whole["failed_total"],
    )
    assert merged["videos_added"] == merged["videos"] and merged["segments_copied"] == merged["segments"]
    state = consistency(into)  # FAISS ids == catalog segments == stored embeddings
    assert state["segments"] == state["rows_on_disk"] == sum(GOOD_FILES.values())
    report = verify_index(into)
    assert report["ok"] and report["problems"] == []
    manifest = read_manifest(IndexPaths(into))
    assert (
        manifest.library_shard == "" and manifest.libraries == read_manifest(IndexPaths(whole_dir)).libraries
    )
    assert_same_index(index_snapshot(into), index_snapshot(whole_dir))  # status, reasons, windows, embeddings

    rng = np.random.default_rng(0)
    queries = rng.standard_normal((8, manifest.dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    results = []
    for directory in (into, whole_dir):
        with IndexReader.open(directory) as reader:
            scores, ids = reader.search(queries, k=reader.num_vectors)
            segments = {s.segment_id: s for s in reader.segments(sorted(set(ids.ravel().tolist())))}
            videos = {s.video_id: Path(reader.video(s.video_id).path).name for s in segments.values()}
            results.append(
                [
                    {
                        (videos[segments[i].video_id], segments[i].start): s
                        for i, s in zip(row_ids, row_scores, strict=True)
                    }
                    for row_ids, row_scores in zip(ids.tolist(), scores.tolist(), strict=True)
                ]
            )
    for merged_hits, whole_hits in zip(*results, strict=True):
        assert merged_hits.keys() == whole_hits.keys()
        np.testing.assert_allclose(
            [merged_hits[key] for key in whole_hits], list(whole_hits.values()), atol=3e-3
        )
        best = max(whole_hits, key=whole_hits.get)
        runner_up = sorted(whole_hits.values())[-2]
        if whole_hits[best] - runner_up > 1e-2:  # the best moment is the same unless it is a near tie
            assert max(merged_hits, key=merged_hits.get) == best


def test_merge_again_adds_nothing(sharded, capsys):
    into = sharded["into"]
    before = catalog_rows(into)
    code = main(["merge", *map(str, sharded["shards"]), "--into", str(into)])
    assert code == 0 and "0 videos added" in capsys.readouterr().out
    runs_before = run_count(into)
    code, again = run_cli("merge", *map(str, sharded["shards"]), "--into", str(into))
    assert code == 0
    assert (again["videos_added"], again["videos_replaced"], again["runs_copied"]) == (0, 0, 0)
    assert again["videos_unchanged"] == len(before) and again["segments_copied"] == 0
    assert catalog_rows(into) == before and run_count(into) == runs_before + 1  # only the merge's own run
    assert consistency(into)["segments"] == sharded["merged"]["segments"]
    assert verify_index(into)["ok"]


def test_merge_replaces_changed_and_prunes_removed_videos(sharded, tmp_path):
    shard_copy, into = tmp_path / "shard0", tmp_path / "merged"
    shutil.copytree(sharded["shards"][0], shard_copy)
    shutil.copytree(sharded["into"], into)
    gone = min(p for p, (status, _) in catalog_rows(shard_copy).items() if status == "indexed")
    # Any other merged video (the hash partition depends on tmp paths: shard 0 may hold a single good video).
    interrupted = min(p for p, (status, _) in catalog_rows(into).items() if status == "indexed" and p != gone)
    assert delete_videos(shard_copy, [gone])["deleted"] == 1  # as an `update --prune` of the shard would
    catalog = Catalog(IndexPaths(into).default_db_url())
    try:  # as a merge killed half way through leaves a video
        with catalog.session() as session:
            session.execute(update(Video).where(Video.path == interrupted).values(status=STATUS_PENDING))
    finally:
        catalog.dispose()
    result = merge_indexes([shard_copy, sharded["shards"][1]], into, prune=True)
    assert (result["videos_pruned"], result["videos_replaced"], result["videos_added"]) == (1, 1, 0)
    rows = catalog_rows(into)
    assert gone not in rows and rows[interrupted][0] == "indexed"
    state = consistency(into)
    assert state["segments"] == sharded["merged"]["segments"] - catalog_rows(sharded["shards"][0])[gone][1]
    assert verify_index(into)["ok"]


def test_merge_refuses_what_cannot_be_merged(sharded, tmp_path, capsys):
    shard0, shard1 = sharded["shards"]
    other = tmp_path / "other-checkpoint"
    shutil.copytree(shard1, other)
    paths = IndexPaths(other)
    manifest = read_manifest(paths)
    manifest.checkpoint_fingerprint = "f" * 64
    write_manifest(paths, manifest)
    assert main(["merge", str(shard0), str(other), "--into", str(tmp_path / "out")]) == 1
    assert "only indexes of one checkpoint can be merged" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything was written

    manifest.checkpoint_fingerprint, manifest.window = (
        read_manifest(IndexPaths(shard1)).checkpoint_fingerprint,
        9.0,
    )
    write_manifest(paths, manifest)
    with pytest.raises(MergeError, match="window"):
        merge_indexes([shard0, other], tmp_path / "out")
    with pytest.raises(MergeError, match="both shard 0/2"):
        merge_indexes([shard0, shutil.copytree(shard0, tmp_path / "again")], tmp_path / "out")
    with pytest.raises(MergeError, match="one of the sources"):
        merge_indexes([shard0, shard1], shard1)
    with pytest.raises(MergeError, match="not an index"):
        merge_indexes([shard0, tmp_path / "nothing"], tmp_path / "out")
    with pytest.raises(MergeError, match="is shard 0/2"):
        merge_indexes([shard1], shard0)

    unfinished = shutil.copytree(shard0, tmp_path / "unfinished")
    manifest = read_manifest(IndexPaths(unfinished))
    manifest.library_shard = ""  # a plain index holding the same files as shard 0
    write_manifest(IndexPaths(unfinished), manifest)
    with pytest.raises(MergeError, match="is in both"):
        merge_indexes([shard0, unfinished], tmp_path / "out")
    catalog = Catalog(IndexPaths(unfinished).default_db_url())
    try:  # as a killed build leaves it
        with catalog.session() as session:
            session.execute(update(Video).values(status=STATUS_PENDING))
    finally:
        catalog.dispose()
    with pytest.raises(MergeError, match="pending videos .* run the same build again"):
        merge_indexes([unfinished, shard1], tmp_path / "out")
    assert not (tmp_path / "out").exists()

    partial = merge_indexes([shard0], tmp_path / "partial")  # allowed: the rest can be merged in later
    assert partial["missing_shards"] == ["1/2"]
    assert partial["videos"] == len(catalog_rows(shard0))


def test_merge_help(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["merge", "--help"])
    assert exited.value.code == 0 and "--into" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- FAISS on GPU


def test_faiss_trains_and_adds_on_the_gpu_when_present(monkeypatch):
    """With faiss-gpu the IVF index is trained and filled on the GPU; here the GPU is a stand-in copy."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(100, 700, dtype=np.int64)
    on_cpu = build_index(vectors, ids, "IVF8,Flat")

    moved = []

    def to_gpu(resources, device, index):
        moved.append(("to", device))
        return faiss.clone_index(index)

    def to_cpu(index):
        moved.append(("back", index.ntotal))
        return faiss.clone_index(index)

    monkeypatch.setattr(faiss, "get_num_gpus", lambda: 1)
    monkeypatch.setattr(faiss, "StandardGpuResources", object, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    monkeypatch.setattr(faiss, "index_gpu_to_cpu", to_cpu, raising=False)
    on_gpu = build_index(vectors, ids, "IVF8,Flat")
    assert moved == [("to", 0), ("back", 600)]  # trained and filled before coming back
    assert np.array_equal(np.sort(index_ids(on_gpu)), ids)
    np.testing.assert_array_equal(on_gpu.search(vectors[:20], 5)[1], on_cpu.search(vectors[:20], 5)[1])

    def no_gpu_version(resources, device, index):
        raise RuntimeError("not implemented for this index type")

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", no_gpu_version, raising=False)
    fallback = build_index(vectors, ids, "IVF8,Flat")  # the same index, built on the CPU
    np.testing.assert_array_equal(fallback.search(vectors[:20], 5)[1], on_cpu.search(vectors[:20], 5)[1])


# ---------------------------------------------------------------------------------------------- torchrun


def test_torchrun_builds_one_shard_per_rank(tmp_path, tiny_checkpoint):
    library = tmp_path / "lib"
    for seed in range(4):
        write_video(library / f"v{seed}.mp4", num_frames=20, seed=seed)
    index = tmp_path / "idx"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        "-m", "indexer.cli", *build_args(library, index, tiny_checkpoint),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    shards = sorted(index.glob("shard-*"))
    assert [s.name for s in shards] == ["shard-000-of-002", "shard-001-of-002"]
    parts = [catalog_rows(s) for s in shards]
    assert sorted([*parts[0], *parts[1]]) == sorted(str(p.resolve()) for p in library.glob("*.mp4"))
    merged = merge_indexes(shards, tmp_path / "merged")
    assert merged["videos"] == 4 and verify_index(tmp_path / "merged")["ok"]
