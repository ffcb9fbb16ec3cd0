"""Synthworld: the synthetic video-language world (SYNTHWORLD.md) that Clover trains, evaluates and demos on.

Scenes of one or two coloured shapes with one or two motion phases are sampled (`scene`), drawn with numpy
(`render`), described by compositional captions (`language`) and questioned (`questions`); `splits` decides
which scenes go where and `world` writes H.264 clips and JSONL manifests (`writer`). `cli` is `clover synth`.

    from training.synthworld import generate_world, sample_scene, render_scene, caption_variants
    summary = generate_world("data/synth", num_videos=200, seed=0, size=64)
"""

from .language import canonical_caption, caption_variants, motion_phrase, paraphrase
from .questions import make_questions, referring_expressions
from .render import render_scene
from .scene import (
    GEOMETRY,
    Combo,
    Geometry,
    Scene,
    SceneObject,
    attribute_key,
    sample_scene,
    shape_variants,
    trajectory,
)
from .splits import SPLITS, plan_splits, shape_variant_plan, split_sizes
from .vocab import ANSWER_VOCABULARY, BACKGROUNDS, COLORS, MOTIONS, SHAPES, SIZES, vocabulary
from .world import WorldConfig, generate_world, load_split, world_description
from .writer import read_jsonl, read_mp4, write_jsonl, write_mp4

__all__ = [
    "ANSWER_VOCABULARY",
    "BACKGROUNDS",
    "COLORS",
    "GEOMETRY",
    "MOTIONS",
    "SHAPES",
    "SIZES",
    "SPLITS",
    "Combo",
    "Geometry",
    "Scene",
    "SceneObject",
    "WorldConfig",
    "attribute_key",
    "canonical_caption",
    "caption_variants",
    "generate_world",
    "load_split",
    "make_questions",
    "motion_phrase",
    "paraphrase",
    "plan_splits",
    "read_jsonl",
    "read_mp4",
    "referring_expressions",
    "render_scene",
    "sample_scene",
    "shape_variant_plan",
    "shape_variants",
    "split_sizes",
    "trajectory",
    "vocabulary",
    "world_description",
    "write_jsonl",
    "write_mp4",
]
