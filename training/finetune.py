"""Fine-tuning objectives for the downstream tasks, as `loss_fn(model, batch, generator)` for `Trainer`.

- retrieval (`RetrievalObjective`): symmetric InfoNCE (tau 0.05) between the two uni-modal encoders, on
  `VideoTextDataset` batches; the paper fine-tunes with lr 1.2e-5, weight decay 0.01.
- open-ended QA and multiple-choice QA (`QAObjective`): cross-entropy of the fused [CLS] through the open-QA head
  over an answer vocabulary (`build_answer_vocab`), and of the choice head over each question's candidates.
  One objective serves `open-qa`, `mc-qa` and both at once (`qa`): each question counts once in the batch mean.

QA trains from cached video tokens. With the video encoder frozen (the default), each training video is encoded
once (`cache_video_tokens`, uniform frames, eval mode, fp16) and the text encoder, fusion encoder and heads learn
from (tokens, question) pairs: a CPU fine-tune takes minutes instead of hours, and it sees the tokens exactly as
the service answers from them (the indexer's cached grids).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from model import Clover

from . import losses
from .data import Sample, caption_length
from .distributed import DistInfo, gather_with_grad
from .evaluate import choice_batches, encode_videos, normalise_answer

log = logging.getLogger(__name__)

TASKS = ("retrieval", "open-qa", "mc-qa", "qa", "rerank")
RETRIEVAL_TAU = 0.05  # paper, retrieval fine-tuning
IGNORE = -100  # label of a question the other head answers
ANSWERED_P = 0.9  # default p(true answer) at which `QAObjective(answered_keep=...)` counts a question answered
CHOICE_PAIRS = 40  # (question, candidate) pairs per fused call: similar prompt lengths batched together


# ---- retrieval --------------------------------------------------------------------------------------------


class RetrievalObjective(nn.Module):
    """Symmetric InfoNCE over the (global, under DDP) batch of video and caption embeddings."""

    def __init__(self, tau: float = RETRIEVAL_TAU, dist_info: DistInfo | None = None):
        super().__init__()
        self.tau, self.dist = tau, dist_info or DistInfo()

    def forward(self, model: Clover, batch: dict, generator: torch.Generator | None = None):
        video_e = model.encode_video(batch["frames"])  # (b, D)
        text_e = model.encode_text(batch["input_ids"], batch["attention_mask"])  # (b, D)
        loss = losses.info_nce(gather_with_grad(video_e, self.dist), gather_with_grad(text_e, self.dist), self.tau)
        return loss, {"info_nce": loss.detach()}


# ---- QA data ----------------------------------------------------------------------------------------------


def build_answer_vocab(samples: list[Sample], max_answers: int = 1000) -> list[str]:
    """The answers of the open-ended questions, most frequent first (ties alphabetical), at most `max_answers`."""
    counts = Counter(normalise_answer(q["answer"]) for s in samples for q in s.questions if not q.get("candidates"))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [answer for answer, _ in ranked[:max_answers]]


def freeze_video(model: Clover) -> None:
    """No gradients into the video backbone and its projection (QA trains from cached tokens)."""
    for module in (model.video_encoder, model.video_proj):
        module.requires_grad_(False)


def freeze_text(model: Clover) -> None:
    """No gradients into the text encoder: autograd then records nothing of it, which drops its backward pass
    (about a third of a QA step on a CPU); the fusion encoder and the heads still learn."""
    for module in (model.text_encoder, model.text_proj):  # the text side of search stays as pretrained
        module.requires_grad_(False)


def cache_video_tokens(
    model: Clover, samples: list[Sample], batch_size: int = 32, workers: int = 0
) -> tuple[torch.Tensor, dict[int, int]]:
    """Encode every sample once -> (tokens (N, K, C) fp16 on the CPU, {sample index: token row})."""
    encoded = encode_videos(model, samples, batch_size=batch_size, workers=workers, keep_tokens=True)
    if encoded.errors:
        log.warning("%d of %d videos failed to decode; their questions are left out", len(encoded.errors),
                    len(samples))
    if encoded.tokens is None:
        raise ValueError("no training video could be decoded")
    return encoded.tokens, {sample: row for row, sample in enumerate(encoded.index)}


def question_subtype(question: dict[str, Any]) -> str | None:
    """What `--question-type-weight` keys on: the manifest's "subtype", else its "type"."""
    return question.get("subtype", question.get("type"))


def question_items(
    samples: list[Sample],
    rows: dict[int, int],
    answer_vocab: list[str] | None,
    open_questions: bool = True,
    choice_questions: bool = True,
    type_weights: dict[str, float] | None = None,
) -> list[dict[str, Any]]:
    """One training item per question: {"row", "question", "label", "candidates", "qid"} (candidates None:
    open; "qid" the item's index, what `QAObjective` remembers a question's last answer by). With `type_weights`
    ({question subtype: loss weight}, e.g. {"shape": 4}) each open item also has a "weight" (1 for other types).

    Open questions need an answer vocabulary; those whose answer is not in it are left out (the usual rule for
    MSRVTT-QA-style top-k vocabularies). Questions about videos that did not decode are left out.
    """
    index = {answer: i for i, answer in enumerate(answer_vocab or [])}
    items = []
    for sample_index, sample in enumerate(samples):
        if sample_index not in rows:
            continue
        for q in sample.questions:
            candidates = q.get("candidates")
            if candidates and choice_questions:
                label = q.get("answer_index")
                label = list(candidates).index(q["answer"]) if label is None else int(label)
                items.append({"row": rows[sample_index], "question": q["question"], "label": label,
                              "candidates": list(candidates), "qid": len(items)})
            elif not candidates and open_questions and normalise_answer(q["answer"]) in index:
                items.append({"row": rows[sample_index], "question": q["question"],
                              "label": index[normalise_answer(q["answer"])], "candidates": None, "qid": len(items)})
                if type_weights:
                    items[-1]["weight"] = type_weights.get(question_subtype(q), 1.0)
    return items


class QuestionDataset(Dataset):
    """The question items; with `videos` (a `VideoTextDataset`, end-to-end fine-tuning) each item also carries
    its video's frames (random frames per epoch in training mode), and `row` is then the sample index.

    `per_clip=True` makes each item one clip with all its questions ({"members": [...], "frames"}), so an
    end-to-end step encodes a clip once for its ~5 questions instead of once per question, and the batch size
    then counts clips.

    `questions_per_clip=K` (with `per_clip`) keeps K of a clip's questions per epoch, drawn afresh each epoch
    (seeded): the fused questions, not the video tower, are most of an end-to-end step (bench/qa_step_cost.py).
    """

    def __init__(self, items: list[dict[str, Any]], videos: Any = None, seed: int = 0, per_clip: bool = False,
                 questions_per_clip: int | None = None):
        if questions_per_clip is not None and (not per_clip or questions_per_clip < 1):
            raise ValueError("questions_per_clip needs per_clip and at least one question")
        self.items, self.videos, self.seed = items, videos, seed
        self.units = group_by_clip(items) if per_clip else None
        self.questions_per_clip = questions_per_clip
        self.epoch = 0  # set by the Trainer

    def __len__(self) -> int:
        return len(self.items) if self.units is None else len(self.units)

    def item_caption_lengths(self) -> list[float]:
        """Mean caption length in words of each item's video (end to end only: a curriculum ranks by it)."""
        if self.videos is None:
            raise ValueError("caption lengths need the videos' samples (end-to-end fine-tuning)")
        rows = [item["row"] for item in self.items] if self.units is None else [u[0]["row"] for u in self.units]
        return [caption_length(self.videos.samples[row].captions) for row in rows]

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i] if self.units is None else {"row": self.units[i][0]["row"], "members": self.units[i]}
        if self.questions_per_clip is not None and len(item["members"]) > self.questions_per_clip:
            draws = random.Random(hash((self.seed, self.epoch, i, 1)) & 0xFFFFFFFF)  # ints: the same in every process
            kept = sorted(draws.sample(range(len(item["members"])), self.questions_per_clip))
            item = {**item, "members": [item["members"][k] for k in kept]}
        if self.videos is None:
            return item
        rng = random.Random(hash((self.seed, self.epoch, i)) & 0xFFFFFFFF) if self.videos.train else None
        frames = self.videos.clip(item["row"], rng)  # (T, 3, S, S)
        if self.units is None:
            return {**item, "frames": frames}
        captions = self.videos.samples[item["row"]].captions or [""]
        return {**item, "frames": frames, "caption": rng.choice(captions) if rng else captions[0]}


def group_by_clip(items: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The question items gathered per video row, in order of first appearance."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for item in items:
        groups.setdefault(item["row"], []).append(item)
    return list(groups.values())


class QACollator:
    """Items -> {"video_tokens" (B, K, C) from the token cache, or "frames" (B, T, 3, S, S) end to end;
    "input_ids"/"attention_mask" of the questions; "open_labels" and "choice_labels" (B,) with IGNORE for the
    other kind; "question_ids" (B,) where items carry a "qid"; "question_weights" (B,) where they carry a
    "weight"; "questions"; "candidates"}. Clip-grouped items give B clips, Q >= B questions and "video_index"
    (Q,)."""

    def __init__(self, video_tokens: torch.Tensor | None, tokenizer: Any, max_length: int):
        self.video_tokens, self.tokenizer, self.max_length = video_tokens, tokenizer, max_length

    def __call__(self, units: list[dict[str, Any]]) -> dict[str, Any]:
        # A clip-grouped unit ({"members": [...]}) contributes every question; "video_index" then maps each
        # question to its clip's row in "frames" / "video_tokens".
        items = [m for unit in units for m in unit.get("members", [unit])]
        questions = [item["question"] for item in items]
        tokens = self.tokenizer(questions, padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        is_open = [item["candidates"] is None for item in items]
        labels = [item["label"] for item in items]
        batch = {
            "input_ids": tokens["input_ids"],
            "attention_mask": tokens["attention_mask"],
            "open_labels": torch.tensor([y if o else IGNORE for y, o in zip(labels, is_open, strict=True)]),
            "choice_labels": torch.tensor([IGNORE if o else y for y, o in zip(labels, is_open, strict=True)]),
            "questions": questions,
            "candidates": [item["candidates"] for item in items],
        }
        if "qid" in items[0]:
            batch["question_ids"] = torch.tensor([item["qid"] for item in items])
        if any("weight" in item for item in items):  # per-type loss weights of the open questions
            batch["question_weights"] = torch.tensor([float(item.get("weight", 1.0)) for item in items])
        if "members" in units[0]:
            batch["video_index"] = torch.tensor([u for u, unit in enumerate(units) for _ in unit["members"]])
        if "frames" in units[0]:
            batch["frames"] = torch.stack([unit["frames"] for unit in units])
        else:
            batch["video_tokens"] = self.video_tokens[torch.tensor([unit["row"] for unit in units])]
        if "caption" in units[0]:  # one caption per clip, for the retrieval anchor of end-to-end QA
            captions = self.tokenizer([unit["caption"] for unit in units], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt")
            batch["caption_ids"], batch["caption_mask"] = captions["input_ids"], captions["attention_mask"]
        return batch


# ---- QA objective -----------------------------------------------------------------------------------------


class QuestionStates:
    """The frozen text tower's states of each distinct question, computed the first time it is asked.

    Exact only while the tower cannot change or draw noise, so `__call__` answers None (the caller encodes as
    usual) when any text-tower weight trains or its dropout is active. Templated questions (synthworld asks 396)
    cost a few MB, and a batch's ~190 questions then need no text-tower pass at all; free-form questions beyond
    `max_questions` are encoded each time they are asked, so memory stays bounded (about 25 KB a question at
    16 tokens x 384)."""

    def __init__(self, max_questions: int = 8192):
        self.max_questions = max_questions
        self.states: dict[tuple[int, ...], torch.Tensor] = {}  # question's token ids -> (its length, H)

    def __call__(self, model: Clover, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        tower = model.text_encoder
        if any(p.requires_grad for p in tower.parameters()) or model.text_dropout_active:
            return None
        lengths = attention_mask.sum(dim=1).tolist()
        keys = [tuple(ids[:n].tolist()) for ids, n in zip(input_ids, lengths, strict=True)]
        new = [i for i, key in enumerate(keys) if key not in self.states]  # `encode_text` encodes repeats once
        fresh = {}
        if new:
            with torch.no_grad():
                _, hidden = model.encode_text(input_ids[new], attention_mask[new], return_hidden=True)
            for row, i in enumerate(new):
                fresh[keys[i]] = hidden[row, : lengths[i]]
                if len(self.states) < self.max_questions:
                    self.states.setdefault(keys[i], fresh[keys[i]].clone())
        out = input_ids.new_zeros((*input_ids.shape, tower.config.hidden_size), dtype=next(tower.parameters()).dtype)
        for i, key in enumerate(keys):  # padding positions stay 0: they are masked as keys and never pooled
            out[i, : lengths[i]] = self.states[key] if key in self.states else fresh[key]
        return out


class QAObjective(nn.Module):
    """Cross-entropy over the answer vocabulary (open) and over candidates (multiple choice), batch-averaged.

    `retrieval_weight` > 0 (end to end, clip-grouped batches with a caption per clip) adds symmetric InfoNCE
    between the clips and their captions: the video tower then learns from the questions without leaving the
    text space that search matches queries in (one checkpoint serves both).

    `open_gamma` > 0 makes the open-ended term focal, -(1 - p)^γ log p: question types already answered stop
    drowning out, in a shared batch, the gradient of the one still at chance (the MLM's focal loss, METHOD).

    `retrieval_from_step` holds the InfoNCE term back until that optimizer step (the Trainer calls `set_step`):
    its gradient into the video tower keeps a young tower from learning shape from the questions, so one run
    learns from the questions first and then brings the tower back to the text space.

    `rerank_weight` > 0 trains the re-ranker in the same run, from the same step as the anchor: each caption is
    fused with its own clip and the `rerank_group - 1` clips of the batch its embedding is closest to, with
    the re-ranking fine-tune's listwise + matching losses (`rerank_losses`), so no separate re-ranking stage
    on cached tokens is needed.

    `answered_keep` < 1 (with `num_questions`, the number of question items) fuses an open question that was
    answered when last fused (p(answer) >= `answered_p`) only with that probability, and weights it by its inverse,
    so the expected loss is unchanged. Each question's last p(answer) is kept, and saved with the trainer's state.
    The fused questions are most of an end-to-end step (bench/qa_step_cost.py), and under focal loss an answered
    question's gradient is close to 0 anyway: the skip goes where the draw of `questions_per_clip` cannot see.

    A batch's "question_weights" (`question_items`' per-type weights, `clover finetune --question-type-weight`)
    scale each open question's loss: a type that the others outnumber, and that needs the video tower to learn
    something new (synthworld's shape), gets a share of the tower's gradient that it learns at.

    `detach_anchor` gives the anchor and the re-ranker the video tower's tokens detached: they train the video
    projection and the fusion encoder to follow the tower, and the tower learns from the questions alone. Both
    terms can then run from the first step (a tower gradient from them keeps a young tower from learning shape).

    While the text tower is frozen and deterministic (QA fine-tuning freezes it), each distinct question's text
    states are computed once and kept (`QuestionStates`): templated questions recur in every batch.
    """

    def __init__(self, retrieval_weight: float = 0.0, tau: float = RETRIEVAL_TAU, open_gamma: float = 0.0,
                 retrieval_from_step: int = 0, rerank_weight: float = 0.0, rerank_group: int = 4,
                 rerank_captions: int | None = None, answered_keep: float = 1.0, num_questions: int = 0,
                 answered_p: float = ANSWERED_P, detach_anchor: bool = False):
        super().__init__()
        if not 0.0 < answered_keep <= 1.0:
            raise ValueError(f"answered_keep must be in (0, 1], not {answered_keep}")
        if answered_keep < 1.0 and num_questions < 1:
            raise ValueError("answered_keep < 1 needs num_questions (the question items' count)")
        self.retrieval_weight, self.tau, self.open_gamma = retrieval_weight, tau, open_gamma
        self.retrieval_from_step, self.step = retrieval_from_step, 0
        self.rerank_weight, self.rerank_group, self.rerank_captions = rerank_weight, rerank_group, rerank_captions
        self.answered_keep, self.answered_p = answered_keep, answered_p
        self.detach_anchor = detach_anchor
        # p(true answer) when each question was last fused, 0 = never fused. A plain CPU tensor, not a buffer:
        # DDP would overwrite a buffer with rank 0's; the Trainer saves it through `training_state`.
        self.last_answer_p = torch.zeros(num_questions if answered_keep < 1.0 else 0)
        self.question_states = QuestionStates()

    def set_step(self, step: int) -> None:
        """The optimizer step about to run (0-based), for terms that start later in the schedule."""
        self.step = step

    def forward(self, model: Clover, batch: dict, generator: torch.Generator | None = None):
        anchor = rerank = None
        if "frames" in batch:  # end to end: the video encoder trains too
            tokens = model.video_encoder(batch["frames"])  # (B, K, C)
            anchored = (self.retrieval_weight or self.rerank_weight) and self.step >= self.retrieval_from_step
            if anchored and "caption_ids" in batch:
                anchor_tokens = tokens.detach() if self.detach_anchor else tokens
                video_e = model.embed_video_tokens(anchor_tokens)
                text_e, hidden = model.encode_text(batch["caption_ids"], batch["caption_mask"], return_hidden=True)
                if self.retrieval_weight:
                    anchor = losses.info_nce(video_e, text_e, self.tau)
                if self.rerank_weight:
                    n = self.rerank_captions or len(text_e)  # the first n captions, against every clip
                    cosine = (text_e[:n] @ video_e.T).detach()  # (n captions, B clips)
                    groups = in_batch_groups(cosine, batch["caption_ids"], self.rerank_group)
                    rerank = rerank_losses(model, anchor_tokens, groups, hidden[:n], batch["caption_mask"][:n],
                                           cosine.gather(1, groups))
        else:
            tokens = batch["video_tokens"]  # (B, K, C) cached fp16; the model casts them
        # Row i's clip: clip-grouped batches hold one row per question; questions are fused with the clip's
        # tokens by index, so a one-way fusion encoder runs each clip's video positions once.
        row_clip = batch.get("video_index")
        if row_clip is None:
            row_clip = torch.arange(tokens.shape[0], device=tokens.device)
        batch_size = row_clip.shape[0]
        terms: dict[str, torch.Tensor] = {}
        total = tokens.new_zeros((), dtype=torch.float32)

        open_rows = (batch["open_labels"] != IGNORE).nonzero().flatten()
        num_open = open_rows.numel()
        weights = None
        fused_now = (torch.zeros(0, dtype=torch.long), torch.zeros(0))  # (question ids, p(answer)) fused this step
        if num_open and self.answered_keep < 1.0:
            open_rows, weights = self.rows_to_fuse(open_rows, batch["question_ids"][open_rows], generator)
            terms["fused_open"] = torch.tensor(open_rows.numel() / num_open)
        if open_rows.numel():
            labels = batch["open_labels"][open_rows]
            texts = {"input_ids": batch["input_ids"][open_rows], "attention_mask": batch["attention_mask"][open_rows]}
            hidden = self.question_states(model, texts["input_ids"], texts["attention_mask"])
            logits = model.open_qa_logits(tokens, texts, video_index=row_clip[open_rows], text_hidden=hidden)
            per_question = losses.focal_mlm(logits, labels, self.open_gamma, reduction="none")
            if "question_weights" in batch:  # per question type (`question_items`' type_weights)
                type_weight = batch["question_weights"][open_rows].to(per_question)
                weights = type_weight if weights is None else weights.to(per_question) * type_weight
            summed = per_question.sum() if weights is None else (per_question * weights.to(per_question)).sum()
            total = total + summed
            terms["open_qa"] = summed.detach() / num_open
            if self.answered_keep < 1.0:
                p = logits.detach().float().softmax(-1).gather(1, labels[:, None]).squeeze(1)
                fused_now = (batch["question_ids"][open_rows], p)
        if self.answered_keep < 1.0:
            self.remember_answers(*fused_now)  # on every rank, even with nothing fused: a collective under DDP

        choice_rows = (batch["choice_labels"] != IGNORE).nonzero().flatten().tolist()
        choice_sum = total.new_zeros(())
        for members in choice_batches(batch["questions"], batch["candidates"], choice_rows, CHOICE_PAIRS):
            texts = model.choice_texts([batch["questions"][i] for i in members],
                                       [batch["candidates"][i] for i in members])
            index = torch.tensor(members, device=tokens.device)
            logits = model.choice_logits(tokens[row_clip[index]], texts, len(batch["candidates"][members[0]]))  # (n, C)
            choice_sum = choice_sum + F.cross_entropy(logits.float(), batch["choice_labels"][index], reduction="sum")
        if choice_rows:
            total = total + choice_sum
            terms["mc_qa"] = choice_sum.detach() / len(choice_rows)
        loss = total / batch_size
        if anchor is not None:
            loss = loss + self.retrieval_weight * anchor
            terms["info_nce"] = anchor.detach()
        if rerank is not None:
            loss = loss + self.rerank_weight * (rerank[0] + rerank[1])
            terms["listwise"], terms["matching"] = rerank[0].detach(), rerank[1].detach()
        return loss, terms

    def training_state(self) -> dict[str, torch.Tensor]:
        """What `--resume` needs besides the model and optimizer (the Trainer saves and restores it)."""
        return {"last_answer_p": self.last_answer_p.clone()}

    def load_training_state(self, state: dict[str, torch.Tensor]) -> None:
        self.last_answer_p = state["last_answer_p"].clone()

    def rows_to_fuse(self, rows: torch.Tensor, question_ids: torch.Tensor, generator: torch.Generator | None):
        """-> (the rows to fuse, their loss weights): every question not answered when last fused, and each
        answered one with probability `answered_keep`, weighted 1 / answered_keep."""
        answered = self.last_answer_p[question_ids.cpu()] >= self.answered_p
        draws = torch.rand(len(rows), generator=generator)
        keep = ~answered | (draws < self.answered_keep)
        weights = torch.where(answered, 1.0 / self.answered_keep, 1.0)[keep]
        return rows[keep.to(rows.device)], weights

    def remember_answers(self, question_ids: torch.Tensor, p: torch.Tensor) -> None:
        question_ids, p = question_ids.cpu(), p.cpu()
        if dist.is_available() and dist.is_initialized():  # every rank keeps the same table
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, (question_ids, p))
            question_ids = torch.cat([ids for ids, _ in gathered])
            p = torch.cat([values for _, values in gathered])
        self.last_answer_p[question_ids] = p


# ---- re-ranking (video-text matching) from cached tokens --------------------------------------------------


def caption_items(samples: list[Sample], rows: dict[int, int], per_video: int = 2) -> list[dict[str, Any]]:
    """One item per (video, caption) for the first `per_video` captions: {"row", "caption"}."""
    return [{"row": rows[i], "caption": caption} for i, sample in enumerate(samples) if i in rows
            for caption in sample.captions[:per_video]]


@torch.no_grad()
def mine_hard_negatives(model: Clover, video_tokens: torch.Tensor, items: list[dict[str, Any]], pool: int,
                        batch_size: int = 256) -> None:
    """Adds item["negatives"]: the `pool` token rows the dual encoder ranks closest to each caption, over the
    whole training set (what a re-ranker meets in a top-k list), leaving out the caption's own video and every
    video that has the same caption."""
    model.eval()
    video_e = torch.cat([F.normalize(model.video_proj(chunk.float()), dim=-1)
                         for chunk in video_tokens.split(batch_size)])  # (N, D)
    rows_of_caption: dict[str, set[int]] = {}
    for item in items:
        rows_of_caption.setdefault(item["caption"], set()).add(item["row"])
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        texts = model.tokenize([item["caption"] for item in chunk])
        sim = model.encode_text(texts["input_ids"], texts["attention_mask"]) @ video_e.T  # (b, N)
        for row_sim, item in zip(sim, chunk, strict=True):
            positives = rows_of_caption[item["caption"]] | {item["row"]}
            ranked = row_sim.topk(min(len(row_sim), pool + len(positives))).indices.tolist()
            item["negatives"] = [r for r in ranked if r not in positives][:pool]


class RerankDataset(Dataset):
    """Caption items with their mined negatives; each epoch draws `group - 1` of them per caption (seeded), so
    item i is (caption, [own video row, negative rows...]). With `questions` ({token row: question items}),
    item i also carries the questions of its own video, so one step can keep the QA heads trained."""

    def __init__(self, items: list[dict[str, Any]], group: int, seed: int = 0,
                 questions: dict[int, list[dict[str, Any]]] | None = None):
        if group < 2:
            raise ValueError("a re-ranking group needs the true video and at least one negative")
        self.items, self.group, self.seed, self.questions = items, group, seed, questions
        self.epoch = 0  # set by the Trainer

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.items[i]
        rng = random.Random(hash((self.seed, self.epoch, i)) & 0xFFFFFFFF)
        negatives = rng.sample(item["negatives"], min(self.group - 1, len(item["negatives"])))
        pair = {"caption": item["caption"], "rows": [item["row"], *negatives]}
        if self.questions is not None:
            pair["questions"] = self.questions.get(item["row"], [])
        return pair


class RerankCollator:
    """Items -> {"video_tokens" (B, G, K, C) from the cache, column 0 the true video; "input_ids" and
    "attention_mask" of the captions}. Every caption needs the same group size G."""

    def __init__(self, video_tokens: torch.Tensor, tokenizer: Any, max_length: int):
        self.video_tokens, self.tokenizer, self.max_length = video_tokens, tokenizer, max_length
        self.questions = QACollator(video_tokens, tokenizer, max_length)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        tokens = self.tokenizer([item["caption"] for item in items], padding=True, truncation=True,
                                max_length=self.max_length, return_tensors="pt")
        rows = torch.tensor([item["rows"] for item in items])  # (B, G)
        batch = {"video_tokens": self.video_tokens[rows], "input_ids": tokens["input_ids"],
                 "attention_mask": tokens["attention_mask"]}
        units = [{"row": item["rows"][0], "members": item["questions"]} for item in items if item.get("questions")]
        if units:  # the own videos' questions, as a clip-grouped QA batch ("qa")
            batch["qa"] = self.questions(units)
        return batch


class RerankObjective(nn.Module):
    """Trains the fusion encoder and matching head on cached video tokens the way re-ranking uses them.

    Each caption is fused with its own video and hard negatives mined by the dual encoder (`RerankCollator`):
    - listwise: a softmax over the group of `model.rerank_scores(match log-odds, cosine)` must pick the true
      video (localized contrastive estimation, Gao et al. 2021), so the fusion encoder learns what the dual
      order gets wrong;
    - pointwise: every fused pair is classified match / no match (ALBEF's matching loss), so the head's
      log-odds stay a matching score.

    `qa_weight` > 0 adds the QA loss of the batch's "qa" questions (their own videos'), at that weight: the
    fusion encoder is shared with the QA heads, and re-ranking alone would train their answers away.
    """

    def __init__(self, qa_weight: float = 0.0, qa_focal_gamma: float = 0.0):
        super().__init__()
        self.qa_weight = qa_weight
        self.qa = QAObjective(open_gamma=qa_focal_gamma)

    def forward(self, model: Clover, batch: dict, generator: torch.Generator | None = None):
        tokens, mask = batch["video_tokens"].float(), batch["attention_mask"]  # (B, G, K, C), (B, L)
        batch_size, group = tokens.shape[:2]
        with torch.no_grad():  # the dual encoder's cosine, as at search time
            video_e = F.normalize(model.video_proj(tokens.flatten(0, 1)), dim=-1).view(batch_size, group, -1)
        text_e, hidden = model.encode_text(batch["input_ids"], mask, return_hidden=True)
        cosine = torch.einsum("bd,bgd->bg", text_e.detach(), video_e)  # (B, G)
        groups = torch.arange(batch_size * group, device=tokens.device).view(batch_size, group)
        listwise, pointwise = rerank_losses(model, tokens.flatten(0, 1), groups, hidden, mask, cosine)
        loss, terms = listwise + pointwise, {"listwise": listwise.detach(), "matching": pointwise.detach()}
        if self.qa_weight and "qa" in batch:
            qa_loss, qa_terms = self.qa(model, batch["qa"])
            loss = loss + self.qa_weight * qa_loss
            terms.update(qa_terms)
        return loss, terms


def rerank_losses(model: Clover, tokens: torch.Tensor, groups: torch.Tensor, text_hidden: torch.Tensor,
                  mask: torch.Tensor, cosine: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(listwise, pointwise) re-ranking losses of B captions, each fused with a group of G videos whose column 0
    is its own: tokens (V, K, C) of V clips, groups (B, G) indices into them, the captions' text states (B, L, H)
    and mask (B, L), the dual cosines (B, G)."""
    batch_size, group = groups.shape
    clips, pair_clip = groups.flatten().unique(return_inverse=True)  # only the clips in some group are fused
    fused = model.fuse(tokens[clips], text_hidden.repeat_interleave(group, dim=0),
                       mask.repeat_interleave(group, dim=0), video_index=pair_clip)[1]
    logits = model.match_logits(fused).float()  # (B*G, 2)
    log_odds = (logits[:, 1] - logits[:, 0]).view(batch_size, group)
    target = torch.zeros(batch_size, dtype=torch.long, device=tokens.device)  # the true video is column 0
    listwise = F.cross_entropy(model.rerank_scores(log_odds, cosine), target)
    labels = torch.zeros(batch_size, group, dtype=torch.long, device=tokens.device)
    labels[:, 0] = 1
    return listwise, F.cross_entropy(logits, labels.flatten())


@torch.no_grad()
def in_batch_groups(cosine: torch.Tensor, caption_ids: torch.Tensor, group: int) -> torch.Tensor:
    """Re-ranking groups from one batch: cosine (n, B) of the first n captions by the B clips -> (n, G) clip
    indices, column 0 each caption's own clip (caption i belongs to clip i), then the G - 1 other clips it is
    closest to (what a top-k list puts beside the true clip). Clips whose caption is the caption's own (same
    token ids, caption_ids (B, L)) are never its negatives."""
    num_captions, batch_size = cosine.shape
    group = min(group, batch_size)
    same = (caption_ids[:num_captions, None, :] == caption_ids[None, :, :]).all(dim=-1)  # (n, B), own included
    scores = cosine.float().masked_fill(same, float("-inf"))
    negatives = scores.topk(group - 1, dim=1).indices  # short of others, a row falls back on same-caption clips
    own = torch.arange(num_captions, device=cosine.device)[:, None]
    return torch.cat([own, negatives], dim=1)
