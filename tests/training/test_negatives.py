"""Noun-swapped hard negative captions: the swapper, the collator's tensors and the objective's term."""

import random
from collections import Counter

import torch

from tests.model.helpers import deterministic_tiny_model
from training.data import TextCollator
from training.losses import nce_with_hard_negatives
from training.negatives import NounSwapper, WordVectors
from training.objective import CloverObjective, objective_config
from training.trainer import TrainingStep

CAPTIONS = ["a small red circle moves left", "a large blue square grows", "a white cross stays still while a "
            "green triangle moves up", "it moves"]


def test_each_negative_swaps_exactly_one_noun_for_another_noun_of_the_batch():
    swapper = NounSwapper()
    negatives = swapper(CAPTIONS, random.Random(0))
    assert negatives[3] is None  # no noun to swap
    tagged = [{caption[a:b] for a, b in spans} for caption, spans in zip(CAPTIONS, swapper.nouns(CAPTIONS),
                                                                      strict=True)]
    assert {"circle", "square", "cross", "triangle"} <= set().union(*tagged)
    for caption, negative, nouns in zip(CAPTIONS[:3], negatives[:3], tagged[:3], strict=True):
        changed = [(a, b) for a, b in zip(caption.split(), negative.split(), strict=True) if a != b]
        assert len(changed) == 1, (caption, negative)
        old, new = changed[0]
        assert old in nouns and new in set().union(*tagged) and old != new
    assert swapper(CAPTIONS, random.Random(0)) == negatives  # reproducible per seed
    assert len({tuple(swapper(CAPTIONS, random.Random(s))) for s in range(10)}) > 1


def test_no_negative_when_the_batch_has_a_single_noun():
    assert NounSwapper()(["a red circle", "a blue circle"], random.Random(0)) == [None, None]


def test_collator_adds_negative_tensors_reproducibly():
    model = deterministic_tiny_model()
    collate = TextCollator(model.tokenizer, 16, negatives=NounSwapper())
    items = [{"frames": torch.zeros(2, 3, 4, 4), "caption": c, "index": i, "key": i} for i, c in enumerate(CAPTIONS)]
    batch = collate(items)
    assert batch["has_negative"].tolist() == [True, True, True, False]
    assert batch["negative_input_ids"].shape[0] == 4
    assert not batch["negative_input_ids"][0].equal(batch["input_ids"][0][: batch["negative_input_ids"].shape[1]])
    assert collate(items)["negative_input_ids"].equal(batch["negative_input_ids"])


def test_objective_term_trains_the_video_tower():
    torch.manual_seed(0)
    model = deterministic_tiny_model()
    cfg = model.config
    items = [{"frames": torch.randn(cfg.num_frames, 3, cfg.image_size, cfg.image_size), "caption": c, "index": i,
              "key": i} for i, c in enumerate(CAPTIONS)]
    batch = TextCollator(model.tokenizer, 16, negatives=NounSwapper())(items)
    objective = CloverObjective(objective_config("clover", tma=False, ranking=False, mlm=False, matching=False,
                                                 caption_negatives=True))
    loss, terms = TrainingStep(model, objective)(batch, torch.Generator().manual_seed(0))
    assert set(terms) == {"caption_negatives"} and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.video_encoder.parameters())


def test_word_vectors_put_a_shape_nearer_shapes_than_a_scene_word():
    vectors = WordVectors()
    circle_to = dict(zip(["triangle", "square", "background", "video"],
                         vectors.cosines("circle", ["triangle", "square", "background", "video"]), strict=True))
    assert min(circle_to["triangle"], circle_to["square"]) > max(circle_to["background"], circle_to["video"])
    assert vectors.cosines("circle", ["circle"])[0] > 0.999  # unit vectors


def test_similarity_weighting_prefers_nouns_of_the_same_kind():
    captions = ["a red circle moves past the background", "a blue triangle on a video", "the background of a video"]
    draws = {"plain": Counter(), "similar": Counter()}
    for name, swapper in [("plain", NounSwapper()), ("similar", NounSwapper(vectors=WordVectors(), temperature=0.05))]:
        for seed in range(200):
            negative = swapper(captions, random.Random(seed))[0]
            draws[name].update(new for old, new in zip(captions[0].split(), negative.split(), strict=True)
                               if old == "circle" and new != old)
    share = {name: counts["triangle"] / max(1, sum(counts.values())) for name, counts in draws.items()}
    assert share["similar"] > 0.8 > share["plain"], (share, draws)


def test_a_word_rarely_tagged_as_a_noun_is_rarely_the_one_swapped():
    swapper = NounSwapper()
    nouns = ["moves", "circle", "square"]
    share = swapper._noun_share(["a circle moves", "it moves", "the square moves", "moves moves"], nouns)
    assert share == {"moves": 0.2, "circle": 1.0, "square": 1.0}


def test_the_term_can_use_its_own_sharper_temperature():
    torch.manual_seed(0)
    model = deterministic_tiny_model().eval()
    cfg = model.config
    items = [{"frames": torch.randn(cfg.num_frames, 3, cfg.image_size, cfg.image_size), "caption": c, "index": i,
              "key": i} for i, c in enumerate(CAPTIONS)]
    batch = TextCollator(model.tokenizer, 16, negatives=NounSwapper())(items)
    with torch.no_grad():
        video = model.encode_video(batch["frames"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        swapped = model.encode_text(batch["negative_input_ids"], batch["negative_attention_mask"])
    for tau in (0.0, 0.01):
        objective = CloverObjective(objective_config("clover", tma=False, ranking=False, mlm=False, matching=False,
                                                     caption_negatives=True, caption_negative_tau=tau))
        with torch.no_grad():
            _, terms = TrainingStep(model, objective)(batch, torch.Generator().manual_seed(0))
        expected = nce_with_hard_negatives(video, text, swapped, batch["has_negative"], tau or objective.cfg.tau)
        assert torch.allclose(terms["caption_negatives"], expected, atol=1e-5), tau
