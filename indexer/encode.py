"""The encode stage: batches of clips through the video tower, out as fp16 embeddings and tokens.

Runs under `torch.inference_mode`, with autocast (bf16 where supported, else fp16) on CUDA. Clips arrive
normalised on the CPU; they are pinned and copied asynchronously when a GPU is used.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from indexer.stores import pool_tokens


@dataclass
class EncodedBatch:
    embeddings: np.ndarray  # [B, D] float16, unit norm (before the cast)
    tokens: np.ndarray  # [B, N, C] float16, N = K or the pooled count


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def token_grid_of(model: Any) -> tuple[int, int, int]:
    """(t, h, w) of the video tokens, K = t * h * w; (1, K, 1) when the model does not say (no pooling then)."""
    grid = getattr(getattr(model, "video_encoder", None), "token_grid", None)
    if grid is not None:
        return tuple(int(g) for g in grid)
    return (1, int(model.video_token_shape[0]), 1)


class SegmentEncoder:
    def __init__(self, model: Any, stored_tokens: int | None = None, amp: bool = True):
        self.model = model.eval()
        self.device = model_device(model)
        self.token_grid = token_grid_of(model)
        self.stored_tokens = stored_tokens or int(np.prod(self.token_grid))
        self.amp = amp and self.device.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16

    def encode(self, clips: torch.Tensor) -> EncodedBatch:
        """clips [B, T, 3, S, S] float32 -> fp16 embeddings [B, D] and tokens [B, N, C]."""
        if self.device.type == "cuda":
            clips = clips.pin_memory().to(self.device, non_blocking=True)
        else:
            clips = clips.to(self.device)
        autocast = torch.autocast("cuda", dtype=self.amp_dtype) if self.amp else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            embeddings, tokens = self.model.encode_video(clips, return_tokens=True)  # [B, D], [B, K, C]
        embeddings = embeddings.float()
        embeddings = embeddings / embeddings.norm(dim=-1, keepdim=True).clamp_min(
            1e-6
        )  # re-normalise after AMP
        tokens_fp16 = tokens.to(torch.float16).cpu().numpy()
        if self.stored_tokens != tokens_fp16.shape[1]:
            tokens_fp16 = pool_tokens(tokens_fp16, self.token_grid, self.stored_tokens)
        return EncodedBatch(embeddings.to(torch.float16).cpu().numpy(), tokens_fp16)
