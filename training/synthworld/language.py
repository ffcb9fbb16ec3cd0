"""Captions: one canonical sentence per scene plus paraphrases drawn from several templates and synonyms.

The canonical caption states every object's size, colour, shape and each motion phase in a fixed order (objects
sorted by their attributes), so it is a function of `scene.attribute_key` alone and serves as exact retrieval
ground truth. Paraphrases vary wording, clause order and connectives so a model cannot key on one template;
they use the concept words for colour and shape and only well-known synonyms for size and motion.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .scene import Scene, SceneObject, as_scene

SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little"), "large": ("large", "big")}
BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {"black": ("black", "dark"), "gray": ("gray", "grey")}
# Third-person verb phrases for each motion; the first is the canonical wording (the concept itself).
MOTION_WORDS: dict[str, tuple[str, ...]] = {
    "moves left": ("moves left", "slides left", "moves to the left", "goes left", "drifts left"),
    "moves right": ("moves right", "slides right", "moves to the right", "goes right", "drifts right"),
    "moves up": ("moves up", "slides up", "goes up", "rises", "moves upward"),
    "moves down": ("moves down", "slides down", "goes down", "drops", "moves downward"),
    "stays still": ("stays still", "does not move", "stays in place", "remains still", "stays put"),
    "grows": ("grows", "gets bigger", "expands", "becomes larger", "grows bigger"),
    "shrinks": ("shrinks", "gets smaller", "becomes smaller", "contracts", "shrinks down"),
}
_THEN = (
    "{a} and then {b}",
    "{a}, then {b}",
    "first {a} and then {b}",
    "{a} and afterwards {b}",
    "{a} before it {b}",
)
_ONE = ("{main}", "{main}", "there is {rel}", "a video of {rel}", "we see {rel}")
_TWO = (
    "{main1} while {main2}",
    "{main1} and {main2}",
    "{main1} as {main2}",
    "{main1}, while {main2}",
    "there are two shapes: {rel1} and {rel2}",
    "{main1}; meanwhile {main2}",
)
_BACKGROUND = ("{s} on a {bg} background", "on a {bg} background, {s}", "{s} against a {bg} background")
SIZE_DROP_PROB = 0.1  # paraphrases sometimes leave the size out, as people do
BACKGROUND_PROB = 0.3  # and sometimes mention the background


def _pick(rng: np.random.Generator, options: tuple[str, ...] | list[str]) -> str:
    return options[int(rng.integers(len(options)))]


def motion_phrase(phases: tuple[str, ...] | list[str]) -> str:
    """Canonical verb phrase of an object's phases: "moves left" or "grows and then moves up"."""
    return " and then ".join(phases)


def noun_phrase(obj: SceneObject) -> str:
    """Canonical noun phrase: "a small red circle"."""
    return f"a {obj.size} {obj.color} {obj.shape}"


def canonical_order(scene: Scene) -> list[SceneObject]:
    """Objects in the canonical caption's order (by attributes, so independent of draw order)."""
    return sorted(scene.objects, key=lambda o: o.attributes())


def canonical_caption(scene: Scene | dict[str, Any]) -> str:
    """The exact full description: "a small red circle moves left while a large blue square grows"."""
    clauses = [f"{noun_phrase(o)} {motion_phrase(o.phases)}" for o in canonical_order(as_scene(scene))]
    return " while ".join(clauses)


def _varied_noun(obj: SceneObject, rng: np.random.Generator) -> str:
    words = [] if rng.random() < SIZE_DROP_PROB else [_pick(rng, SIZE_WORDS[obj.size])]
    return " ".join(["a", *words, obj.color, obj.shape])


def _varied_verb(phases: tuple[str, ...], rng: np.random.Generator) -> str:
    verbs = [_pick(rng, MOTION_WORDS[p]) for p in phases]
    if len(verbs) == 1:
        return verbs[0]
    return _pick(rng, _THEN).format(a=verbs[0], b=verbs[1])


def paraphrase(scene: Scene | dict[str, Any], rng: np.random.Generator) -> str:
    """One random rewording of the scene's description (may equal another draw)."""
    scene = as_scene(scene)
    objects = list(scene.objects)
    if len(objects) == 2 and rng.random() < 0.5:
        objects.reverse()
    parts = [(_varied_noun(o, rng), _varied_verb(o.phases, rng)) for o in objects]
    main = [f"{n} {v}" for n, v in parts]
    rel = [f"{n} that {v}" for n, v in parts]
    if len(parts) == 1:
        sentence = _pick(rng, _ONE).format(main=main[0], rel=rel[0])
    else:
        sentence = _pick(rng, _TWO).format(main1=main[0], main2=main[1], rel1=rel[0], rel2=rel[1])
    if rng.random() < BACKGROUND_PROB:
        sentence = _pick(rng, _BACKGROUND).format(
            s=sentence, bg=_pick(rng, BACKGROUND_WORDS[scene.background])
        )
    return sentence


def caption_variants(scene: Scene | dict[str, Any], rng: np.random.Generator, n: int = 3) -> list[str]:
    """`n` distinct captions: the canonical one first, then paraphrases (fewer only if none new can be found)."""
    captions = [canonical_caption(scene)]
    for _ in range(20 * n):
        if len(captions) >= n:
            break
        text = paraphrase(scene, rng)
        if text not in captions:
            captions.append(text)
    return captions
