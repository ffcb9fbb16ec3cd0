"""Evaluation: text<->video retrieval (with fusion re-ranking) and open-ended / multiple-choice QA accuracy.

The pipeline is reader -> encoder -> scorer. Every video of a split is decoded once (`ClipReader`, a Dataset so
a DataLoader's workers decode while the model encodes) and encoded once into a unit embedding and the token
grid the indexer would cache; everything after that -- similarity, re-ranking, QA -- runs from those two
tensors, exactly as the service answers from an index.

- Retrieval: one query per video (its first, canonical caption), or every caption (`all_captions`).
  Text->video and video->text R@1/5/10, median and mean rank (`training.metrics.retrieval_metrics`).
- Re-ranking: for each text query the dual encoder's top `rerank_k` videos are re-scored by the fusion
  encoder (`model.match_score`) and re-ordered by `model.rerank_scores` (those log-odds + the weighted dual
  cosine), ties keeping the dual order; videos below
  `rerank_k` keep their places. This is what `service` does with `rerank=true`.
- Multi-clip test-time averaging (`num_clips`): C clips of `num_frames` frames, their positions evenly offset
  inside the same temporal segments (`model.transforms.sample_indices(num_clips=C)`); embeddings are averaged
  and re-normalised, the token grid of the middle clip is kept for re-ranking and QA.
- QA: open-ended questions by `model.answer_open` over `model.answer_vocab` (skipped, with a note, when the
  checkpoint has no QA head); questions with candidates by `model.answer_choice`, per type and subtype; the
  "caption" type also retrieval-style (MSRVTT-MC): the candidate whose text embedding is closest to the video.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from model import Clover
from model.transforms import VideoTransform
from model.video_io import VideoDecodeError

from .data import Sample, decode_clip
from .metrics import qa_accuracy, retrieval_metrics

log = logging.getLogger(__name__)

NO_QA_HEAD = "checkpoint has no open-ended QA head (fine-tune with `clover finetune --task open-qa` or `qa`)"
DUAL_CHOICE_TYPES = ("caption",)  # MC types also answered retrieval-style with the dual encoder


# ---- reader -----------------------------------------------------------------------------------------------


class ClipReader(Dataset):
    """Sample i -> {"index": i, "clips": float [C, T, 3, S, S]} or {"index": i, "error": reason}.

    One decode of C*T uniform frames gives all C clips: the (j*C + c)-th of C*T equal segments' centre is
    exactly where `sample_indices(num_clips=C)` puts clip c's frame j, so clip c is frames c, C+c, 2C+c, ...
    """

    def __init__(self, samples: list[Sample], num_frames: int, image_size: int, num_clips: int = 1):
        if num_clips < 1:
            raise ValueError("num_clips must be at least 1")
        self.samples, self.num_frames, self.num_clips = samples, num_frames, num_clips
        self.image_size = image_size
        self.transform = VideoTransform(image_size)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.samples[index]
        try:
            frames = decode_clip(sample, self.num_frames * self.num_clips, short_side=self.image_size)
        except VideoDecodeError as err:
            return {"index": index, "error": str(err)}
        except Exception as err:  # one hostile file must not end an evaluation
            return {"index": index, "error": f"{type(err).__name__}: {err}"}
        video = self.transform(frames)  # (T*C, 3, S, S), frame-major
        video = video.view(self.num_frames, self.num_clips, *video.shape[1:]).transpose(0, 1)  # (C, T, 3, S, S)
        return {"index": index, "clips": video.contiguous()}


def _collate_clips(items: list[dict]) -> dict[str, Any]:
    good = [item for item in items if "clips" in item]
    return {
        "index": [item["index"] for item in good],
        "clips": torch.stack([item["clips"] for item in good]) if good else None,  # (B, C, T, 3, S, S)
        "errors": {item["index"]: item["error"] for item in items if "error" in item},
    }


# ---- encoder ----------------------------------------------------------------------------------------------


@dataclass
class EncodedVideos:
    """Row r describes `samples[index[r]]`; videos that failed to decode are in `errors` instead."""

    index: list[int]
    embeddings: Tensor  # (N, D) float32, unit, CPU
    tokens: Tensor | None  # (N, K, C) CPU, `token_dtype` (fp16 by default: what the indexer stores)
    errors: dict[int, str] = field(default_factory=dict)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


class _EvalMode:
    """Eval mode inside, the previous train/eval mode restored after."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.was_training = model, model.training

    def __enter__(self):
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def encode_videos(
    model: Clover,
    samples: list[Sample],
    num_clips: int = 1,
    batch_size: int = 32,
    workers: int = 0,
    keep_tokens: bool = True,
    token_dtype: torch.dtype = torch.float16,
    progress: bool = False,
) -> EncodedVideos:
    """Embeddings (clip-averaged) and the middle clip's token grid for every sample; `batch_size` in clips."""
    reader = ClipReader(samples, model.config.num_frames, model.config.image_size, num_clips)
    per_batch = max(1, batch_size // num_clips)  # videos per forward pass: bounds clips in memory
    loader = DataLoader(reader, batch_size=per_batch, num_workers=workers, collate_fn=_collate_clips)
    device = model.device
    index: list[int] = []
    embeddings: list[Tensor] = []
    tokens: list[Tensor] = []
    errors: dict[int, str] = {}
    bar = _progress(progress, len(samples), "encode videos")
    with _EvalMode(model), torch.inference_mode():
        for batch in loader:
            errors.update(batch["errors"])
            if bar:
                bar.update(len(batch["index"]) + len(batch["errors"]))
            if batch["clips"] is None:
                continue
            clips = batch["clips"].to(device, non_blocking=True)
            b, c = clips.shape[:2]
            with _autocast(device):
                emb, tok = model.encode_video(clips.flatten(0, 1), return_tokens=True)  # (B*C, D), (B*C, K, Ch)
            emb = F.normalize(emb.float().view(b, c, -1).mean(dim=1), dim=-1)  # (B, D)
            embeddings.append(emb.cpu())
            if keep_tokens:
                tokens.append(tok.view(b, c, *tok.shape[1:])[:, c // 2].to(token_dtype).cpu())  # (B, K, Ch)
            index += batch["index"]
    if bar:
        bar.close()
    for i, reason in sorted(errors.items()):
        log.warning("video %s not evaluated: %s", samples[i].path, reason)
    dim = model.config.embed_dim
    return EncodedVideos(
        index=index,
        embeddings=torch.cat(embeddings) if embeddings else torch.zeros(0, dim),
        tokens=(torch.cat(tokens) if tokens else None) if keep_tokens else None,
        errors=errors,
    )


def encode_texts(model: Clover, texts: list[str], batch_size: int = 256, max_length: int | None = None) -> Tensor:
    """Unit text embeddings, float32 (N, D) on the CPU."""
    out = []
    device = model.device
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = model.tokenize(texts[start : start + batch_size], max_length=max_length)
            with _autocast(device):
                out.append(model.encode_text(batch["input_ids"], batch["attention_mask"]).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.config.embed_dim)


# ---- retrieval --------------------------------------------------------------------------------------------


def retrieval_queries(captions: list[list[str]], all_captions: bool = False):
    """-> (texts, text_to_video [Nq], video_to_texts [Nv] lists): the first caption of each video, or all."""
    texts, text_to_video = [], []
    video_to_texts: list[list[int]] = []
    for video, options in enumerate(captions):
        chosen = options if all_captions else options[:1]
        video_to_texts.append(list(range(len(texts), len(texts) + len(chosen))))
        texts += chosen
        text_to_video += [video] * len(chosen)
    return texts, text_to_video, video_to_texts


def rerank_similarity(
    model: Clover, sim: Tensor, video_tokens: Tensor, texts: list[str], k: int, batch_size: int = 64
) -> tuple[Tensor, Tensor, Tensor]:
    """Re-rank each text's top-k videos by `model.rerank_scores` (fusion match log-odds + weighted cosine).

    sim (Nq, Nv) dual-encoder cosines -> (reranked (Nq, Nv), top_k (Nq, k) video indices in dual order,
    match (Nq, k) log-odds). In `reranked` the top-k entries are replaced by row_max + (k - position) for
    their new positions -- above every other video, in re-rank score order with ties kept in dual order -- and
    every entry below k is unchanged, so `retrieval_metrics(reranked, gt)` scores the re-ranked lists.
    """
    num_queries, num_videos = sim.shape
    k = min(k, num_videos)
    top_scores, top_k = sim.topk(k, dim=1)  # (Nq, k), descending dual score
    match = torch.empty(num_queries, k)
    queries_per_call = max(1, batch_size // k)
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, num_queries, queries_per_call):
            rows = top_k[start : start + queries_per_call]  # (q, k)
            pair_texts = [texts[start + r] for r in range(rows.shape[0]) for _ in range(k)]
            with _autocast(model.device):
                scores = model.match_score(video_tokens[rows.flatten()].to(model.device), pair_texts)  # (q*k,)
            match[start : start + rows.shape[0]] = scores.float().cpu().view(-1, k)
    combined = model.rerank_scores(match, top_scores.float().cpu())
    order = torch.sort(combined, dim=1, descending=True, stable=True).indices  # stable: ties keep dual order
    reranked = sim.clone().float()
    ceiling = sim.float().max(dim=1, keepdim=True).values  # (Nq, 1)
    position_score = ceiling + torch.arange(k, 0, -1, dtype=torch.float32)  # (Nq, k): best first
    reranked.scatter_(1, top_k.gather(1, order), position_score)
    return reranked, top_k, match


def evaluate_retrieval(
    model: Clover,
    encoded: EncodedVideos,
    captions: list[list[str]],
    rerank_k: int = 10,
    all_captions: bool = False,
    batch_size: int = 64,
    text_max_length: int | None = None,
) -> dict[str, Any]:
    """Retrieval metrics over the encoded videos; `captions[r]` are the captions of row r."""
    texts, text_to_video, video_to_texts = retrieval_queries(captions, all_captions)
    if not texts:
        return {"skipped": "no captions"}
    text_e = encode_texts(model, texts, max_length=text_max_length)
    sim = text_e @ encoded.embeddings.T  # (Nq, Nv) cosine
    with_text = [v for v, t in enumerate(video_to_texts) if t]
    result: dict[str, Any] = {
        "num_queries": len(texts),
        "t2v": retrieval_metrics(sim, text_to_video),
        "v2t": retrieval_metrics(sim.T[with_text], [video_to_texts[v] for v in with_text]),
    }
    if rerank_k > 0 and encoded.tokens is not None:
        reranked, _, _ = rerank_similarity(model, sim, encoded.tokens, texts, rerank_k, batch_size)
        result["t2v_rerank"] = retrieval_metrics(reranked, text_to_video)
        result["rerank_k"] = min(rerank_k, sim.shape[1])
    return result


# ---- QA ---------------------------------------------------------------------------------------------------


def normalise_answer(answer: str) -> str:
    """Lower case, single spaces: how answers are compared everywhere (vocabulary, training, evaluation)."""
    return " ".join(str(answer).lower().split())


def _accuracy(predictions: list, answers: list, qtype: str, subtypes: list[str]) -> dict[str, Any]:
    # Subtype keys only when they say more than the type itself.
    types = subtypes if set(subtypes) - {qtype} else None
    return {**qa_accuracy(predictions, answers, types), "num_questions": len(answers)}


def predict_open(model: Clover, tokens: Tensor, questions: list[str], batch_size: int = 64) -> list[str]:
    """The argmax answer of `model.answer_vocab` for each (token grid, question)."""
    predictions: list[str] = []
    with _EvalMode(model), torch.inference_mode():
        for start in range(0, len(questions), batch_size):
            with _autocast(model.device):
                logits = model.answer_open(tokens[start : start + batch_size].to(model.device),
                                           questions[start : start + batch_size])  # (b, A)
            predictions += [model.answer_vocab[i] for i in logits.argmax(dim=1).tolist()]
    return predictions


def choice_batches(questions: list[str], candidates: list[list[str]], rows: list[int], max_pairs: int) -> list[list[int]]:
    """`rows` split into `choice_logits` calls: one candidate count per call (it needs that), prompts of similar
    length together (sorted by characters) so one long prompt -- five captions as options -- does not pad
    every short one to its length, and at most `max_pairs` (question, candidate) pairs per call."""
    by_count: dict[int, list[int]] = defaultdict(list)
    for i in rows:
        by_count[len(candidates[i])].append(i)
    batches = []
    for count, members in sorted(by_count.items()):
        members.sort(key=lambda i: len(questions[i]) + sum(len(option) for option in candidates[i]))
        step = max(1, max_pairs // count)
        batches += [members[start : start + step] for start in range(0, len(members), step)]
    return batches


def predict_choice(
    model: Clover, tokens: Tensor, questions: list[str], candidates: list[list[str]], batch_size: int = 64
) -> list[int]:
    """The index of the best-scored candidate for each question (fusion encoder + choice head)."""
    predictions = [0] * len(questions)
    with _EvalMode(model), torch.inference_mode():
        for chunk in choice_batches(questions, candidates, list(range(len(questions))), batch_size):
            with _autocast(model.device):
                scores = model.answer_choice(tokens[chunk].to(model.device), [questions[i] for i in chunk],
                                             [candidates[i] for i in chunk])  # (b, count)
            for i, best in zip(chunk, scores.argmax(dim=1).tolist(), strict=True):
                predictions[i] = best
    return predictions


def predict_choice_dual(model: Clover, video_e: Tensor, candidates: list[list[str]], text_max_length=None) -> list[int]:
    """Retrieval-style choice (MSRVTT-MC): the candidate text with the highest cosine to the video."""
    flat = [c for options in candidates for c in options]
    text_e = encode_texts(model, flat, max_length=text_max_length)  # (sum C, D)
    predictions, offset = [], 0
    for row, options in enumerate(candidates):
        cosines = text_e[offset : offset + len(options)] @ video_e[row]
        predictions.append(int(cosines.argmax()))
        offset += len(options)
    return predictions


def _answer_index(question: dict) -> int:
    index = question.get("answer_index")
    return int(index) if index is not None else list(question["candidates"]).index(question["answer"])


def evaluate_qa(
    model: Clover,
    encoded: EncodedVideos,
    questions: list[list[dict]],
    batch_size: int = 64,
    text_max_length: int | None = None,
) -> dict[str, Any]:
    """Accuracy (percent) per question type and subtype; `questions[r]` are the questions about row r."""
    if encoded.tokens is None:
        raise ValueError("QA needs the video tokens (encode with keep_tokens=True)")
    open_items: list[tuple[int, dict]] = []
    choice_items: dict[str, list[tuple[int, dict]]] = defaultdict(list)
    for row, asked in enumerate(questions):
        for q in asked:
            if q.get("candidates"):
                choice_items[q.get("type") or "mc"].append((row, q))
            else:
                open_items.append((row, q))
    result: dict[str, Any] = {}
    if open_items:
        if model.qa_head is None or not model.answer_vocab:
            result["open"] = {"skipped": NO_QA_HEAD, "num_questions": len(open_items)}
        else:
            rows = torch.tensor([row for row, _ in open_items])
            predicted = predict_open(model, encoded.tokens[rows], [q["question"] for _, q in open_items], batch_size)
            answers = [normalise_answer(q["answer"]) for _, q in open_items]
            vocab = {normalise_answer(a) for a in model.answer_vocab}
            result["open"] = _accuracy([normalise_answer(p) for p in predicted], answers, "open",
                                       [q.get("subtype") or "open" for _, q in open_items])
            result["open"]["answers_in_vocab"] = 100.0 * sum(a in vocab for a in answers) / len(answers)
    for qtype, items in sorted(choice_items.items()):
        rows = torch.tensor([row for row, _ in items])
        candidates = [list(q["candidates"]) for _, q in items]
        truth = [_answer_index(q) for _, q in items]
        subtypes = [q.get("subtype") or qtype for _, q in items]
        predicted = predict_choice(model, encoded.tokens[rows], [q["question"] for _, q in items], candidates,
                                   batch_size)
        result[qtype] = _accuracy(predicted, truth, qtype, subtypes)
        if qtype in DUAL_CHOICE_TYPES:
            dual = predict_choice_dual(model, encoded.embeddings[rows], candidates, text_max_length)
            result[f"{qtype}_dual"] = _accuracy(dual, truth, qtype, subtypes)
    return result


# ---- everything -------------------------------------------------------------------------------------------


def evaluate(
    model: Clover,
    samples: list[Sample],
    *,
    num_clips: int = 1,
    batch_size: int = 32,
    rerank_k: int = 10,
    all_captions: bool = False,
    retrieval: bool = True,
    qa: bool = True,
    workers: int = 0,
    text_max_length: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Retrieval and QA metrics of `model` (on its current device) over `samples`, as one JSON-able dict.

    {"retrieval": {"t2v", "v2t", "t2v_rerank", ...}, "qa": {type: {"overall", subtype..., "num_questions"}},
    "num_videos", "failed_videos", "timing_s"}. Videos that fail to decode are left out and listed.
    """
    timing: dict[str, float] = {}
    started = time.perf_counter()
    wants_qa = qa and any(s.questions for s in samples)
    encoded = encode_videos(model, samples, num_clips=num_clips, batch_size=batch_size, workers=workers,
                            keep_tokens=(retrieval and rerank_k > 0) or wants_qa, progress=progress)
    timing["encode_videos"] = time.perf_counter() - started
    kept = [samples[i] for i in encoded.index]
    result: dict[str, Any] = {
        "num_videos": len(kept),
        "failed_videos": {samples[i].video_id: reason for i, reason in sorted(encoded.errors.items())},
        "settings": {"num_clips": num_clips, "rerank_k": rerank_k, "all_captions": all_captions,
                     "num_frames": model.config.num_frames, "image_size": model.config.image_size},
    }
    if retrieval and not kept:
        result["retrieval"] = {"skipped": "no video could be decoded"}
    elif retrieval:
        t0 = time.perf_counter()
        result["retrieval"] = evaluate_retrieval(model, encoded, [s.captions for s in kept], rerank_k, all_captions,
                                                 batch_size=max(batch_size, 2 * rerank_k),
                                                 text_max_length=text_max_length)
        timing["retrieval"] = time.perf_counter() - t0
    if wants_qa and kept:
        t0 = time.perf_counter()
        result["qa"] = evaluate_qa(model, encoded, [s.questions for s in kept], batch_size, text_max_length)
        timing["qa"] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - started
    result["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
    return result


def _progress(enabled: bool, total: int, desc: str):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="video", dynamic_ncols=True)


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A few human-readable lines (the full result is JSON)."""
    lines = [f"videos: {result.get('num_videos', 0)} (failed: {len(result.get('failed_videos', {}))})"]
    for name, metrics in (result.get("retrieval") or {}).items():
        if isinstance(metrics, dict):
            lines.append(f"{name:>10}: " + "  ".join(f"{k} {v:.1f}" for k, v in metrics.items()))
    for name, metrics in (result.get("qa") or {}).items():
        if "skipped" in metrics:
            lines.append(f"{name:>10}: skipped ({metrics['skipped']})")
        else:
            lines.append(f"{name:>10}: {metrics['overall']:.1f}% of {metrics['num_questions']}")
    return lines

