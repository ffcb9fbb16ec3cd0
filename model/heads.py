"""Projection and task heads of Clover (widths from the released code; see METHOD.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class VideoProjection(nn.Module):
    """Video tokens -> D: Linear -> LN -> GELU -> Linear -> LN (code: 1024 -> 1536 -> 768).

    `pooling="mean"` (the paper) averages the K tokens first. `"flatten"` feeds all K tokens concatenated, so the
    embedding keeps where and when each token was: Swin has only relative positions, and a mean over a small
    grid cannot tell "moves left" from "moves right" (used by clover-tiny, whose grid is 4 x 2 x 2).
    `"flatten+max"` also feeds the channel-wise max over the tokens: what an object looks like can then be read
    with one set of weights wherever it is, instead of learned once per token position.
    """

    POOLINGS = ("mean", "flatten", "flatten+max")

    def __init__(self, in_dim: int, hidden: int, out_dim: int, pooling: str = "mean", num_tokens: int = 1):
        super().__init__()
        if pooling not in self.POOLINGS:
            raise ValueError(f"video pooling must be one of {self.POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        width = {"mean": in_dim, "flatten": in_dim * num_tokens, "flatten+max": in_dim * (num_tokens + 1)}[pooling]
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_dim), nn.LayerNorm(out_dim)
        )

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, K, C) -> (B, D)
        if self.pooling == "mean":
            pooled = tokens.mean(dim=1)
        elif self.pooling == "flatten":
            pooled = tokens.flatten(1)
        else:
            pooled = torch.cat([tokens.flatten(1), tokens.amax(dim=1)], dim=1)
        return self.mlp(pooled)


class ClsProjection(nn.Module):
    """A [CLS] state -> D: Linear -> GELU -> Linear (text head of the code; also used for the fused [CLS])."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, in_dim), nn.GELU(), nn.Linear(in_dim, out_dim))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.mlp(cls)


class MLMHead(nn.Module):
    """BERT's MLM head; the decoder is the word-embedding matrix itself (tied), plus a free bias."""

    def __init__(self, hidden: int, vocab_size: int, eps: float = 1e-12):
        super().__init__()
        self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(hidden), word_embeddings, self.bias)  # (..., V)


class OpenQAHead(nn.Module):
    """Fused [CLS] -> answer-vocabulary logits: Dropout -> Linear -> LN -> GELU -> Linear (code: 768->384->N).

    With `video_dim` a linear readout of the video tokens' channel-wise max is added to the logits
    (heads.qa_video_skip): the MLP says which answers the question allows, the readout which of them the clip
    shows. It is the path a linear shape probe learns through; concatenating the max before the MLP (session 9)
    learned direction and size slower (docs/benchmarks.md, session 10).
    """

    def __init__(self, hidden: int, width: int, num_answers: int, dropout: float, video_dim: int = 0):
        super().__init__()
        self.video_readout = nn.Linear(video_dim, num_answers) if video_dim else None
        self.mlp = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden, width), nn.LayerNorm(width), nn.GELU(),
            nn.Linear(width, num_answers),
        )

    def forward(self, cls: torch.Tensor, video_tokens: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.mlp(cls)
        if self.video_readout is not None:
            if video_tokens is None:
                raise ValueError("this QA head also reads the video tokens: pass them")
            logits = logits + self.video_readout(video_tokens.amax(dim=1).to(cls.dtype))
        return logits


class ChoiceHead(nn.Module):
    """Fused [CLS] of "question + options + candidate" -> one score (code: 768 -> 256 -> LN -> GELU -> 1)."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, width), nn.LayerNorm(width), nn.GELU(), nn.Linear(width, 1))

    def forward(self, cls: torch.Tensor) -> torch.Tensor:
        return self.mlp(cls).squeeze(-1)
