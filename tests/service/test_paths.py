"""Which paths the service may index and serve."""

from __future__ import annotations

import os

import pytest

from service.core.errors import BadRequest, Forbidden, NotFound
from service.core.paths import resolve_request_path, safe_upload_name, servable_file, video_files_under


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "library"
    (root / "sub").mkdir(parents=True)
    (root / "a.mp4").write_bytes(b"x")
    (root / "sub" / "b.webm").write_bytes(b"x")
    (root / "notes.txt").write_text("x")
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "c.mp4").write_bytes(b"x")
    (root / "escape.mp4").symlink_to(outside / "c.mp4")
    (root / "escape_dir").symlink_to(outside)
    return root.resolve(), outside.resolve()


def test_relative_and_absolute_paths_inside_a_root(tree):
    root, _ = tree
    assert resolve_request_path("a.mp4", [root]) == root / "a.mp4"
    assert resolve_request_path(str(root / "sub" / "b.webm"), [root]) == root / "sub" / "b.webm"


@pytest.mark.parametrize("raw", ["../secret/c.mp4", "sub/../../secret/c.mp4", "a.mp4/.."])
def test_dotdot_is_refused(tree, raw):
    root, _ = tree
    with pytest.raises(BadRequest, match=r"\.\."):
        resolve_request_path(raw, [root])


def test_absolute_path_outside_and_symlink_escapes_are_forbidden(tree):
    root, outside = tree
    with pytest.raises(Forbidden):
        resolve_request_path(str(outside / "c.mp4"), [root])
    with pytest.raises(Forbidden):
        resolve_request_path("escape.mp4", [root])
    with pytest.raises(Forbidden):
        resolve_request_path("escape_dir/c.mp4", [root])
    with pytest.raises(Forbidden):
        resolve_request_path("/etc/passwd", [root])


def test_missing_inside_a_root_is_404_and_empty_is_400(tree):
    root, _ = tree
    with pytest.raises(NotFound):
        resolve_request_path("nope.mp4", [root])
    with pytest.raises(BadRequest):
        resolve_request_path("  ", [root])
    with pytest.raises(BadRequest):
        resolve_request_path("a\x00.mp4", [root])


def test_directory_expansion_skips_symlinks_out_of_the_roots_and_non_videos(tree):
    root, _ = tree
    files = video_files_under(root, [root])
    assert files == sorted([root / "a.mp4", root / "sub" / "b.webm"])
    with pytest.raises(BadRequest, match="not a video"):
        video_files_under(root / "notes.txt", [root])


def test_servable_file_checks_the_real_path(tree):
    root, outside = tree
    assert servable_file(root / "a.mp4", [root]) == root / "a.mp4"
    with pytest.raises(Forbidden):
        servable_file(root / "escape.mp4", [root])
    with pytest.raises(NotFound):
        servable_file(root / "gone.mp4", [root])


def test_safe_upload_name():
    assert safe_upload_name("../../etc/clip one.MP4") == "clip_one.mp4"
    assert safe_upload_name("C:\\videos\\x.webm") == "x.webm"
    with pytest.raises(BadRequest):
        safe_upload_name("payload.sh")
    with pytest.raises(BadRequest):
        safe_upload_name(None)
    assert os.sep not in safe_upload_name("a/b/c.mkv")
