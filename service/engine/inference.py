"""Thin, synchronous wrappers around the Clover model calls the service makes.

They run in the inference executor (never on the event loop), under `torch.inference_mode()`, and convert
between the numpy arrays the index reader returns and the tensors the model wants, so the rest of the engine
only sees numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def encode_texts(model: Any, texts: list[str]) -> np.ndarray:
    """Text embeddings, float32 [B, D], L2-normalised by the model."""
    with torch.inference_mode():
        batch = model.tokenize(texts)
        embeddings = model.encode_text(batch["input_ids"], batch["attention_mask"])  # (B, D)
    return embeddings.float().cpu().numpy()


def _tokens_tensor(model: Any, video_tokens: np.ndarray) -> torch.Tensor:
    # fp16 tokens from the store; the model casts them to its own dtype.
    return torch.from_numpy(np.ascontiguousarray(video_tokens)).to(model_device(model))


def match_scores(model: Any, video_tokens: np.ndarray, query: str) -> np.ndarray:
    """Fusion-encoder match log-odds of one query against N cached token grids: [N, K, C] -> [N]."""
    with torch.inference_mode():
        scores = model.match_score(_tokens_tensor(model, video_tokens), query)  # (N,)
    return scores.float().cpu().numpy().reshape(-1)


def rerank_scores(model: Any, match_log_odds: np.ndarray, cosines: np.ndarray) -> np.ndarray:
    """The model's re-ranking score from match log-odds and dual-encoder cosines, both [N] -> [N]."""
    combined = model.rerank_scores(torch.from_numpy(match_log_odds).float(), torch.from_numpy(cosines).float())
    return combined.numpy()


def answer_open(model: Any, video_tokens: np.ndarray, question: str) -> np.ndarray:
    """Probabilities over the answer vocabulary for one question about one token grid: [1, K, C] -> [A]."""
    with torch.inference_mode():
        logits = model.answer_open(_tokens_tensor(model, video_tokens), [question])  # (1, A)
        probs = torch.softmax(logits.float(), dim=-1)[0]
    return probs.cpu().numpy()


def answer_choice(model: Any, video_tokens: np.ndarray, question: str, candidates: list[str]) -> np.ndarray:
    """Probabilities over the given candidates (softmax of the model's scores): [1, K, C] -> [num_candidates]."""
    with torch.inference_mode():
        scores = model.answer_choice(_tokens_tensor(model, video_tokens), [question], [candidates])  # (1, C)
        probs = torch.softmax(scores.float(), dim=-1)[0]
    return probs.cpu().numpy()
