"""Questions with known answers, in the four forms of SYNTHWORLD.md (open, action, transition, caption).

Only unambiguous questions are asked: an object is named by a description that fits it alone and never names
the attribute being asked about; a size is not asked of an object that grows or shrinks; a direction only of an
object with exactly one translation. Multiple-choice candidates are hard negatives (the other object's motion,
reversed phases, captions differing in one attribute) and the correct answer's position is shuffled. An
`allowed(scene)` predicate keeps negatives from mentioning a held-out combination (compositional split).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from itertools import combinations
from typing import Any

import numpy as np

from .language import canonical_caption, canonical_order, motion_phrase
from .scene import Scene, SceneObject, as_scene, objects_distinct
from .vocab import COLORS, COUNTS, MOTIONS, MOVE_DIRECTION, SHAPES

NUM_CANDIDATES = 5
Allowed = Callable[[Scene], bool]

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "count": (
        "how many objects are there?",
        "how many shapes are in the video?",
        "how many objects does the video show?",
    ),
    "color": ("what color is {ref}?", "what is the color of {ref}?", "which color does {ref} have?"),
    "shape": ("what shape is {ref}?", "what is the shape of {ref}?"),
    "size": ("what size is {ref}?", "is {ref} small or large?", "how big is {ref}?"),
    "direction": ("which way does {ref} move?", "in which direction does {ref} move?"),
    "action": ("what does {ref} do?", "what happens to {ref}?"),
    "after": ("what does {ref} do after it {phase}?", "after {ref} {phase}, what does it do?"),
    "before": ("what does {ref} do before it {phase}?", "before {ref} {phase}, what does it do?"),
    "caption": ("which caption describes the video?", "which sentence describes this video?"),
}
_ATTRS = ("size", "color", "shape")


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def referring_expressions(obj: SceneObject, scene: Scene, exclude: str | None = None) -> list[str]:
    """Every "the ..." phrase built from obj's size/colour/shape that fits no other object, not using `exclude`."""
    others = [o for o in scene.objects if o is not obj]
    refs = []
    for k in range(len(_ATTRS) + 1):
        for subset in combinations(_ATTRS, k):
            if exclude in subset or any(
                all(getattr(o, a) == getattr(obj, a) for a in subset) for o in others
            ):
                continue
            words = [getattr(obj, a) for a in subset]
            if "shape" not in subset:
                words.append("object")
            refs.append("the " + " ".join(words))
    return refs


def _open(subtype: str, question: str, answer: str) -> dict[str, Any]:
    return {
        "type": "open",
        "subtype": subtype,
        "question": question,
        "answer": answer,
        "candidates": None,
        "answer_index": None,
    }


def _choice(
    qtype: str, subtype: str, question: str, answer: str, negatives: list[str], rng: np.random.Generator
) -> dict[str, Any]:
    candidates = [answer, *negatives[: NUM_CANDIDATES - 1]]
    order = rng.permutation(len(candidates))
    shuffled = [candidates[i] for i in order]
    return {
        "type": qtype,
        "subtype": subtype,
        "question": question,
        "answer": answer,
        "candidates": shuffled,
        "answer_index": shuffled.index(answer),
    }


def _with_phases(scene: Scene, obj: SceneObject, phases: tuple[str, ...]) -> Scene:
    objects = tuple(replace(o, phases=phases) if o is obj else o for o in scene.objects)
    return replace(scene, objects=objects)


def _sample(rng: np.random.Generator, items: list, k: int) -> list:
    if k <= 0 or not items:
        return []
    return [items[i] for i in rng.permutation(len(items))[:k]]


def _action_negatives(
    obj: SceneObject, scene: Scene, rng: np.random.Generator, allowed: Allowed
) -> list[str]:
    """Wrong motion phrases: the other object's motion, then near misses, then anything else that is false."""
    truth = obj.phases
    singles = [(m,) for m in MOTIONS if m not in truth]  # a phase the object does perform would be half true
    pairs = [(a, b) for a in MOTIONS for b in MOTIONS if a != b and (a, b) != truth]
    if len(truth) == 2:
        p1, p2 = truth
        near = (
            [(p2, p1)]
            + [(m, p2) for m in MOTIONS if m not in truth]
            + [(p1, m) for m in MOTIONS if m not in truth]
        )
    else:
        near = singles
    hard = [
        o.phases
        for o in scene.objects
        if o is not obj and o.phases != truth and not (len(o.phases) == 1 and o.phases[0] in truth)
    ]

    def ok(phases: tuple[str, ...]) -> bool:
        return allowed(_with_phases(scene, obj, phases))

    chosen = [p for p in hard if ok(p)]
    near = [p for p in near if p not in chosen and ok(p)]
    chosen += _sample(rng, near, 2 if len(truth) == 2 else NUM_CANDIDATES - 1 - len(chosen))
    rest = [p for p in singles + pairs if p not in chosen and ok(p)]
    chosen += _sample(rng, rest, NUM_CANDIDATES - 1 - len(chosen))
    return [motion_phrase(p) for p in chosen]


def _caption_negatives(scene: Scene, rng: np.random.Generator, allowed: Allowed) -> list[str]:
    """Captions of scenes that differ from this one in exactly one respect, spread over kinds of change."""
    by_kind: dict[str, list[Scene]] = {
        kind: [] for kind in ("color", "shape", "size", "motion", "order", "count")
    }
    objs = scene.objects
    for i, obj in enumerate(objs):

        def swap(new: SceneObject, i: int = i) -> Scene:
            return replace(scene, objects=objs[:i] + (new,) + objs[i + 1 :])

        by_kind["color"] += [swap(replace(obj, color=c)) for c in COLORS if c != obj.color]
        by_kind["shape"] += [swap(replace(obj, shape=s)) for s in SHAPES if s != obj.shape]
        by_kind["size"].append(swap(replace(obj, size="large" if obj.size == "small" else "small")))
        for j in range(len(obj.phases)):
            neighbours = {obj.phases[k] for k in (j - 1, j, j + 1) if 0 <= k < len(obj.phases)}
            for m in MOTIONS:
                if m not in neighbours:
                    by_kind["motion"].append(
                        swap(replace(obj, phases=obj.phases[:j] + (m,) + obj.phases[j + 1 :]))
                    )
        if len(obj.phases) == 2:
            by_kind["order"].append(swap(replace(obj, phases=obj.phases[::-1])))
    if len(objs) == 2:
        a, b = objs
        if a.phases != b.phases:
            by_kind["motion"].append(
                replace(scene, objects=(replace(a, phases=b.phases), replace(b, phases=a.phases)))
            )
        by_kind["count"] += [replace(scene, objects=(o,)) for o in objs]

    truth = canonical_caption(scene)
    pools: list[list[str]] = []
    for kind in by_kind:
        texts = sorted(
            {canonical_caption(s) for s in by_kind[kind] if objects_distinct(s.objects) and allowed(s)}
        )
        texts = [t for t in texts if t != truth]
        if texts:
            pools.append(_sample(rng, texts, len(texts)))
    pools = _sample(rng, pools, len(pools))
    chosen: list[str] = []
    while len(chosen) < NUM_CANDIDATES - 1 and any(pools):
        for pool in pools:  # round robin over kinds, so negatives differ in different ways
            while pool and pool[0] in chosen:
                pool.pop(0)
            if pool and len(chosen) < NUM_CANDIDATES - 1:
                chosen.append(pool.pop(0))
    return chosen


def make_questions(
    scene: Scene | dict[str, Any], rng: np.random.Generator, allowed: Allowed | None = None
) -> list[dict[str, Any]]:
    """All unambiguous questions about `scene`, each {type, subtype, question, answer, candidates, answer_index}."""
    scene = as_scene(scene)
    allowed = allowed or (lambda _scene: True)
    questions = [_open("count", _pick(rng, _TEMPLATES["count"]), COUNTS[len(scene.objects) - 1])]
    for obj in canonical_order(scene):
        for attr in ("color", "shape", "size"):
            refs = referring_expressions(obj, scene, exclude=attr)
            if not refs or (attr == "size" and {"grows", "shrinks"} & set(obj.phases)):
                continue
            questions.append(
                _open(attr, _pick(rng, _TEMPLATES[attr]).format(ref=_pick(rng, refs)), getattr(obj, attr))
            )
        refs = referring_expressions(obj, scene)
        moves = [MOVE_DIRECTION[p] for p in obj.phases if p in MOVE_DIRECTION]
        if len(moves) == 1:
            question = _pick(rng, _TEMPLATES["direction"]).format(ref=_pick(rng, refs))
            questions.append(_open("direction", question, moves[0]))
        negatives = _action_negatives(obj, scene, rng, allowed)
        question = _pick(rng, _TEMPLATES["action"]).format(ref=_pick(rng, refs))
        questions.append(_choice("action", "action", question, motion_phrase(obj.phases), negatives, rng))
        if len(obj.phases) == 2:
            for subtype, known, answer in (
                ("after", obj.phases[0], obj.phases[1]),
                ("before", obj.phases[1], obj.phases[0]),
            ):
                others = [m for m in MOTIONS if m != answer]
                pairs = [(known, m) if subtype == "after" else (m, known) for m in others]
                wrong = [
                    m
                    for m, p in zip(others, pairs, strict=True)
                    if m != known and allowed(_with_phases(scene, obj, p))
                ]
                wrong = ([known] if allowed(_with_phases(scene, obj, (known,))) else []) + wrong
                negatives = _sample(rng, wrong, NUM_CANDIDATES - 1)
                question = _pick(rng, _TEMPLATES[subtype]).format(ref=_pick(rng, refs), phase=known)
                questions.append(_choice("transition", subtype, question, answer, negatives, rng))
    negatives = _caption_negatives(scene, rng, allowed)
    if len(negatives) == NUM_CANDIDATES - 1:
        questions.append(
            _choice(
                "caption",
                "caption",
                _pick(rng, _TEMPLATES["caption"]),
                canonical_caption(scene),
                negatives,
                rng,
            )
        )
    return [q for q in questions if q["candidates"] is None or len(q["candidates"]) == NUM_CANDIDATES]
