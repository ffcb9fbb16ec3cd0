"""Synthworld: clips decode, manifests hold, splits keep their promises, answers match scenes, motion is real."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from training.synthworld import (
    ANSWER_VOCABULARY,
    MOTIONS,
    SPLITS,
    Combo,
    Scene,
    SceneObject,
    attribute_key,
    canonical_caption,
    caption_variants,
    generate_world,
    load_split,
    make_questions,
    plan_splits,
    read_mp4,
    render_scene,
    sample_scene,
    shape_variant_plan,
    shape_variants,
    trajectory,
    write_mp4,
)
from training.synthworld.cli import main as synth_main
from training.synthworld.vocab import COLOR_RGB, COLORS, SHAPES, SIZES

SIZE, FRAMES = 32, 16
WORLD_ARGS = dict(size=SIZE, frames=FRAMES, test_size=3, val_size=1, compositional_size=1)  # of 15 clips


def _one(shape="circle", color="red", size="large", phases=("stays still",), start=(0.5, 0.5), bg="black"):
    return Scene(
        objects=(SceneObject(shape, color, size, tuple(phases), start),), background=bg, noise_seed=1
    )


def _object_pixels(video: np.ndarray, color: str) -> np.ndarray:
    """Boolean `[T, H, W]`: pixels close to the object's colour."""
    distance = np.abs(video.astype(np.int16) - np.array(COLOR_RGB[color], dtype=np.int16)).sum(-1)
    return distance < 60


def _centroids(mask: np.ndarray) -> np.ndarray:
    """(x, y) centroid per frame `[T, 2]`."""
    ys, xs = np.mgrid[: mask.shape[1], : mask.shape[2]]
    area = mask.sum((1, 2))
    assert (area > 0).all(), "object invisible in some frame"
    return np.stack([(mask * xs).sum((1, 2)) / area, (mask * ys).sum((1, 2)) / area], axis=1)


# ---------------------------------------------------------------------------------------------------- rendering


def test_render_shape_dtype_and_determinism():
    scene = sample_scene(np.random.default_rng(0))
    a, b = render_scene(scene, 48, 10), render_scene(scene.to_dict(), 48, 10)
    assert a.shape == (10, 48, 48, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    other = Scene(scene.objects, scene.background, scene.noise_seed + 1)
    assert not np.array_equal(a, render_scene(other, 48, 10)), "noise must follow the scene's noise seed"


@pytest.mark.parametrize("motion", MOTIONS)
def test_each_motion_is_visible(motion):
    video = render_scene(_one(phases=(motion,), start=(0.5, 0.5)), 64, FRAMES)
    mask = _object_pixels(video, "red")
    (x0, y0), (x1, y1) = _centroids(mask)[[0, -1]]
    area0, area1 = mask[0].sum(), mask[-1].sum()
    moved = {"moves left": x0 - x1, "moves right": x1 - x0, "moves up": y0 - y1, "moves down": y1 - y0}
    if motion in moved:
        assert moved[motion] > 10, f"{motion}: centroid moved only {moved[motion]:.1f} px"
        assert abs(area1 - area0) < 0.15 * area0
    elif motion == "grows":
        assert area1 > 2 * area0
    elif motion == "shrinks":
        assert area1 < 0.5 * area0
    else:
        assert abs(x1 - x0) < 0.5 and abs(y1 - y0) < 0.5 and abs(area1 - area0) < 0.1 * area0


def test_moves_right_centroid_increases_every_frame():
    video = render_scene(
        _one(shape="square", color="green", phases=("moves right",), start=(0.3, 0.5)), 64, FRAMES
    )
    xs = _centroids(_object_pixels(video, "green"))[:, 0]
    assert (np.diff(xs) > 0).all()


def test_two_phases_change_at_the_middle():
    scene = _one(
        shape="triangle", color="yellow", size="small", phases=("moves left", "moves up"), start=(0.7, 0.7)
    )
    xy = _centroids(_object_pixels(render_scene(scene, 64, FRAMES), "yellow"))
    half = FRAMES // 2
    first, second = xy[half - 1] - xy[0], xy[-1] - xy[half]
    assert first[0] < -8 and abs(first[1]) < 1.5  # first half: left only
    assert second[1] < -8 and abs(second[0]) < 1.5  # second half: up only


def test_sampled_objects_stay_inside_the_frame():
    rng = np.random.default_rng(1)
    for _ in range(300):
        scene = sample_scene(rng)
        for obj in scene.objects:
            centre, radius = trajectory(obj, FRAMES)
            assert (centre - radius[:, None] >= 0).all() and (centre + radius[:, None] <= 1).all(), obj
        if len(scene.objects) == 2:
            a, b = scene.objects
            assert (a.shape, a.color) != (b.shape, b.color)


# ---------------------------------------------------------------------------------------------------- language


def test_caption_variants_canonical_first_and_distinct():
    obj_a = SceneObject("circle", "red", "small", ("moves left", "moves up"), (0.5, 0.5))
    obj_b = SceneObject("square", "blue", "large", ("grows",), (0.3, 0.3))
    scene = Scene((obj_a, obj_b), "gray", 3)
    expected = "a large blue square grows while a small red circle moves left and then moves up"
    assert canonical_caption(scene) == expected
    assert canonical_caption(Scene((obj_b, obj_a), "black", 9)) == expected, "independent of draw order"
    captions = caption_variants(scene, np.random.default_rng(0), 4)
    assert captions[0] == expected and len(set(captions)) == 4
    for caption in captions[1:]:  # paraphrases still name both colours and shapes
        assert all(word in caption for word in ("red", "blue", "circle", "square"))


def test_canonical_caption_is_a_function_of_the_attribute_set():
    rng = np.random.default_rng(2)
    by_key: dict[tuple, str] = {}
    for _ in range(500):
        scene = sample_scene(rng)
        assert by_key.setdefault(attribute_key(scene), canonical_caption(scene)) == canonical_caption(scene)
    assert len(set(by_key.values())) == len(by_key)


def _referent(question: str, scene: Scene) -> tuple[SceneObject, set[str]]:
    """The one object a question's 'the ...' phrase names (asserts it is unambiguous), and the phrase's words."""
    modifier, noun = "|".join(SIZES + COLORS), "|".join((*SHAPES, "object"))
    words = set(re.findall(rf"the ((?:(?:{modifier}) )*(?:{noun}))\b", question)[0].split())
    matches = [o for o in scene.objects if {o.size, o.color, o.shape, "object"} >= words]
    assert len(matches) == 1, (question, scene)
    return matches[0], words


def test_questions_are_consistent_with_the_scene():
    rng = np.random.default_rng(3)
    seen = set()
    for _ in range(200):
        scene = sample_scene(rng)
        captions = caption_variants(scene, rng)
        for q in make_questions(scene, rng):
            seen.add((q["type"], q["subtype"]))
            if q["type"] == "open":
                assert q["candidates"] is None and q["answer"] in ANSWER_VOCABULARY
            else:
                assert len(q["candidates"]) == 5 == len(set(q["candidates"]))
                assert q["candidates"][q["answer_index"]] == q["answer"]
            if q["subtype"] == "count":
                assert q["answer"] == ["one", "two"][len(scene.objects) - 1]
                continue
            if q["subtype"] == "caption":
                assert q["answer"] == captions[0]
                continue
            obj, words = _referent(q["question"], scene)
            attr = q["subtype"] if q["subtype"] in ("color", "shape", "size") else None
            if attr:
                assert q["answer"] == getattr(obj, attr)
                assert getattr(obj, attr) not in words, "the object's name gives the answer away"
            elif q["subtype"] == "direction":
                moves = [p for p in obj.phases if p.startswith("moves")]
                assert moves == [f"moves {q['answer']}"]
            elif q["subtype"] == "action":
                assert q["answer"] == " and then ".join(obj.phases)
            elif q["subtype"] == "after":
                assert (
                    q["question"].endswith(f"{obj.phases[0]}, what does it do?")
                    or obj.phases[0] in q["question"]
                )
                assert q["answer"] == obj.phases[1]
            elif q["subtype"] == "before":
                assert q["answer"] == obj.phases[0]
    assert {t for t, _ in seen} == {"open", "action", "transition", "caption"}
    assert {s for _, s in seen} >= {"count", "color", "shape", "size", "direction", "after", "before"}


def test_questions_are_deterministic_and_shuffle_the_answer():
    scene = sample_scene(np.random.default_rng(4))
    assert make_questions(scene, np.random.default_rng(5)) == make_questions(scene, np.random.default_rng(5))
    rng = np.random.default_rng(6)
    positions = [
        q["answer_index"]
        for _ in range(40)
        for q in make_questions(sample_scene(rng), rng)
        if q["candidates"]
    ]
    assert set(positions) == set(range(5))


# ---------------------------------------------------------------------------------------------------- splits


def test_holdout_parse():
    assert Combo.parse("purple triangle") == Combo(shape="triangle", color="purple")
    assert Combo.parse("large red moves left") == Combo(color="red", size="large", motion="moves left")
    assert str(Combo.parse("triangle purple")) == "purple triangle"
    for bad in ("purple", "purple magenta", "red blue"):
        with pytest.raises(ValueError):
            Combo.parse(bad)


def test_plan_splits_unique_eval_sets_and_holdout():
    holdout = [Combo.parse("purple triangle"), Combo.parse("yellow grows")]
    sizes = {"train": 600, "val": 100, "test": 300, "test_compositional": 100}
    plan = plan_splits(sizes, seed=0, holdout=holdout)
    assert {k: len(v) for k, v in plan.items()} == sizes
    keys = {name: [attribute_key(s) for s in scenes] for name, scenes in plan.items()}
    for name in ("val", "test", "test_compositional"):
        assert len(set(keys[name])) == len(keys[name]), f"{name} repeats a caption"
    assert not set(keys["test"]) & set(keys["train"]) and not set(keys["val"]) & set(keys["train"])
    assert not set(keys["test"]) & set(keys["val"])
    assert all(any(c.matches_scene(s) for c in holdout) for s in plan["test_compositional"])
    for name in ("train", "val", "test"):
        assert not any(c.matches_scene(s) for s in plan[name] for c in holdout)
    # negatives never pair a held-out combination either (here: a yellow object that grows)
    rng = np.random.default_rng(0)
    for scene in plan["train"][:150]:
        for q in make_questions(scene, rng, allowed=lambda s: not any(c.matches_scene(s) for c in holdout)):
            if q["type"] in ("action", "transition") and _referent(q["question"], scene)[0].color == "yellow":
                assert not any("grows" in text for text in q["candidates"]), q
            for text in q["candidates"] or []:
                for clause in text.split(" while "):  # one object per clause
                    assert "purple triangle" not in clause and not re.match(r"a \w+ yellow .*grows", clause)


# ---------------------------------------------------------------------------------------------------- world on disk


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "world"
    argv = [
        "--out",
        str(out),
        "--num-videos",
        "15",
        "--seed",
        "7",
        "--workers",
        "1",
        "--size",
        str(SIZE),
        "--test-size",
        "3",
        "--val-size",
        "1",
        "--compositional-size",
        "1",
        "--quiet",
    ]
    assert synth_main(argv) == 0
    return out


def test_cli_help_documents_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        synth_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in (
        "--out",
        "--num-videos",
        "--seed",
        "--workers",
        "--size",
        "--frames",
        "--fps",
        "--test-size",
        "--holdout",
    ):
        assert option in text


def test_world_files_and_manifests(world):
    info = json.loads((world / "world.json").read_text())
    assert info["settings"]["seed"] == 7 and info["settings"]["holdout"] == ["purple triangle"]
    assert {name: s["num_videos"] for name, s in info["splits"].items()} == {
        "train": 10,
        "val": 1,
        "test": 3,
        "test_compositional": 1,
    }
    assert info["vocabulary"]["shapes"] == list(SHAPES) and info["vocabulary"]["colors"] == list(COLORS)
    ids = []
    for name in SPLITS:
        for record in load_split(world, name):
            ids.append(record["video_id"])
            assert set(record) == {"video_id", "split", "path", "captions", "scene", "questions"}
            assert record["split"] == name and (world / record["path"]).stat().st_size > 0
            assert len(record["captions"]) == 3 and record["captions"][0] == canonical_caption(
                record["scene"]
            )
            for obj in record["scene"]["objects"]:
                assert obj["shape"] in SHAPES and obj["color"] in COLORS and obj["size"] in SIZES
                assert 1 <= len(obj["phases"]) <= 2 and set(obj["phases"]) <= set(MOTIONS)
            for q in record["questions"]:
                assert set(q) == {"type", "subtype", "question", "answer", "candidates", "answer_index"}
    assert len(ids) == len(set(ids)) == 15
    assert sorted(p.name for p in (world / "videos").iterdir()) == sorted(f"{i}.mp4" for i in ids)


def test_clips_decode_as_h264_with_right_frames(world):
    record = load_split(world, "test")[0]
    path = world / record["path"]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == 8
    frames = read_mp4(path)
    assert frames.shape == (FRAMES, SIZE, SIZE, 3)
    reference = render_scene(record["scene"], SIZE, FRAMES).astype(np.int16)
    assert np.abs(frames.astype(np.int16) - reference).mean() < 6, "decoded clip must match its scene"
    for name in SPLITS:
        for rec in load_split(world, name):
            assert read_mp4(world / rec["path"]).shape == (FRAMES, SIZE, SIZE, 3)
    decord = pytest.importorskip("decord")
    reader = decord.VideoReader(str(path))
    assert len(reader) == FRAMES and reader[0].shape == (SIZE, SIZE, 3)


def test_world_splits_hold_their_promises(world):
    splits = {name: load_split(world, name) for name in SPLITS}
    for name in ("val", "test"):
        captions = [r["captions"][0] for r in splits[name]]
        assert len(captions) == len(set(captions))
    train_captions = {r["captions"][0] for r in splits["train"]}
    assert not train_captions & {r["captions"][0] for r in splits["test"] + splits["val"]}
    purple_triangle = Combo.parse("purple triangle")
    assert all(
        purple_triangle.matches_scene(Scene.from_dict(r["scene"])) for r in splits["test_compositional"]
    )
    for name in ("train", "val", "test"):
        text = json.dumps(splits[name])
        assert "purple triangle" not in text, f"{name} mentions the held-out combination"


def test_generation_is_deterministic_across_runs_and_workers(world, tmp_path):
    summary = generate_world(tmp_path / "again", 15, 7, workers=2, **WORLD_ARGS)
    assert summary["rendered"] == 15 and summary["workers"] == 2
    for name in [f"{s}.jsonl" for s in SPLITS] + ["world.json"]:
        assert (world / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    for clip in (world / "videos").iterdir():
        assert clip.read_bytes() == (tmp_path / "again" / "videos" / clip.name).read_bytes(), clip.name


def test_mp4_encoding_is_repeatable(tmp_path):
    rng = np.random.default_rng(8)
    for k in range(3):
        video = render_scene(sample_scene(rng), 64, FRAMES)
        digests = {
            hashlib.sha256(Path(tmp_path / "c.mp4").read_bytes()).hexdigest()
            for _ in range(4)
            if write_mp4(tmp_path / "c.mp4", video) > 0
        }
        assert len(digests) == 1, f"clip {k}: x264 output changed between identical encodes"


def test_resume_skips_existing_and_refuses_other_settings(tmp_path):
    out = tmp_path / "w"
    first = generate_world(
        out, 6, 1, workers=1, size=SIZE, frames=4, test_size=1, val_size=0, compositional_size=0
    )
    assert first["rendered"] == 6 and first["skipped"] == 0
    victim = sorted((out / "videos").iterdir())[0]
    victim.unlink()
    second = generate_world(
        out, 6, 1, workers=1, size=SIZE, frames=4, test_size=1, val_size=0, compositional_size=0
    )
    assert second["rendered"] == 1 and second["skipped"] == 5 and victim.exists()
    with pytest.raises(FileExistsError):
        generate_world(out, 6, 2, workers=1, size=SIZE, frames=4)
    assert not list((out / "videos").glob(".*")), "no temporary files left behind"


# ---------------------------------------------------------------------------------------------------- shape variants


def test_shape_variants_change_one_outline_and_nothing_else():
    rng = np.random.default_rng(4)
    for _ in range(30):
        scene = sample_scene(rng)
        variants = shape_variants(scene, np.random.default_rng(0))
        changed = {i for v in variants for i, (a, b) in enumerate(zip(scene.objects, v.objects, strict=True)) if a != b}
        assert len(changed) == 1  # one object, the same one in every variant
        slot = changed.pop()
        assert len(variants) == 3 or len(scene.objects) == 2  # two objects: a shape may clash with the other
        assert len({v.objects[slot].shape for v in variants} | {scene.objects[slot].shape}) == len(variants) + 1
        for variant in variants:
            assert (variant.background, variant.noise_seed) == (scene.background, scene.noise_seed)
            assert replace(variant.objects[slot], shape=scene.objects[slot].shape) == scene.objects[slot]
            assert len({(o.shape, o.color) for o in variant.objects}) == len(variant.objects)


def test_shape_variant_plan_keeps_the_split_rules():
    holdout = [Combo.parse("purple triangle")]
    sizes = {"train": 400, "val": 50, "test": 200, "test_compositional": 20}
    plan = plan_splits(sizes, seed=1, holdout=holdout)
    variants = shape_variant_plan(plan, 3, seed=1, holdout=holdout)
    eval_keys = {attribute_key(s) for name in ("val", "test") for s in plan[name]}
    assert 2.5 * 400 < len(variants) <= 3 * 400  # a few are dropped, never more than 3 a scene
    assert variants == shape_variant_plan(plan, 3, seed=1, holdout=holdout)
    for parent, variant in variants:
        assert attribute_key(variant) not in eval_keys and not holdout[0].matches_scene(variant)
        assert sum(a.shape != b.shape for a, b in zip(variant.objects, plan["train"][parent].objects, strict=True)) == 1
    assert len(shape_variant_plan(plan, 1, seed=1, holdout=holdout)) <= 400
    with pytest.raises(ValueError, match="0-3"):
        shape_variant_plan(plan, 4, seed=1, holdout=holdout)


def test_world_with_shape_variants_groups_them(world, tmp_path):
    out = tmp_path / "variants"
    assert synth_main(["--out", str(out), "--num-videos", "15", "--seed", "7", "--workers", "1", "--size",
                       str(SIZE), "--test-size", "3", "--val-size", "1", "--compositional-size", "1",
                       "--shape-variants", "2", "--quiet"]) == 0
    train = load_split(out, "train")
    info = json.loads((out / "world.json").read_text())
    assert info["splits"]["train"]["num_videos"] == len(train) and info["settings"]["shape_variants"] == 2
    originals, extra = train[:10], train[10:]
    assert [r["group"] for r in originals] == [r["video_id"] for r in originals]
    assert 10 < len(extra) <= 20 and all((out / r["path"]).exists() for r in train)
    by_id = {r["video_id"]: r for r in originals}
    for record in extra:
        source = by_id[record["group"]]
        differ = [(a["shape"], b["shape"]) for a, b in zip(source["scene"]["objects"], record["scene"]["objects"], strict=True)
                  if a != b]
        assert len(differ) == 1 and differ[0][0] != differ[0][1]
    # the same world without variants (the fixture): the same evaluation splits and original train scenes
    for name in ("val", "test", "test_compositional"):
        assert load_split(out, name) == load_split(world, name)
    assert [r["scene"] for r in originals] == [r["scene"] for r in load_split(world, "train")]
