"""Evaluation metrics as pure functions: retrieval recall / ranks and QA accuracy.

Both report percentages (0-100), the unit the papers quote (MSR-VTT R@1 38.6, MSRVTT-QA 43.9).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

_QUERY_CHUNK = 1024  # rows of the similarity matrix compared at once: bounds memory for 10k x 10k


def _correct_mask(gt: Tensor | Sequence[int] | Sequence[Iterable[int]], shape: tuple[int, int]) -> Tensor:
    """bool [Nq, Nd]: True where document d is a correct answer to query q."""
    num_queries, num_docs = shape
    if isinstance(gt, Tensor) or (len(gt) > 0 and isinstance(gt[0], int | np.integer)):
        index = torch.as_tensor(gt, dtype=torch.long).reshape(-1)
        if index.numel() != num_queries:
            raise ValueError(f"gt has {index.numel()} entries for {num_queries} queries")
        if ((index < 0) | (index >= num_docs)).any():
            raise ValueError("gt index out of range")
        correct = torch.zeros(shape, dtype=torch.bool)
        correct[torch.arange(num_queries), index] = True
        return correct
    if len(gt) != num_queries:
        raise ValueError(f"gt has {len(gt)} entries for {num_queries} queries")
    correct = torch.zeros(shape, dtype=torch.bool)
    for query, items in enumerate(gt):
        items = list(items)
        if not items:
            raise ValueError(f"query {query} has no correct item")
        correct[query, items] = True
    return correct


def retrieval_ranks(sim: Tensor, gt: Tensor | Sequence[int] | Sequence[Iterable[int]]) -> Tensor:
    """1-based rank of the best-placed correct item for each query; long [Nq].

    sim [Nq, Nd], higher = more similar. ``gt`` is either the index of the one correct item per query, or
    one collection of correct indices per query (several captions of a video; the best counts). Ties are
    pessimistic: every incorrect item scoring at least as high as the best correct one is ranked above it,
    so a constant similarity scores rank Nd - |correct| + 1, not 1.
    """
    if sim.ndim != 2:
        raise ValueError(f"sim must be [Nq, Nd], got {tuple(sim.shape)}")
    sim = sim.detach().float().cpu()
    correct = _correct_mask(gt, tuple(sim.shape))
    ranks = []
    for start in range(0, sim.shape[0], _QUERY_CHUNK):
        block, block_correct = sim[start : start + _QUERY_CHUNK], correct[start : start + _QUERY_CHUNK]
        best = block.masked_fill(~block_correct, float("-inf")).amax(dim=1, keepdim=True)  # [n, 1]
        above = (block >= best) & ~block_correct  # incorrect items ranked before the best correct one
        ranks.append(above.sum(dim=1) + 1)
    return torch.cat(ranks)


def retrieval_metrics(
    sim: Tensor, gt: Tensor | Sequence[int] | Sequence[Iterable[int]], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """R@K (percent of queries whose correct item is in the top K), median and mean rank (1-based).

    Text-to-video: ``sim`` [texts, videos]; video-to-text: pass ``sim.T`` (with, for several captions per
    video, the set of that video's caption indices as ``gt``). See ``retrieval_ranks`` for ties.
    The median of an even count is the mean of the two middle ranks (numpy, as in CLIP4Clip's evaluation).
    """
    ranks = retrieval_ranks(sim, gt).numpy()
    metrics = {f"R@{k}": float((ranks <= k).mean() * 100.0) for k in ks}
    metrics["median_rank"] = float(np.median(ranks))
    metrics["mean_rank"] = float(ranks.mean())
    return metrics


def qa_accuracy(
    predictions: Sequence[Hashable] | Tensor,
    answers: Sequence[Hashable] | Tensor,
    types: Sequence[str] | None = None,
) -> dict[str, float]:
    """Percent of exact matches, overall and per question type (e.g. what / who / how in MSRVTT-QA).

    Predictions and answers are class indices or answer strings, compared with ``==``.
    """
    predictions = predictions.tolist() if isinstance(predictions, Tensor) else list(predictions)
    answers = answers.tolist() if isinstance(answers, Tensor) else list(answers)
    if len(predictions) != len(answers):
        raise ValueError(f"{len(predictions)} predictions for {len(answers)} answers")
    if not answers:
        raise ValueError("no questions to score")
    hits = [p == a for p, a in zip(predictions, answers, strict=True)]
    result = {"overall": 100.0 * sum(hits) / len(hits)}
    if types is not None:
        if len(types) != len(hits):
            raise ValueError(f"{len(types)} types for {len(hits)} questions")
        for kind in sorted(set(types)):
            if kind == "overall":
                raise ValueError("'overall' is reserved and cannot be a question type")
            kind_hits = [hit for hit, t in zip(hits, types, strict=True) if t == kind]
            result[kind] = 100.0 * sum(kind_hits) / len(kind_hits)
    return result
