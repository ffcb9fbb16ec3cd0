"""The pretraining objective: which forward passes run and how the losses combine.

Every term is a switch (`ObjectiveConfig`), so the paper's ablation is a set of flags:

| variant | tma | ranking | mlm | focal | info_nce | text masking |
| --- | --- | --- | --- | --- | --- | --- |
| baseline ("like VIOLET") | off | off | on | off | on | random |
| +TMA | on | off | on | off | off | random |
| +semantic masking | on | off | on | on | off | semantic |
| +ranking (= Clover) | on | on | on | on | off | semantic |

Video-text matching with in-batch hard negatives (`matching`) pre-trains the re-ranking head; it is not part of
METHOD's total and is on for every preset variant unless switched off, so variants differ only in what the paper
varies. `tiny-synthworld-b32` switches it off: the re-ranker gets its own fine-tune (`clover finetune --task
rerank`, negatives mined over the whole training split) and pretraining steps skip 3n fusion passes.

`caption_negatives` (off in every preset variant; not in the paper) adds NegCLIP's noun-swapped captions as one
extra negative per video, for worlds where in-batch negatives almost never differ in a noun alone;
`caption_negative_temperature` > 0 draws the replacement noun by its similarity to the swapped one, and
`caption_negative_tau` gives the term its own, sharper temperature (a shape swap moved synthworld's text embedding
by a cosine of a few thousandths, a logit gap of 0.1 at tau = 0.05). Neither taught synthworld's video tower
shape (docs/benchmarks.md, session 7).

`word_prediction` (off in every preset variant; not in the paper) asks the video tower, through the word head on
its tokens' max, which words its caption uses: unlike the contrastive terms, a direct label for every word of every
clip, whatever else the batch holds. In 300 steps it did not teach synthworld's tower shape either
(docs/benchmarks.md, session 11).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from model import Clover

from . import losses
from .distributed import DistInfo, gather_with_grad
from .masking import video_block_masks


@dataclass
class ObjectiveConfig:
    tma: bool = True  # tri-modal alignment (exclusive NCE) instead of plain InfoNCE
    ranking: bool = True  # masked pairs must match less than the unmasked pair
    mlm: bool = True  # masked language modelling through the fusion encoder
    focal: bool = True  # focal MLM (gamma) instead of cross-entropy
    info_nce: bool = False  # plain V_e <-> T_e InfoNCE (the baseline's alignment)
    matching: bool = True  # video-text matching with in-batch hard negatives (re-ranking head)
    caption_negatives: bool = False  # video -> text NCE with a noun-swapped caption per video (training.negatives)
    text_masking: str = "semantic"  # semantic (POS-based) or random
    tau: float = losses.DEFAULT_TAU
    margin: float = losses.DEFAULT_MARGIN
    gamma: float = losses.DEFAULT_GAMMA
    video_mask_ratio: float = 0.2  # BEiT-style block masking of the spatial patch grid
    matching_pairs: int = 16  # true pairs per rank fed to the matching head (+2x hard negatives): fusion is costly
    mlm_weight: float = 1.0
    matching_weight: float = 1.0
    caption_negative_weight: float = 1.0
    caption_negative_temperature: float = 0.0  # > 0: replacements weighted by word similarity (NounSwapper)
    caption_negative_tau: float = 0.0  # > 0: the caption-negative term's own temperature (sharper than tau)
    word_prediction: float = 0.0  # > 0: weight of the video-side bag-of-words term (needs heads.word_head)

    @property
    def needs_masked_video(self) -> bool:
        return self.tma or self.ranking

    @property
    def needs_masked_text(self) -> bool:
        return self.tma or self.ranking or self.mlm

    def to_dict(self) -> dict:
        return asdict(self)


PRESETS: dict[str, dict] = {
    "clover": {},
    "baseline": dict(tma=False, ranking=False, focal=False, info_nce=True, text_masking="random"),
    "tma": dict(ranking=False, focal=False, text_masking="random"),
    "tma+semantic": dict(ranking=False),
}


def objective_config(name: str, **overrides) -> ObjectiveConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown objective {name!r}; choose from {', '.join(PRESETS)}")
    return ObjectiveConfig(**{**PRESETS[name], **overrides})


class CloverObjective(nn.Module):
    def __init__(self, cfg: ObjectiveConfig, dist_info: DistInfo | None = None):
        super().__init__()
        self.cfg = cfg
        self.dist = dist_info or DistInfo()
        self._word_pieces: torch.Tensor | None = None  # [V] bool, built from the model's tokenizer

    def forward(self, model: Clover, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None):
        """-> (total loss, {term: detached value}) for one (per-rank) batch."""
        cfg, info = self.cfg, self.dist
        frames, ids, mask = batch["frames"], batch["input_ids"], batch["attention_mask"]
        gather = lambda x: gather_with_grad(x, info)  # noqa: E731
        terms: dict[str, torch.Tensor] = {}

        video_e, video_tokens = model.encode_video(frames, return_tokens=True)  # (b, D), (b, K, C)
        text_e, text_hidden = model.encode_text(ids, mask, return_hidden=True)  # (b, D), (b, L, H)
        g_video, g_text = gather(video_e), gather(text_e)

        if cfg.needs_masked_text:
            masked_ids = batch["masked_input_ids"]
            text_m, text_m_hidden = model.encode_text(masked_ids, mask, return_hidden=True)
            fused_tm_seq, fused_tm_cls = model.fuse(video_tokens, text_m_hidden, mask)  # V_e with T_m
        if cfg.needs_masked_video:
            grid, local = model.mask_grid, frames.shape[0]
            # Masks are drawn for the global batch and sliced, so N ranks train exactly like one process.
            vmask = video_block_masks(local * info.world_size, grid[0], grid[1], cfg.video_mask_ratio, generator)
            vmask = vmask[info.rank * local : (info.rank + 1) * local]
            video_m, video_m_tokens = model.encode_video(frames, video_mask=vmask.to(frames.device), return_tokens=True)

        if cfg.tma:
            _, fused_vm_cls = model.fuse(video_m_tokens, text_hidden, mask)  # V_m with T_e
            terms["tma"], _ = losses.tri_modal_alignment(
                g_video, g_text, gather(text_m), gather(video_m),
                gather(model.fused_embedding(fused_vm_cls)), gather(model.fused_embedding(fused_tm_cls)), cfg.tau,
            )
        if cfg.info_nce:
            terms["info_nce"] = losses.info_nce(g_video, g_text, cfg.tau)
        if cfg.caption_negatives:
            negatives = model.encode_text(batch["negative_input_ids"], batch["negative_attention_mask"])
            terms["caption_negatives"] = cfg.caption_negative_weight * losses.nce_with_hard_negatives(
                video_e, g_text, negatives, batch["has_negative"], cfg.caption_negative_tau or cfg.tau,
                offset=info.rank * frames.shape[0])
        if cfg.ranking:
            terms["ranking"] = losses.pairwise_ranking(video_e, text_e, text_m, video_m, cfg.tau, cfg.margin)
        if cfg.mlm:
            labels = batch["mlm_labels"]
            predicted = labels != -100  # only masked words reach the 30k-way vocabulary projection
            logits = model.mlm_logits(fused_tm_seq[:, video_tokens.shape[1]:][predicted])  # (N, V)
            gamma = cfg.gamma if cfg.focal else 0.0
            # METHOD's (1/B) sum over masked words: per-rank sums average to the global value under DDP.
            summed = losses.focal_mlm(logits, labels[predicted], gamma=gamma, reduction="sum")
            terms["mlm"] = cfg.mlm_weight * summed / frames.shape[0]
        if cfg.word_prediction:
            targets = self._word_targets(model, ids, mask)
            # (1/B) sum over the clips, like the MLM term, so N ranks average to the global value.
            summed = losses.bag_of_words(model.word_logits(video_tokens), targets, reduction="sum")
            terms["words"] = cfg.word_prediction * summed / frames.shape[0]
        if cfg.matching:
            terms["matching"] = cfg.matching_weight * self._matching(model, video_e, text_e, video_tokens,
                                                                     text_hidden, mask, generator)
        total = torch.stack(list(terms.values())).sum()
        return total, {name: value.detach() for name, value in terms.items()}

    def _word_targets(self, model: Clover, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, V] bool: the word pieces of each caption."""
        if self._word_pieces is None:
            self._word_pieces = word_piece_ids(model.tokenizer, model.text_encoder.config.vocab_size).to(ids.device)
        targets = torch.zeros(ids.shape[0], self._word_pieces.shape[0], dtype=torch.bool, device=ids.device)
        targets.scatter_(1, ids * mask, True)  # padding lands on [PAD], not a word piece
        return targets & self._word_pieces

    def _matching(self, model, video_e, text_e, video_tokens, text_hidden, mask, generator) -> torch.Tensor:
        """Fused matching on a subset of local pairs with hard negatives drawn from the local batch.

        Negatives are drawn per rank (fusing pairs across ranks would move tokens between processes), so this
        term is the one that differs between N ranks and one process.
        """
        n = min(self.cfg.matching_pairs, video_e.shape[0])
        return matching_loss(model, video_e[:n], text_e[:n], video_tokens[:n], text_hidden[:n], mask[:n],
                             self.cfg.tau, generator)


def matching_loss(model, video_e, text_e, video_tokens, text_hidden, mask, tau, generator=None, exclude=None):
    """Video-text matching through the fusion encoder: n true pairs, a hard negative text for each video and a
    hard negative video for each text (drawn by similarity, ALBEF-style). `exclude` [n, n] marks pairs that are
    not negatives (e.g. identical captions). Trains the head that re-ranks search results."""
    n = video_e.shape[0]
    if n < 2:
        return video_e.new_zeros(())
    sim = video_e.detach() @ text_e.detach().T / tau
    neg_text, neg_video = losses.sample_hard_negatives(sim, generator, exclude)
    videos = torch.cat([video_tokens, video_tokens, video_tokens[neg_video]])  # (3n, K, C)
    texts = torch.cat([text_hidden, text_hidden[neg_text], text_hidden])
    masks = torch.cat([mask, mask[neg_text], mask])
    logits = model.match_logits(model.fuse(videos, texts, masks)[1])  # (3n, 2)
    return losses.video_text_matching_loss(logits[:n], logits[n:])


def word_piece_ids(tokenizer, vocab_size: int) -> torch.Tensor:
    """[vocab_size] bool over the tokenizer's ids: the word pieces made of letters that are not special tokens.
    Function words stay: a word every caption has costs little, and "while" or "then" says what a clip holds."""
    vocab = tokenizer.get_vocab()
    keep = torch.zeros(vocab_size, dtype=torch.bool)
    special = set(tokenizer.all_special_ids)
    for piece, index in vocab.items():
        if index < vocab_size:
            keep[index] = piece.removeprefix("##").isalpha() and index not in special
    return keep
