"""`clover index ...` through `indexer.cli.main`: help, JSON summaries, exit codes."""

from __future__ import annotations

import json

import pytest

from indexer.cli import main
from tests.video_factory import write_video

SUBCOMMANDS = ["build", "update", "rebuild", "delete", "verify", "stats"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        main([command, "--help"])
    assert exited.value.code == 0
    assert f"clover index {command}" in capsys.readouterr().out


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_build_update_stats_delete_verify(tmp_path, tiny_checkpoint, capsys):
    library = tmp_path / "lib"
    write_video(library / "one.mp4", num_frames=30, seed=1)
    write_video(library / "two.mp4", num_frames=50, seed=2)
    (library / "bad.mp4").write_text("not a video")
    index = str(tmp_path / "idx")
    common = ["--index", index, "--checkpoint", str(tiny_checkpoint), "--workers", "0", "--no-progress"]

    code, built = run_json(capsys, "build", str(library), *common, "--window", "2")
    assert code == 0 and (built["indexed"], built["failed"], built["segments"]) == (2, 1, 2 + 3)
    assert built["failures"][0]["error"] == "not a video: looks like a text file"

    code, stats = run_json(capsys, "stats", "--index", index)
    assert code == 0
    assert {"videos", "segments", "failed", "vectors", "factory", "dim", "bytes_per_segment"} <= stats.keys()
    assert (stats["videos"], stats["segments"], stats["failed"], stats["vectors"]) == (3, 5, 1, 5)

    (library / "two.mp4").unlink()
    code, updated = run_json(capsys, "update", *common, "--prune")  # rescans the build's library
    assert code == 0 and (updated["pruned"], updated["to_index"], updated["segments"]) == (1, 0, 2)

    code, rebuilt = run_json(capsys, "rebuild", "--index", index, "--factory", "HNSW32")
    assert code == 0 and rebuilt["factory"] == "HNSW32" and rebuilt["vectors"] == 2

    code, deleted = run_json(capsys, "delete", str(library / "one.mp4"), "424242", "--index", index)
    assert code == 1 and deleted["deleted"] == 1 and deleted["not_found"] == ["424242"]

    code, verified = run_json(capsys, "verify", "--index", index)
    assert code == 0 and verified["ok"], verified

    assert main(["stats", "--index", index]) == 0
    assert "videos: 1" in capsys.readouterr().out


def test_clear_errors(tmp_path, tiny_checkpoint, capsys):
    assert main(["stats", "--index", str(tmp_path / "none")]) == 1
    assert "not an index" in capsys.readouterr().err
    video = write_video(tmp_path / "v.mp4", num_frames=10)
    common = ["--index", str(tmp_path / "idx"), "--checkpoint", str(tiny_checkpoint), "--workers", "0"]
    assert main(["build", str(video), *common, "--factory", "NoSuchIndex", "--no-progress"]) == 1
    assert "bad FAISS factory" in capsys.readouterr().err
    assert not (tmp_path / "idx" / "catalog.sqlite").exists()  # refused before any work
    # a factory that needs more vectors than a small library has: exact search until it can be trained
    code, built = run_json(capsys, "build", str(video), *common, "--factory", "IVF64,Flat", "--no-progress")
    assert code == 0 and built["factory"] == "Flat" and built["vectors"] == 1
    assert main(["rebuild", "--index", str(tmp_path / "idx"), "--factory", "IVF64,Flat"]) == 1
    assert "needs at least 64 vectors" in capsys.readouterr().err
    assert main(["build", str(video), *common, "--window", "9", "--no-progress"]) == 1
    assert "--window" in capsys.readouterr().err
