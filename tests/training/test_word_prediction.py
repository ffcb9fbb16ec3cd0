"""The video-side bag-of-words term: its targets, and that it trains the video tower through the word head."""

import pytest
import torch

from tests.model.helpers import tiny_model
from training.data import TextCollator
from training.objective import CloverObjective, objective_config, word_piece_ids
from training.trainer import TrainingStep

CAPTIONS = ["a small red circle moves left.", "a large blue square grows while a white cross stays still"]


def _batch(model):
    cfg = model.config
    items = [{"frames": torch.randn(cfg.num_frames, 3, cfg.image_size, cfg.image_size), "caption": c, "index": i,
              "key": i} for i, c in enumerate(CAPTIONS)]
    return TextCollator(model.tokenizer, 24)(items)


def _objective():
    return CloverObjective(objective_config("clover", tma=False, ranking=False, mlm=False, matching=False,
                                            word_prediction=1.0))


def test_targets_are_the_words_of_each_caption_without_specials_or_punctuation():
    torch.manual_seed(0)
    model = tiny_model(heads={"word_head": True})
    batch = _batch(model)
    targets = _objective()._word_targets(model, batch["input_ids"], batch["attention_mask"])
    words = [set(model.tokenizer.convert_ids_to_tokens(row.nonzero().flatten().tolist())) for row in targets]
    assert words[0] == {"a", "small", "red", "circle", "moves", "left"}
    assert {"blue", "square", "while", "white", "cross", "still"} <= words[1] and "circle" not in words[1]
    keep = word_piece_ids(model.tokenizer, model.text_encoder.config.vocab_size)
    assert not keep[model.tokenizer.all_special_ids].any() and not keep[model.tokenizer.convert_tokens_to_ids(".")]


def test_term_trains_the_video_tower_and_the_word_head():
    torch.manual_seed(0)
    model = tiny_model(heads={"word_head": True})
    loss, terms = TrainingStep(model, _objective())(_batch(model), torch.Generator().manual_seed(0))
    assert set(terms) == {"words"} and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.video_encoder.parameters())
    assert model.word_head.weight.grad.abs().sum() > 0


def test_a_model_without_the_word_head_says_so():
    model = tiny_model()
    assert model.word_head is None
    with pytest.raises(RuntimeError, match="word head"):
        TrainingStep(model, _objective())(_batch(model), torch.Generator().manual_seed(0))


def test_the_word_head_survives_a_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    model = tiny_model(heads={"word_head": True}).eval()
    tokens = torch.randn(2, *model.video_token_shape)
    model.save_pretrained(tmp_path / "ckpt")
    loaded = type(model).from_pretrained(tmp_path / "ckpt").eval()
    assert loaded.config.heads.word_head
    torch.testing.assert_close(loaded.word_logits(tokens.half()), model.word_logits(tokens.half()))
