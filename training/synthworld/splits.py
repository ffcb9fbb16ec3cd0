"""Which scenes go to which split, so that the evaluation splits measure what they claim to.

- test and val: every scene has a distinct attribute set (hence a distinct canonical caption), so text-to-video
  retrieval has exactly one right answer; none of their attribute sets occurs in train (or in each other).
- test_compositional: every scene contains a held-out combination (e.g. a purple triangle) that no other split
  ever shows; its attribute sets are distinct too.
- train: the rest; repeats of an attribute set are allowed (a different layout, background and noise).
  Optionally (`shape_variant_plan`) each train scene is joined by copies of itself with one object's shape
  changed, under the same rules: no held-out combination, no attribute set of val or test.

Scenes are drawn from one seeded stream in a fixed order (test, val, compositional, train), so the plan depends
only on the seed and the settings, never on the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .scene import Combo, Scene, attribute_key, sample_scene, shape_variants

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


def shape_variant_plan(plan: dict[str, list[Scene]], count: int, seed: int,
                       holdout: Sequence[Combo]) -> list[tuple[int, Scene]]:
    """Up to `count` shape variants of every train scene, as (index of the train scene, variant).

    A variant is the scene with one object's outline changed and nothing else (`scene.shape_variants`), so a
    batch that holds a scene and its variants asks the contrastive terms for shape the way a label would, through
    the captions alone. Variants that would show a held-out combination or repeat an attribute set of val or test
    are dropped."""
    if not 0 <= count <= 3:
        raise ValueError(f"shape variants per scene must be 0-3 (there are 4 shapes), got {count}")
    eval_keys = {attribute_key(s) for name in ("val", "test") for s in plan[name]}
    out = []
    for index, scene in enumerate(plan["train"]):
        rng = np.random.default_rng([seed, 2, index])
        variants = [v for v in shape_variants(scene, rng)
                    if not contains_holdout(v, holdout) and attribute_key(v) not in eval_keys]
        order = rng.permutation(len(variants))[:count]
        out += [(index, variants[i]) for i in sorted(order)]
    return out
