"""Scenes: what a video shows, sampled from the concepts and placed so every motion stays in view.

A `Scene` is the complete recipe of a clip: rendering it again (at any size or frame count) gives the same
picture, so the manifest's `scene` field is enough to reproduce or re-render any video. Positions are in
normalised image coordinates (0..1, x right, y down) so a scene does not depend on the pixel size.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .vocab import BACKGROUNDS, COLORS, MOTIONS, MOVE_VECTORS, SHAPES, SIZES


@dataclass(frozen=True)
class Geometry:
    """Sizes and speeds, chosen so motion is obvious at 32-64 px and every object stays inside the frame."""

    radius_small: float = 0.10  # half-extent of a small object: ~13 px wide at 64 px
    radius_large: float = 0.17  # large objects are clearly bigger (~22 px) yet two fit side by side
    move_one_phase: float = 0.40  # a single "moves ..." phase crosses 40% of the frame in 2 s
    move_two_phase: float = 0.30  # each of two phases has half the time, so slightly less distance
    grow_factor: float = 1.7  # "grows" scales the object up by this over its phase
    shrink_factor: float = 0.55  # "shrinks" scales it down (a small one stays >= 7 px wide at 64 px)
    margin: float = 0.02  # gap kept between an object's extent and the frame border

    def radius(self, size: str) -> float:
        return self.radius_small if size == "small" else self.radius_large


GEOMETRY = Geometry()

# Time points used when checking whether two objects overlap; independent of the rendered frame count so a
# scene (and hence a manifest) does not change when the clip is rendered with more frames.
_CHECK_STEPS = 17


@dataclass(frozen=True)
class SceneObject:
    """One shape with its attributes, its motion phases and its starting centre."""

    shape: str
    color: str
    size: str
    phases: tuple[str, ...]  # one or two motions; consecutive phases differ
    start: tuple[float, float] = (0.5, 0.5)  # normalised (x, y) of the centre at frame 0

    def attributes(self) -> tuple[str, str, str, tuple[str, ...]]:
        """What a caption states about the object (everything but the position)."""
        return (self.size, self.color, self.shape, self.phases)


@dataclass(frozen=True)
class Scene:
    """Objects (drawn in this order), the background and the seed of the pixel noise."""

    objects: tuple[SceneObject, ...]
    background: str = "black"
    noise_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "objects": [
                {
                    "shape": o.shape,
                    "color": o.color,
                    "size": o.size,
                    "phases": list(o.phases),
                    "start": [o.start[0], o.start[1]],
                }
                for o in self.objects
            ],
            "background": self.background,
            "noise_seed": self.noise_seed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scene:
        objects = tuple(
            SceneObject(
                shape=o["shape"],
                color=o["color"],
                size=o["size"],
                phases=tuple(o["phases"]),
                start=(float(o["start"][0]), float(o["start"][1])),
            )
            for o in data["objects"]
        )
        return cls(objects=objects, background=data["background"], noise_seed=int(data["noise_seed"]))


def as_scene(scene: Scene | dict[str, Any]) -> Scene:
    """Accept either a `Scene` or its manifest dict."""
    return scene if isinstance(scene, Scene) else Scene.from_dict(scene)


def attribute_key(scene: Scene) -> tuple:
    """Order-free identity of what the captions say: two scenes with equal keys get the same canonical caption."""
    return tuple(sorted(o.attributes() for o in scene.objects))


@dataclass(frozen=True)
class Combo:
    """A combination of attribute values, e.g. "purple triangle", used for the compositional holdout.

    An object matches when it has every given value (a motion matches when it is any of the object's phases);
    a scene matches when any of its objects does.
    """

    shape: str | None = None
    color: str | None = None
    size: str | None = None
    motion: str | None = None

    @classmethod
    def parse(cls, text: str) -> Combo:
        """Parse "purple triangle", "large circle grows", "red moves left" (words of the vocabulary)."""
        words = text.lower().replace("+", " ").split()
        values: dict[str, str] = {}
        i = 0
        while i < len(words):
            two = " ".join(words[i : i + 2])
            if two in MOTIONS:
                slot, value, i = "motion", two, i + 2
            elif words[i] in MOTIONS:
                slot, value, i = "motion", words[i], i + 1
            elif words[i] in SHAPES:
                slot, value, i = "shape", words[i], i + 1
            elif words[i] in COLORS:
                slot, value, i = "color", words[i], i + 1
            elif words[i] in SIZES:
                slot, value, i = "size", words[i], i + 1
            else:
                raise ValueError(f"holdout {text!r}: {words[i]!r} is not a shape, colour, size or motion")
            if slot in values:
                raise ValueError(f"holdout {text!r} gives two values for {slot}")
            values[slot] = value
        if len(values) < 2:
            raise ValueError(f"holdout {text!r} must combine at least two attribute values")
        return cls(**values)

    def __str__(self) -> str:
        return " ".join(v for v in (self.size, self.color, self.shape, self.motion) if v is not None)

    def matches(self, obj: SceneObject) -> bool:
        return (
            (self.shape is None or obj.shape == self.shape)
            and (self.color is None or obj.color == self.color)
            and (self.size is None or obj.size == self.size)
            and (self.motion is None or self.motion in obj.phases)
        )

    def matches_scene(self, scene: Scene) -> bool:
        return any(self.matches(o) for o in scene.objects)

    def apply(self, obj: SceneObject, rng: np.random.Generator) -> SceneObject:
        """Force `obj` to have this combination (used to sample the compositional split directly)."""
        phases = obj.phases
        if self.motion is not None and self.motion not in phases:
            slot = int(rng.integers(len(phases)))
            phases = phases[:slot] + (self.motion,) + phases[slot + 1 :]
        return replace(
            obj,
            shape=self.shape or obj.shape,
            color=self.color or obj.color,
            size=self.size or obj.size,
            phases=phases,
        )


def objects_distinct(objects: tuple[SceneObject, ...] | list[SceneObject]) -> bool:
    """Two objects must differ in shape or colour, so "the red circle" always names exactly one of them."""
    pairs = [(o.shape, o.color) for o in objects]
    return len(set(pairs)) == len(pairs)


def shape_variants(scene: Scene, rng: np.random.Generator) -> list[Scene]:
    """The same scene with one object (drawn by `rng`) given each other shape, in `SHAPES` order.

    Layout, colour, size, motion, background and noise stay as they are, so a variant differs from its scene in
    the object's outline alone (a counterfactual minimal pair). Variants whose objects would no longer be
    distinct are left out."""
    slot = int(rng.integers(len(scene.objects)))
    variants = []
    for shape in SHAPES:
        if shape == scene.objects[slot].shape:
            continue
        objects = list(scene.objects)
        objects[slot] = replace(objects[slot], shape=shape)
        if objects_distinct(objects):
            variants.append(replace(scene, objects=tuple(objects)))
    return variants


def phase_keyframes(obj: SceneObject, geometry: Geometry = GEOMETRY) -> tuple[np.ndarray, np.ndarray]:
    """Centre offsets `[P+1, 2]` and scales `[P+1]` at the phase boundaries (start, change, end)."""
    move = geometry.move_one_phase if len(obj.phases) == 1 else geometry.move_two_phase
    offsets, scales = [np.zeros(2)], [1.0]
    for motion in obj.phases:
        step = np.array(MOVE_VECTORS.get(motion, (0.0, 0.0))) * move
        factor = {"grows": geometry.grow_factor, "shrinks": geometry.shrink_factor}.get(motion, 1.0)
        offsets.append(offsets[-1] + step)
        scales.append(scales[-1] * factor)
    return np.stack(offsets), np.array(scales)


def trajectory(
    obj: SceneObject, num_frames: int, geometry: Geometry = GEOMETRY
) -> tuple[np.ndarray, np.ndarray]:
    """Centre `[T, 2]` and radius `[T]` of `obj` at each frame; phases split the clip evenly in time.

    Position moves linearly within a phase and size changes geometrically, so growth looks steady.
    """
    offsets, scales = phase_keyframes(obj, geometry)
    num_phases = len(obj.phases)
    u = np.linspace(0.0, 1.0, num_frames) if num_frames > 1 else np.zeros(1)  # (T,) clip time in [0, 1]
    pos = u * num_phases  # (T,) position on the phase axis
    k = np.minimum(pos.astype(int), num_phases - 1)  # phase index of each frame
    frac = pos - k  # progress within that phase
    centre = np.asarray(obj.start) + offsets[k] + (offsets[k + 1] - offsets[k]) * frac[:, None]  # (T, 2)
    scale = scales[k] * (scales[k + 1] / scales[k]) ** frac  # (T,)
    return centre, geometry.radius(obj.size) * scale


def _start_range(obj: SceneObject, geometry: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis interval of start centres that keep the whole trajectory inside the frame."""
    offsets, scales = phase_keyframes(obj, geometry)
    reach = geometry.radius(obj.size) * scales.max() + geometry.margin
    low = reach - offsets.min(axis=0)
    high = 1.0 - reach - offsets.max(axis=0)
    return low, np.maximum(high, low)


def _place(obj: SceneObject, rng: np.random.Generator, geometry: Geometry) -> SceneObject:
    low, high = _start_range(obj, geometry)
    xy = low + (high - low) * rng.random(2)
    return replace(obj, start=(round(float(xy[0]), 3), round(float(xy[1]), 3)))


def _separation(objects: list[SceneObject], geometry: Geometry) -> float:
    """Smallest gap between two objects' bounding circles over the clip (negative when they overlap)."""
    (c1, r1), (c2, r2) = (trajectory(o, _CHECK_STEPS, geometry) for o in objects)
    return float((np.linalg.norm(c1 - c2, axis=1) - (r1 + r2)).min())


def _sample_object(rng: np.random.Generator, two_phase_prob: float) -> SceneObject:
    first = MOTIONS[rng.integers(len(MOTIONS))]
    phases: tuple[str, ...] = (first,)
    if rng.random() < two_phase_prob:
        rest = [m for m in MOTIONS if m != first]
        phases = (first, rest[rng.integers(len(rest))])
    return SceneObject(
        shape=SHAPES[rng.integers(len(SHAPES))],
        color=COLORS[rng.integers(len(COLORS))],
        size=SIZES[rng.integers(len(SIZES))],
        phases=phases,
    )


def sample_scene(
    rng: np.random.Generator,
    *,
    two_object_prob: float = 0.5,
    two_phase_prob: float = 0.5,
    require: Combo | None = None,
    geometry: Geometry = GEOMETRY,
    placement_tries: int = 24,
) -> Scene:
    """Draw a random scene; `require` forces one object to have a combination (compositional split).

    Two objects are placed so their paths do not overlap when some of `placement_tries` layouts allow it;
    otherwise the layout with the largest gap is kept (they may then cross, as real objects do).
    """
    num_objects = 2 if rng.random() < two_object_prob else 1
    while True:
        objects = [_sample_object(rng, two_phase_prob) for _ in range(num_objects)]
        if require is not None:
            slot = int(rng.integers(num_objects))
            objects[slot] = require.apply(objects[slot], rng)
        if objects_distinct(objects):
            break
    background = BACKGROUNDS[rng.integers(len(BACKGROUNDS))]
    noise_seed = int(rng.integers(2**31))
    placed = [_place(o, rng, geometry) for o in objects]
    if num_objects == 2:
        best, best_gap = placed, _separation(placed, geometry)
        for _ in range(placement_tries - 1):
            if best_gap >= 0.0:
                break
            placed = [_place(o, rng, geometry) for o in objects]
            gap = _separation(placed, geometry)
            if gap > best_gap:
                best, best_gap = placed, gap
        placed = best
    return Scene(objects=tuple(placed), background=background, noise_seed=noise_seed)
