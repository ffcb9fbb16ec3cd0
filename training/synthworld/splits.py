"""Which scenes go to which split, so that the evaluation splits measure what they claim to.

- test and val: every scene has a distinct attribute set (hence a distinct canonical caption), so text-to-video
  retrieval has exactly one right answer; none of their attribute sets occurs in train (or in each other).
- test_compositional: every scene contains a held-out combination (e.g. a purple triangle) that no other split
  ever shows; its attribute sets are distinct too.
- train: the rest; repeats of an attribute set are allowed (a different layout, background and noise).

Scenes are drawn from one seeded stream in a fixed order (test, val, compositional, train), so the plan depends
only on the seed and the settings, never on the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scene import Combo, Scene, attribute_key, sample_scene

SPLITS: tuple[str, ...] = ("train", "val", "test", "test_compositional")
# Evaluation splits never take more than this share of the clips, so a small world still has most to train on.
MAX_FRACTION: dict[str, float] = {"val": 0.1, "test": 0.2, "test_compositional": 0.1}


def split_sizes(num_videos: int, requested: dict[str, int], holdout: Sequence[Combo]) -> dict[str, int]:
    """Effective clip count per split: each evaluation split gets min(requested, its share); train the rest."""
    sizes = {
        name: min(int(requested.get(name, 0)), int(num_videos * MAX_FRACTION[name])) for name in MAX_FRACTION
    }
    if not holdout:
        sizes["test_compositional"] = 0
    sizes = {"train": num_videos - sum(sizes.values()), **sizes}
    return {name: max(0, sizes[name]) for name in SPLITS}


def contains_holdout(scene: Scene, holdout: Sequence[Combo]) -> bool:
    return any(combo.matches_scene(scene) for combo in holdout)


def plan_splits(
    sizes: dict[str, int],
    seed: int,
    holdout: Sequence[Combo],
    *,
    two_object_prob: float = 0.5,
    two_phase_prob: float = 0.5,
) -> dict[str, list[Scene]]:
    """Sample every split's scenes under the rules in the module docstring."""
    rng = np.random.default_rng([seed, 0])
    plan: dict[str, list[Scene]] = {name: [] for name in SPLITS}
    eval_keys: set[tuple] = set()

    def draw(require: Combo | None) -> Scene:
        return sample_scene(
            rng, two_object_prob=two_object_prob, two_phase_prob=two_phase_prob, require=require
        )

    for name in ("test", "val", "test_compositional", "train"):
        want, unique = sizes[name], name != "train"
        # The attribute space holds millions of sets; running out of draws means impossible settings.
        budget = 1000 + 200 * want
        keys: set[tuple] = set()
        while len(plan[name]) < want:
            budget -= 1
            if budget < 0:
                raise RuntimeError(f"could not draw {want} valid scenes for split {name!r}; reduce its size")
            if name == "test_compositional":
                scene = draw(holdout[int(rng.integers(len(holdout)))])
            else:
                scene = draw(None)
                if contains_holdout(scene, holdout):
                    continue
            key = attribute_key(scene)
            if key in eval_keys or (unique and key in keys):
                continue
            keys.add(key)
            plan[name].append(scene)
        if unique:
            eval_keys |= keys
    return plan
