"""Configuration of a Clover model: one dataclass per tower, composed into `CloverConfig`.

Presets live as named JSON files in `model/configs/`; `model.factory` finds them by name. A config round-trips
through `to_dict` / `from_dict`, which is what a checkpoint's `config.json` holds.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass
class VideoConfig:
    """Video Swin backbone (torchvision `SwinTransformer3d`)."""

    patch_size: tuple[int, int, int] = (2, 4, 4)  # (t, h, w) of the 3D patch embedding
    # "patch": Swin's one strided convolution per patch (official checkpoints load into it); "conv": a stack of
    # 3x3 convolutions with the same stride, for towers trained from scratch on little data (see ConvStem);
    # "pool": 3x3 convolutions downsampled by max pooling, as a small image CNN (see PoolStem)
    stem: str = "patch"
    stem_width: int = 32  # channels of the pool stem's first conv (doubled once); its cost grows with the square
    # add the stem's global max per time step, projected, to every output token: a CNN's position-free summary
    # (what a small image CNN reads shape from in ~100 steps) beside the Swin stages, which learn it far slower
    stem_global: bool = False
    embed_dim: int = 128  # channels after patch embedding; doubled by every patch merging
    depths: tuple[int, ...] = (2, 2, 18, 2)  # blocks per stage; len(depths) - 1 patch mergings
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: tuple[int, int, int] = (8, 7, 7)  # torchvision shrinks it where the grid is smaller
    mlp_ratio: float = 4.0
    drop_path: float = 0.3  # stochastic depth, linearly increasing over blocks (paper: 0.3 for Swin-B)
    dropout: float = 0.0
    attention_dropout: float = 0.0


@dataclass
class TextConfig:
    """BERT text tower. `pretrained` names a local HF directory, or `minilm` for the packaged all-MiniLM-L6-v2."""

    pretrained: str | None = None  # weights + tokenizer to start from; None = random init from the sizes below
    num_layers: int = 12  # layers kept (a pretrained model is truncated to its first num_layers)
    hidden_size: int = 768
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30522  # bert-base-uncased
    max_position_embeddings: int = 512
    max_length: int = 32  # tokens per caption or question (code: 30)
    dropout: float = 0.1
    # How a text (or the text part of a fused sequence) becomes one vector: "cls" as in the paper (BERT-base's
    # [CLS] is trained by NSP) or "mean" over real tokens for towers trained with mean pooling, such as
    # all-MiniLM-L6-v2, whose [CLS] state is the same vector for every input (cosine > 0.99999).
    pooling: str = "cls"


@dataclass
class FusionConfig:
    """Single-stream fusion encoder over [video tokens ; text tokens], initialised from the text tower."""

    num_layers: int = 3  # the paper's light fusion encoder
    init_from_text: bool = True  # copy the text encoder's first num_layers layers
    # One more video position holding the clip embedding (the video head's output): a clip-level summary the
    # fusion layers can read directly (`clover finetune --clip-token` adds it to a pretrained model).
    clip_token: bool = False
    # False: video positions attend to video positions only, text positions to both (one-way fusion). A clip's
    # video states are then the same whatever text it is fused with, so they are computed once per clip for all
    # the questions or captions fused with it (`FusionEncoder.forward`'s video_index). True is the paper's
    # single stream.
    video_attends_text: bool = True


@dataclass
class HeadConfig:
    """Projection and task heads on top of the towers."""

    video_hidden: int = 1536  # video projection MLP width (code: 1024 -> 1536 -> 768)
    video_pooling: str = "mean"  # tokens -> embedding: "mean" (paper), "flatten" (keeps positions), "flatten+max"
    qa_hidden: int = 384  # open-ended QA MLP width (code: 768 -> 384 -> N)
    mc_hidden: int = 256  # multiple-choice MLP width (code: 768 -> 256 -> 1)
    qa_dropout: float = 0.5
    # The open-QA logits also get a linear readout of the channel-wise max over the video tokens: a direct path
    # from the answer to what the tower sees, which attention through the fusion layers is slow to open.
    qa_video_skip: bool = False
    # A bag-of-words head on the same max: which caption words a clip shows (training.objective's
    # word_prediction); off in checkpoints made without it.
    word_head: bool = False
    num_answers: int = 0  # open-ended answer vocabulary size; 0 until QA fine-tuning sets it
    # Re-ranking score = fusion match log-odds + this x dual-encoder cosine (BLIP's ITM + ITC sum). 20 = 1/tau:
    # both terms are then logits, and the fusion encoder refines the dual order instead of replacing it.
    rerank_cosine_weight: float = 20.0


@dataclass
class CloverConfig:
    name: str = "clover-base"
    num_frames: int = 8  # frames sampled per clip (images are 1-frame videos)
    image_size: int = 224  # square input side after resize + centre crop
    embed_dim: int = 768  # D, the shared retrieval space
    video: VideoConfig = field(default_factory=VideoConfig)
    text: TextConfig = field(default_factory=TextConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    heads: HeadConfig = field(default_factory=HeadConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CloverConfig:
        """Build from a (possibly partial) dict; unknown keys are an error so typos never pass silently."""
        towers = {"video": VideoConfig, "text": TextConfig, "fusion": FusionConfig, "heads": HeadConfig}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in towers:
                kwargs[key] = _build(towers[key], value)
            elif key in {f.name for f in dataclasses.fields(cls)}:
                kwargs[key] = value
            else:
                raise ValueError(f"unknown Clover config field {key!r}")
        return cls(**kwargs)

    def merged(self, overrides: dict[str, Any]) -> CloverConfig:
        """A copy with overrides applied; tower overrides are dicts merged field by field."""
        data = self.to_dict()
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        return CloverConfig.from_dict(data)


def _build(cls: type, value: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    # JSON gives lists where the dataclass documents tuples; keep tuples so configs compare equal.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()})
