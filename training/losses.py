"""Clover's training losses as pure functions of embeddings and logits (METHOD.md, "Objectives").

Nothing here imports the model: every function takes already computed, L2-normalised embeddings (or logits)
and returns a scalar loss, so the losses can be checked against naive references and combined freely by the
objective. Under DDP the caller all-gathers the embeddings (with gradient) and passes the *global* batch:
sample i's positives are row i of every tensor.

Reductions, used consistently:

- a contrastive *direction* (one anchor kind against its candidates) is the mean over anchors;
- where METHOD sums over several positives or candidate kinds (TMA), the kinds are summed, not averaged,
  so ``tri_modal_alignment`` = L_v + L_v' + L_t + L_t' with each term a sum over its three kinds;
- ``info_nce`` averages its two directions (CLIP convention), so it has the scale of one direction;
- ranking, matching and MLM losses are means (over samples, pairs and masked tokens respectively).

All losses are computed in float32 even when the embeddings are half precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_TAU = 0.05  # METHOD: temperature of every contrastive term
DEFAULT_MARGIN = 5.0  # METHOD: ranking margin λ, on τ-scaled logits (0.25 in cosine units at τ=0.05)
DEFAULT_GAMMA = 2.0  # METHOD: focal exponent of the semantic-enhanced MLM


@dataclass
class LossWeights:
    """Weights of the pretraining terms; 0 switches a term off (ablations are flags, not forks).

    The defaults are Clover's total loss L = L_TmA + L_rank + L_mlm. The paper's "like VIOLET" baseline is
    ``LossWeights(tma=0, ranking=0, info_nce=1, mlm=1)`` with ``focal_gamma=0`` and random masking.
    """

    tma: float = 1.0  # tri-modal alignment (exclusive NCE, both anchors, both directions)
    ranking: float = 1.0  # pair-wise ranking: masked pairs match less than the unmasked pair
    mlm: float = 1.0  # (focal) masked language modelling through the fusion encoder
    info_nce: float = 0.0  # plain symmetric V_e <-> T_e InfoNCE (baseline / retrieval fine-tuning)
    matching: float = 0.0  # video-text matching with hard negatives (not in METHOD's total; for re-ranking)
    focal_gamma: float = DEFAULT_GAMMA  # 0 turns the focal MLM into plain cross-entropy


def _logits(anchor: Tensor, candidates: Tensor, tau: float | Tensor) -> Tensor:
    """Cosine logits in float32: embeddings are already L2-normalised, so a dot product is the cosine.

    Autocast is turned off here: under bf16 autocast the product would run in bf16 whatever its inputs, and a
    bf16 cosine (8 bits of mantissa) scaled by 1/τ = 20 is a logit with noise of about 0.08."""
    with torch.autocast(anchor.device.type, enabled=False):
        return anchor.float() @ candidates.float().T / tau


def _diagonal_targets(anchor: Tensor, offset: int) -> Tensor:
    return torch.arange(anchor.shape[0], device=anchor.device) + offset


def directional_nce(anchor: Tensor, candidates: Tensor, tau: float | Tensor, offset: int = 0) -> Tensor:
    """One InfoNCE direction: anchor i must pick candidate ``offset + i`` among all candidates.

    anchor [b, D], candidates [B, D] -> mean over the b anchors of -log softmax. ``offset`` lets a rank pass
    only its local anchors against the gathered candidates (its rows start at ``rank * b``); 0 otherwise.
    """
    logits = _logits(anchor, candidates, tau)  # [b, B]
    return F.cross_entropy(logits, _diagonal_targets(anchor, offset))


def exclusive_nce(
    anchor: Tensor,
    positives: list[Tensor] | tuple[Tensor, ...],
    tau: float | Tensor,
    offset: int = 0,
    reduction: str = "mean",
) -> Tensor:
    """Exclusive NCE of tri-modal alignment (METHOD, L_v): several kinds of positive per anchor.

    anchor [b, D]; positives: K tensors [B, D] (Clover: K=3), row ``offset + i`` of each is a positive of
    anchor i. Every positive competes with the negatives of all K kinds (the b x KB logit matrix), but not
    with the other K-1 positives of its own sample, whose logits are set to -inf ("exclusive").
    ``reduction="mean"``: mean over anchors of the sum over the K positives of -log p(positive);
    ``"none"``: the per-term losses [b, K].
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', not {reduction!r}")
    num_kinds = len(positives)
    batch = positives[0].shape[0]
    logits = _logits(anchor, torch.cat(list(positives), dim=0), tau)  # [b, K*B], kind-major columns
    rows = torch.arange(anchor.shape[0], device=logits.device)
    own = rows + offset  # column of anchor i's own sample inside each kind's block
    per_term = []
    for kind in range(num_kinds):
        masked = logits.clone()
        for other in range(num_kinds):
            if other != kind:
                masked[rows, other * batch + own] = float("-inf")  # the other positives are no negatives
        per_term.append(F.cross_entropy(masked, kind * batch + own, reduction="none"))  # [b]
    losses = torch.stack(per_term, dim=1)  # [b, K]
    return losses if reduction == "none" else losses.sum(dim=1).mean()


def reverse_nce(candidates: list[Tensor] | tuple[Tensor, ...], anchor: Tensor, tau: float | Tensor) -> Tensor:
    """Reverse direction of TMA (METHOD, L_v'): each candidate kind as anchor over the videos (or texts).

    candidates: K tensors [B, D]; anchor [B, D]. Sum over kinds of ``directional_nce(kind, anchor)``.
    """
    return torch.stack([directional_nce(kind, anchor, tau) for kind in candidates]).sum()


def tri_modal_alignment(
    video_e: Tensor,
    text_e: Tensor,
    text_m: Tensor,
    video_m: Tensor,
    fused_vm: Tensor,
    fused_tm: Tensor,
    tau: float | Tensor = DEFAULT_TAU,
) -> tuple[Tensor, dict[str, Tensor]]:
    """L_TmA = L_V + L_T of METHOD, on the global batch (all [B, D], L2-normalised, row i = sample i).

    fused_vm = fused(V_m, T_e) [CLS] embedding (M_Vmf), fused_tm = fused(V_e, T_m) (M_Tmf).
    Video anchor with positives {T_e, T_m, M_Vmf}; text anchor with {V_e, V_m, M_Tmf}; plus the reverse
    directions. Returns (loss, parts) with the four detached parts for logging.
    """
    video_positives = (text_e, text_m, fused_vm)
    text_positives = (video_e, video_m, fused_tm)
    parts = {
        "tma_video_anchor": exclusive_nce(video_e, video_positives, tau),  # L_v
        "tma_video_reverse": reverse_nce(video_positives, video_e, tau),  # L_v'
        "tma_text_anchor": exclusive_nce(text_e, text_positives, tau),  # L_t
        "tma_text_reverse": reverse_nce(text_positives, text_e, tau),  # L_t'
    }
    loss = torch.stack(list(parts.values())).sum()
    return loss, {name: value.detach() for name, value in parts.items()}


def pairwise_ranking(
    video_e: Tensor,
    text_e: Tensor,
    text_m: Tensor,
    video_m: Tensor,
    tau: float | Tensor = DEFAULT_TAU,
    margin: float = DEFAULT_MARGIN,
) -> Tensor:
    """Pair-wise ranking (METHOD, L_rank): a masked pair must score ``margin`` (in τ-scaled logits) less.

    All [B, D]. Only matched pairs (row i with row i) are compared; hinge on both the masked-text and the
    masked-video pair, summed, then the mean over the batch.
    """
    full = (video_e.float() * text_e.float()).sum(-1) / tau  # [B] s(V_e, T_e)/τ
    masked_text = (video_e.float() * text_m.float()).sum(-1) / tau  # [B] s(V_e, T_m)/τ
    masked_video = (video_m.float() * text_e.float()).sum(-1) / tau  # [B] s(V_m, T_e)/τ
    hinge = F.relu(margin - (full - masked_text)) + F.relu(margin - (full - masked_video))
    return hinge.mean()


def focal_mlm(
    logits: Tensor, labels: Tensor, gamma: float = DEFAULT_GAMMA, reduction: str = "mean"
) -> Tensor:
    """Focal loss over masked tokens (METHOD, semantic-enhanced MLM): -(1 - p)^γ log p of the true token.

    logits [N, V] or [B, L, V]; labels [N] or [B, L] with -100 at positions that are not predicted.
    ``reduction="mean"`` averages over predicted tokens, so γ=0 equals ``F.cross_entropy`` (ignore_index -100);
    METHOD's (1/B) Σ_i Σ_j is ``focal_mlm(..., reduction="sum") / B``. With no predicted token the loss is 0
    (not NaN as in cross-entropy), so a batch without masks cannot poison training.
    Only the predicted rows go through log-softmax: at BERT's 30k vocabulary that is the memory that matters.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', not {reduction!r}")
    flat_logits = logits.reshape(-1, logits.shape[-1])  # [N, V]
    flat_labels = labels.reshape(-1)  # [N]
    keep = flat_labels != -100
    log_probs = F.log_softmax(flat_logits[keep].float(), dim=-1)  # [M, V]
    true_log_prob = log_probs.gather(1, flat_labels[keep].unsqueeze(1)).squeeze(1)  # [M]
    if gamma == 0:
        per_token = -true_log_prob
    else:
        per_token = -((1.0 - true_log_prob.exp()).clamp_min(0.0) ** gamma) * true_log_prob
    if reduction == "none":
        return per_token
    total = per_token.sum()  # an empty selection still sums to a 0 that is connected to the graph
    if reduction == "sum":
        return total
    return total / keep.sum().clamp_min(1)  # tensor division: no host sync on GPU


def bag_of_words(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Multi-label word prediction as a softmax with the target mass spread evenly over a sample's words
    (Joulin et al. 2016; Mahajan et al. 2018): -(1/|S_i|) sum over w in S_i of log softmax(logits_i)[w].

    logits [B, V]; targets [B, V] bool, the words S_i of sample i. Samples without a target word count as 0:
    ``reduction="mean"`` averages over the samples that have one, ``"sum"`` sums over all.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    weights = targets.float()
    counts = weights.sum(1)  # [B]
    log_probs = F.log_softmax(logits.float(), dim=-1)
    per_sample = -(weights * log_probs).sum(1) / counts.clamp_min(1)
    total = per_sample.sum()
    if reduction == "sum":
        return total
    return total / (counts > 0).sum().clamp_min(1)


def info_nce(video_e: Tensor, text_e: Tensor, tau: float | Tensor = DEFAULT_TAU) -> Tensor:
    """Symmetric InfoNCE between matched rows of ``video_e`` and ``text_e`` (both [B, D]).

    The mean of the video->text and text->video directions (CLIP convention). Used by the "like VIOLET"
    baseline and by retrieval fine-tuning.
    """
    return 0.5 * (directional_nce(video_e, text_e, tau) + directional_nce(text_e, video_e, tau))


def nce_with_hard_negatives(
    anchor: Tensor, candidates: Tensor, negatives: Tensor, valid: Tensor, tau: float | Tensor, offset: int = 0
) -> Tensor:
    """One InfoNCE direction with one extra, sample-specific negative per anchor (NegCLIP's caption swaps).

    anchor [b, D] must pick candidate ``offset + i`` of candidates [B, D] over the in-batch candidates *and*
    its own hard negative, row i of negatives [b, D]; ``valid`` [b] bool says which rows have one (the rest are
    plain InfoNCE rows). Mean over anchors of -log softmax.
    """
    in_batch = _logits(anchor, candidates, tau)  # [b, B]
    own = (anchor.float() * negatives.float()).sum(-1, keepdim=True) / tau  # [b, 1]
    own = own.masked_fill(~valid.unsqueeze(1), float("-inf"))
    return F.cross_entropy(torch.cat([in_batch, own], dim=1), _diagonal_targets(anchor, offset))


@torch.no_grad()
def sample_hard_negatives(
    sim: Tensor, generator: torch.Generator | None = None, exclude: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """In-batch hard negatives for video-text matching (ALBEF-style).

    sim [B, B]: video-by-text logits (cosine / τ), row i = video i, column j = text j; the diagonal are the
    true pairs. Video i draws a negative text j != i with probability softmax_j(sim[i]) renormalised without
    the diagonal, so texts that nearly match are chosen most often; text j draws a negative video the same
    way from column j. ``exclude`` [B, B] bool marks further pairs that must not be drawn (e.g. duplicate
    captions); a row with nothing left falls back to a uniform draw over the other samples.
    Returns (negative text index for each video [B], negative video index for each text [B]).
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be square [B, B], got {tuple(sim.shape)}")
    batch = sim.shape[0]
    if batch < 2:
        raise ValueError("hard negatives need at least two samples in the batch")
    diagonal = torch.eye(batch, dtype=torch.bool, device=sim.device)
    if exclude is None:
        exclude = torch.zeros_like(diagonal)
    exclude = exclude.to(device=sim.device, dtype=torch.bool)

    def draw(scores: Tensor, excluded: Tensor) -> Tensor:  # scores, excluded [B, B], one row per anchor
        logits = scores.float().masked_fill(diagonal | excluded, float("-inf"))
        nothing_left = torch.isinf(logits).all(dim=1, keepdim=True)  # [B, 1]
        uniform = torch.zeros_like(logits).masked_fill(diagonal, float("-inf"))
        logits = torch.where(nothing_left, uniform, logits)
        probs = logits.softmax(dim=1)
        if generator is not None and generator.device != probs.device:
            # the trainer's generator lives on the CPU (same draws on every device); a [B, B] copy is cheap
            return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(1).to(probs.device)  # [B]
        return torch.multinomial(probs, 1, generator=generator).squeeze(1)  # [B]

    negative_text = draw(sim, exclude)  # for each video a text
    negative_video = draw(sim.T, exclude.T)  # for each text a video
    return negative_text, negative_video


def video_text_matching_loss(pos_logits: Tensor, neg_logits: Tensor) -> Tensor:
    """Binary video-text matching: cross-entropy with label 1 for the B true pairs, 0 for the negatives.

    pos_logits [B, 2], neg_logits [N, 2] (usually N = 2B: a hard negative text per video and a hard
    negative video per text). Mean over all B + N pairs, as in ALBEF.
    """
    logits = torch.cat([pos_logits, neg_logits], dim=0).float()  # [B + N, 2]
    labels = torch.cat(
        [
            torch.ones(pos_logits.shape[0], dtype=torch.long, device=logits.device),
            torch.zeros(neg_logits.shape[0], dtype=torch.long, device=logits.device),
        ]
    )
    return F.cross_entropy(logits, labels)
