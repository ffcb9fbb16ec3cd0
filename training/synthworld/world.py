"""Generating a whole world: plan the splits, write world.json, render clips in parallel, write the manifests.

Order matters for resuming: world.json first (a rerun with other settings is refused rather than mixing two
worlds), then clips (each atomically, existing ones skipped), then the manifests, so a directory with manifests
always has every clip they name. Captions and questions are made in the parent process from per-video seeds;
workers only render and encode, so the output does not depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .language import caption_variants
from .questions import make_questions
from .render import NOISE_STD, render_scene
from .scene import GEOMETRY, Combo, Scene
from .splits import MAX_FRACTION, SPLITS, contains_holdout, plan_splits, shape_variant_plan, split_sizes
from .vocab import vocabulary
from .writer import read_jsonl, write_json, write_jsonl, write_mp4

FORMAT_VERSION = 1
ID_PREFIX: dict[str, str] = {"train": "train", "val": "val", "test": "test", "test_compositional": "comp"}


@dataclass(frozen=True)
class WorldConfig:
    """Everything that determines the output; it is written to world.json and checked on resume."""

    num_videos: int = 1000  # clips over all splits
    seed: int = 0
    size: int = 64  # square frame side in pixels (even, for yuv420p)
    frames: int = 16  # frames per clip: 2 s at 8 fps, as SYNTHWORLD.md fixes
    fps: int = 8
    test_size: int = 500  # requested; capped at 20% of num_videos (see splits.MAX_FRACTION)
    val_size: int = 250  # capped at 10%
    compositional_size: int = 250  # capped at 10%; 0 when nothing is held out
    holdout: tuple[str, ...] = ("purple triangle",)  # combinations absent from train/val/test
    captions_per_video: int = 3  # the canonical caption plus paraphrases
    two_object_prob: float = 0.5
    two_phase_prob: float = 0.5
    crf: int = 18  # H.264 quality: visually lossless at these sizes, ~15 KB per 64 px clip
    shape_variants: int = 0  # extra train clips per scene, each with one object's shape changed (0-3)
    holdout_combos: tuple[Combo, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_videos < 1:
            raise ValueError("num_videos must be at least 1")
        if self.size < 16 or self.size % 2:
            raise ValueError("size must be an even number of pixels, at least 16")
        if self.frames < 2 or self.fps < 1:
            raise ValueError("need at least 2 frames and 1 fps")
        if self.captions_per_video < 1:
            raise ValueError("captions_per_video must be at least 1")
        if not 0 <= self.shape_variants <= 3:
            raise ValueError("shape_variants must be 0-3 (there are 4 shapes)")
        object.__setattr__(self, "holdout", tuple(self.holdout))
        object.__setattr__(self, "holdout_combos", tuple(Combo.parse(text) for text in self.holdout))

    def settings(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("holdout_combos")
        data["holdout"] = [str(c) for c in self.holdout_combos]
        if not self.shape_variants:  # worlds written before the option keep their world.json
            del data["shape_variants"]
        return data

    def split_sizes(self) -> dict[str, int]:
        requested = {
            "test": self.test_size,
            "val": self.val_size,
            "test_compositional": self.compositional_size,
        }
        return split_sizes(self.num_videos, requested, self.holdout_combos)


def world_description(config: WorldConfig, sizes: dict[str, int] | None = None) -> dict[str, Any]:
    """The world.json document: settings, split sizes, the holdout rule, vocabulary and rendering constants.

    `sizes`: the clips each split really holds (train grows by its shape variants); by default the planned ones."""
    sizes = sizes or config.split_sizes()
    description = {
        "format_version": FORMAT_VERSION,
        "generator": "training.synthworld",
        "settings": config.settings(),
        "splits": {name: {"manifest": f"{name}.jsonl", "num_videos": sizes[name]} for name in SPLITS},
        "split_rules": {
            "max_fraction": MAX_FRACTION,
            "unique_attribute_sets": ["val", "test", "test_compositional"],
            "eval_sets_absent_from_train": ["val", "test"],
            "holdout": "every scene in test_compositional has an object matching a holdout combination; no "
            "scene in train, val or test does, and no question candidate there mentions one",
        },
        "vocabulary": vocabulary(),
        "video": {
            "container": "mp4",
            "codec": "h264",
            "pix_fmt": "yuv420p",
            "size": config.size,
            "frames": config.frames,
            "fps": config.fps,
            "crf": config.crf,
        },
        "render": {
            "geometry": asdict(GEOMETRY),
            "noise_std": NOISE_STD,
            "supersample": 2,
            "coordinates": "normalised (x, y) in 0..1, origin top-left; start = centre at frame 0",
            "phases": "phases split the clip evenly in time; with two, the change is at the middle",
        },
        "captions": "captions[0] is canonical: every object (sorted by size, colour, shape, phases) as "
        "'a <size> <color> <shape> <motion> [and then <motion>]', objects joined by ' while '",
    }
    if config.shape_variants:
        description["shape_variants"] = (
            f"train only: after the train scenes come up to {config.shape_variants} copies of each with one "
            "object's shape changed and nothing else; 'group' names the scene a clip was made from"
        )
    return description


def _render_task(task: tuple[str, dict[str, Any], int, int, int, int]) -> int:
    """Worker: render one scene and write its clip (module level so worker processes can import it)."""
    path, scene, size, frames, fps, crf = task
    return write_mp4(path, render_scene(scene, size, frames), fps=fps, crf=crf)


def _records(config: WorldConfig, plan: dict[str, list[Scene]], groups: list[int]) -> dict[str, list[dict[str, Any]]]:
    """Manifest lines per split; each video's language comes from its own seed, independent of the others.

    `groups[i]`: the train scene that train clip i was made from (itself, or the scene a shape variant copies)."""
    records: dict[str, list[dict[str, Any]]] = {}

    def allowed(scene: Scene) -> bool:
        return not contains_holdout(scene, config.holdout_combos)

    for split_index, name in enumerate(SPLITS):
        records[name] = []
        for i, scene in enumerate(plan[name]):
            rng = np.random.default_rng([config.seed, 1, split_index, i])
            video_id = f"{ID_PREFIX[name]}_{i:06d}"
            group = {"group": f"{ID_PREFIX[name]}_{groups[i]:06d}"} if name == "train" and config.shape_variants else {}
            records[name].append(
                {
                    "video_id": video_id,
                    "split": name,
                    "path": f"videos/{video_id}.mp4",
                    "captions": caption_variants(scene, rng, config.captions_per_video),
                    "scene": scene.to_dict(),
                    "questions": make_questions(
                        scene, rng, None if name == "test_compositional" else allowed
                    ),
                    **group,
                }
            )
    return records


def _check_existing(out: Path, description: dict[str, Any], overwrite: bool) -> bool:
    """True when clips already in `out` belong to this same world and may be reused."""
    world_path = out / "world.json"
    if not world_path.exists():
        return False
    same = json.loads(world_path.read_text(encoding="utf-8")) == description
    if not same and not overwrite:
        raise FileExistsError(f"{world_path} describes a different world; use a new --out or --overwrite")
    return same and not overwrite


def generate_world(
    out_dir: str | Path,
    num_videos: int,
    seed: int = 0,
    *,
    workers: int | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> dict[str, Any]:
    """Write a synthetic world to `out_dir` and return a summary (split sizes, clips rendered/skipped, speed).

    `settings` are the other `WorldConfig` fields (size, frames, fps, test_size, holdout, ...). Rerunning with
    the same arguments skips finished clips; different settings in a used directory need `overwrite=True`.
    """
    config = WorldConfig(num_videos=num_videos, seed=seed, **settings)
    log = log or (lambda _msg: None)
    out = Path(out_dir)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    plan = plan_splits(
        config.split_sizes(),
        seed,
        config.holdout_combos,
        two_object_prob=config.two_object_prob,
        two_phase_prob=config.two_phase_prob,
    )
    groups = list(range(len(plan["train"])))
    for parent, variant in shape_variant_plan(plan, config.shape_variants, seed, config.holdout_combos):
        plan["train"].append(variant)
        groups.append(parent)
    records = _records(config, plan, groups)
    planned_s = time.perf_counter() - started

    description = world_description(config, {name: len(plan[name]) for name in SPLITS})
    reuse = _check_existing(out, description, overwrite)
    for stale in videos.glob(".*.tmp*"):  # leftovers of an interrupted run
        stale.unlink(missing_ok=True)
    write_json(out / "world.json", description)
    log(
        f"planned {sum(map(len, records.values()))} clips "
        + ", ".join(f"{k}={len(v)}" for k, v in records.items())
        + f" in {planned_s:.1f}s"
    )

    tasks, skipped = [], 0
    wanted = set()
    for name in SPLITS:
        for record, scene in zip(records[name], plan[name], strict=True):
            path = out / record["path"]
            wanted.add(path.name)
            if reuse and path.exists() and path.stat().st_size > 0:
                skipped += 1
                continue
            tasks.append((str(path), scene.to_dict(), config.size, config.frames, config.fps, config.crf))
    if overwrite:
        for old in videos.glob("*.mp4"):
            if old.name not in wanted:
                old.unlink()

    render_started = time.perf_counter()
    workers = max(1, min(workers or min(os.cpu_count() or 1, 4), max(1, len(tasks))))
    _run_tasks(tasks, workers, log)
    render_s = time.perf_counter() - render_started

    for name in SPLITS:
        write_jsonl(out / f"{name}.jsonl", records[name])
    summary = {
        "out_dir": str(out),
        "splits": {name: len(records[name]) for name in SPLITS},
        "rendered": len(tasks),
        "skipped": skipped,
        "workers": workers,
        "render_seconds": round(render_s, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "clips_per_s": round(len(tasks) / render_s, 2) if tasks and render_s > 0 else None,
    }
    log(
        f"rendered {len(tasks)} clips ({skipped} already there) in {render_s:.1f}s with {workers} workers"
        + (f" = {summary['clips_per_s']} clips/s" if summary["clips_per_s"] else "")
    )
    return summary


def _run_tasks(tasks: list, workers: int, log: Callable[[str], None]) -> None:
    """Render in this process (one worker) or a spawn pool; log about every 10% of the clips."""
    every = max(1, len(tasks) // 10)

    def report(done: int) -> None:
        if done % every == 0 or done == len(tasks):
            log(f"  {done}/{len(tasks)} clips")

    if workers == 1:
        for done, task in enumerate(tasks, 1):
            _render_task(task)
            report(done)
        return
    # spawn, not fork: the parent may hold threads (torch, a web server) that fork would copy half-way.
    chunksize = max(1, min(16, len(tasks) // (workers * 8)))
    with mp.get_context("spawn").Pool(workers) as pool:
        for done, _ in enumerate(pool.imap_unordered(_render_task, tasks, chunksize=chunksize), 1):
            report(done)


def load_split(out_dir: str | Path, split: str) -> list[dict[str, Any]]:
    """Read one split's manifest (`train`, `val`, `test`, `test_compositional`)."""
    return read_jsonl(Path(out_dir) / f"{split}.jsonl")
