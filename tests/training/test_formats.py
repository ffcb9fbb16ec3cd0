"""Every manifest format read from its tiny example in tests/training/data/ (no video is opened)."""

import json
from pathlib import Path

import pytest

from training.formats import detect_format, read_any

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize(
    "name, fmt",
    [
        ("generic.jsonl", "jsonl"),
        ("generic.csv", "csv"),
        ("webvid.csv", "webvid"),
        ("cc3m.tsv", "cc3m"),
        ("MSRVTT_JSFUSION_test.csv", "msrvtt"),
        ("MSRVTT_data.json", "msrvtt-json"),
        ("didemo.json", "didemo"),
        ("qa.jsonl", "qa"),
    ],
)
def test_format_is_detected(name, fmt):
    assert detect_format(DATA / name) == fmt
    assert read_any(DATA / name) == read_any(DATA / name, fmt=fmt)


def test_generic_jsonl_delegates_to_the_data_reader():
    v0, v1 = read_any(DATA / "generic.jsonl")
    assert v0.path == str((DATA / "videos/v0.mp4").resolve())
    assert v0.captions == ["a small red circle moves left", "a little red circle slides left"]
    assert v0.questions[0]["answer"] == "red"
    assert v1.questions == []


def test_generic_csv_merges_rows_of_one_clip_and_keeps_time_ranges(tmp_path):
    a, b = read_any(DATA / "generic.csv", root=tmp_path)
    assert a.path == str((tmp_path / "clips/a.mp4").resolve())
    assert a.captions == ["a dog runs on the beach", "a dog plays in the sand"]
    assert (a.start, a.end) == (None, None)
    assert (b.video_id, b.captions, b.start, b.end) == ("b", ["a man cooks pasta"], 1.5, 4.0)


def test_csv_captions_column_holds_a_json_list(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text('video,captions\nx.mp4,"[""one"", ""two""]"\n')
    (sample,) = read_any(manifest)
    assert sample.captions == ["one", "two"]
    assert sample.path == str(tmp_path / "x.mp4")


def test_csv_without_a_caption_column_is_an_error(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nx.mp4,3\n")
    with pytest.raises(ValueError, match="caption column"):
        read_any(manifest)


def test_webvid_layout(tmp_path):
    first, second = read_any(DATA / "webvid.csv", root=tmp_path)
    assert first.path == str(tmp_path / "006001_006050" / "21179416.mp4")
    assert first.captions == ["Aerial shot of winter forest, snow"]
    assert first.video_id == "21179416" and first.meta["duration"] == "PT00H00M11S"
    assert second.path == str(tmp_path / "002151_002200" / "5629.mp4")


def test_cc3m_images_local_or_img2dataset_layout(tmp_path):
    cat, bus = read_any(DATA / "cc3m.tsv", root=tmp_path)  # the header row is skipped
    assert (cat.path, cat.captions) == (str(tmp_path / "images/cat.jpg"), ["a cat sitting on a window sill"])
    assert bus.path == str(tmp_path / "00000" / "000000001.jpg")
    assert bus.meta["url"] == "https://example.com/bus.jpg"


def test_msrvtt_1k_a_csv(tmp_path):
    samples = read_any(DATA / "MSRVTT_JSFUSION_test.csv", root=tmp_path)
    assert [s.video_id for s in samples] == ["video7579", "video7725"]
    assert samples[0].path == str(tmp_path / "video7579.mp4")
    assert samples[1].captions == ["young people sit around the edges of a room clapping and raising their arms"]


def test_msrvtt_json_groups_sentences_in_video_order(tmp_path):
    video0, video1 = read_any(DATA / "MSRVTT_data.json", root=tmp_path)
    assert video0.video_id == "video0" and video0.captions == ["a car is shown", "a cartoon car drives"]
    assert video1.captions == ["a woman talks about a car"] and video1.meta["split"] == "test"
    assert video0.path == str(tmp_path / "video0.mp4")


def test_didemo_paragraph_per_video(tmp_path):
    v1, v2 = read_any(DATA / "didemo.json", root=tmp_path)
    assert v1.captions == ["a man walks in. the man sits down."]
    assert (v1.start, v1.end) == (None, None)  # the whole video: no ground-truth proposals
    assert v2.path == str(tmp_path / "v2.mp4") and v2.captions == ["the dog barks. it runs away."]


def test_qa_rows_group_by_video(tmp_path):
    clip, other = read_any(DATA / "qa.jsonl", root=tmp_path)
    assert clip.path == str(tmp_path / "clips/a.mp4") and clip.captions == []
    open_q, choice_q = clip.questions
    assert open_q == {"type": "open", "subtype": "open", "question": "what color is the car?", "answer": "red",
                      "candidates": None, "answer_index": None}
    assert choice_q["type"] == "action" and choice_q["answer_index"] == 1
    assert other.path == str(tmp_path / "video9.mp4") and other.questions[0]["subtype"] == "count"


def test_qa_json_list_and_bad_answer(tmp_path):
    manifest = tmp_path / "qa.json"
    manifest.write_text(json.dumps([{"video": "a.mp4", "question": "q?", "answer": "x", "candidates": ["y", "z"]}]))
    with pytest.raises(ValueError, match="not among its candidates"):
        read_any(manifest)


def test_unknown_format_errors(tmp_path):
    odd = tmp_path / "list.txt"
    odd.write_text("a.mp4\n")
    with pytest.raises(ValueError, match="cannot tell the format"):
        read_any(odd)
    with pytest.raises(ValueError, match="unknown manifest format"):
        read_any(DATA / "generic.csv", fmt="parquet")
