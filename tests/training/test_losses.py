"""Each loss against a naive, loop-based reference written straight from METHOD.md's formulas."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.losses import (
    LossWeights,
    bag_of_words,
    directional_nce,
    exclusive_nce,
    focal_mlm,
    info_nce,
    nce_with_hard_negatives,
    pairwise_ranking,
    reverse_nce,
    sample_hard_negatives,
    tri_modal_alignment,
    video_text_matching_loss,
)

TAU = 0.07
ATOL = 1e-5


def unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, dtype=torch.float64), dim=-1)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return sum(float(x) * float(y) for x, y in zip(a.detach(), b.detach(), strict=True))


# --- naive references: explicit sums over samples, one exp at a time -------------------------------------


def ref_exclusive(anchor, positives, tau):
    """METHOD's L_v divided by B: Σ over the K positives, mean over anchors."""
    batch = anchor.shape[0]
    total = 0.0
    for i in range(batch):
        z = sum(math.exp(dot(anchor[i], kind[j]) / tau) for kind in positives for j in range(batch) if j != i)
        for kind in positives:
            pos = math.exp(dot(anchor[i], kind[i]) / tau)
            total += -math.log(pos / (pos + z))
    return total / batch


def ref_direction(anchor, candidates, tau):
    """Mean over i of -log softmax_j s(anchor_i, candidate_j)/τ at j = i."""
    batch = anchor.shape[0]
    total = 0.0
    for i in range(batch):
        denom = sum(math.exp(dot(anchor[i], candidates[j]) / tau) for j in range(batch))
        total += -(dot(anchor[i], candidates[i]) / tau - math.log(denom))
    return total / batch


def ref_ranking(v, t, tm, vm, tau, margin):
    total = 0.0
    for i in range(v.shape[0]):
        full = dot(v[i], t[i]) / tau
        total += max(0.0, -(full - dot(v[i], tm[i]) / tau) + margin)
        total += max(0.0, -(full - dot(vm[i], t[i]) / tau) + margin)
    return total / v.shape[0]


def ref_focal(logits, labels, gamma):
    values = []
    for row, label in zip(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), strict=True):
        if int(label) == -100:
            continue
        exps = [math.exp(float(x)) for x in row]
        p = exps[int(label)] / sum(exps)
        values.append(-((1 - p) ** gamma) * math.log(p))
    return sum(values) / len(values)


def ref_bag_of_words(logits, targets):
    values = []
    for row, wanted in zip(logits.tolist(), targets.tolist(), strict=True):
        words = [w for w, on in enumerate(wanted) if on]
        if not words:
            continue
        log_z = math.log(sum(math.exp(x) for x in row))
        values.append(sum(log_z - row[w] for w in words) / len(words))
    return values


# --- tests ------------------------------------------------------------------------------------------------


def test_exclusive_nce_matches_reference():
    anchor, positives = unit(6, 8), [unit(6, 8) for _ in range(3)]
    got = exclusive_nce(anchor, positives, TAU)
    assert got.item() == pytest.approx(ref_exclusive(anchor, positives, TAU), abs=ATOL)


def test_exclusive_nce_offset_gives_the_rows_of_the_global_loss():
    anchor, positives = unit(6, 8), [unit(6, 8) for _ in range(3)]
    full = exclusive_nce(anchor, positives, TAU, reduction="none")  # [6, 3]
    local = exclusive_nce(anchor[2:4], positives, TAU, offset=2, reduction="none")
    torch.testing.assert_close(local, full[2:4])


def test_exclusive_nce_ignores_the_other_positives_of_the_same_sample():
    anchor, positives = unit(5, 8), [unit(5, 8) for _ in range(3)]
    before = exclusive_nce(anchor, positives, TAU, reduction="none")  # [5, 3]
    # Make sample 1's masked-text and fused positives coincide with its anchor: were they negatives of the
    # full-text term, they would dominate its denominator (logit 1/τ).
    changed = [p.clone() for p in positives]
    changed[1][1] = anchor[1]
    changed[2][1] = anchor[1]
    after = exclusive_nce(anchor, changed, TAU, reduction="none")
    assert after[1, 0].item() == pytest.approx(before[1, 0].item(), abs=1e-9)
    assert after[1, 1] < before[1, 1] and after[1, 2] < before[1, 2]  # their own terms did change
    # ...but as negatives of every *other* anchor they count, whatever their kind.
    assert not torch.allclose(after[0], before[0])


def test_exclusive_nce_negatives_of_all_kinds_count():
    anchor, positives = unit(4, 8), [unit(4, 8) for _ in range(3)]
    before = exclusive_nce(anchor, positives, TAU, reduction="none")
    changed = [p.clone() for p in positives]
    changed[2][3] = anchor[0]  # a fused negative of anchor 0 becomes very similar
    after = exclusive_nce(anchor, changed, TAU, reduction="none")
    assert (after[0] > before[0] + 1.0).all()


def test_reverse_and_directional_match_reference():
    anchor, candidates = unit(5, 8), [unit(5, 8) for _ in range(3)]
    assert directional_nce(anchor, candidates[0], TAU).item() == pytest.approx(
        ref_direction(anchor, candidates[0], TAU), abs=ATOL
    )
    expected = sum(ref_direction(kind, anchor, TAU) for kind in candidates)
    assert reverse_nce(candidates, anchor, TAU).item() == pytest.approx(expected, abs=ATOL)


def test_tri_modal_alignment_is_both_anchors_both_directions():
    v, t, tm, vm, mv, mt = (unit(6, 16) for _ in range(6))
    loss, parts = tri_modal_alignment(v, t, tm, vm, mv, mt, TAU)
    l_v = ref_exclusive(v, [t, tm, mv], TAU)
    l_v_rev = sum(ref_direction(c, v, TAU) for c in (t, tm, mv))
    l_t = ref_exclusive(t, [v, vm, mt], TAU)
    l_t_rev = sum(ref_direction(c, t, TAU) for c in (v, vm, mt))
    assert parts["tma_video_anchor"].item() == pytest.approx(l_v, abs=ATOL)
    assert parts["tma_video_reverse"].item() == pytest.approx(l_v_rev, abs=ATOL)
    assert parts["tma_text_anchor"].item() == pytest.approx(l_t, abs=ATOL)
    assert parts["tma_text_reverse"].item() == pytest.approx(l_t_rev, abs=ATOL)
    assert loss.item() == pytest.approx(l_v + l_v_rev + l_t + l_t_rev, abs=ATOL)
    assert all(not p.requires_grad for p in parts.values())


def test_tri_modal_alignment_gradients_reach_every_input_and_are_finite():
    inputs = [unit(4, 8).float().requires_grad_() for _ in range(6)]
    loss, _ = tri_modal_alignment(*inputs, tau=torch.tensor(TAU))
    loss.backward()
    for x in inputs:
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_half_precision_inputs_give_a_float32_loss():
    inputs = [unit(4, 8).half() for _ in range(6)]
    loss, _ = tri_modal_alignment(*inputs, tau=TAU)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_nce_logits_stay_float32_under_bf16_autocast():
    # Autocast would run the similarity product in bf16 even on float32 inputs: the losses must not follow it.
    inputs = [unit(16, 64).float() for _ in range(6)]
    exact, _ = tri_modal_alignment(*inputs, tau=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast, _ = tri_modal_alignment(*inputs, tau=0.05)
        plain = info_nce(inputs[0], inputs[1], 0.05)
    torch.testing.assert_close(autocast, exact)
    torch.testing.assert_close(plain, info_nce(inputs[0], inputs[1], 0.05))


def test_info_nce_is_the_mean_of_both_directions():
    v, t = unit(7, 8), unit(7, 8)
    expected = 0.5 * (ref_direction(v, t, TAU) + ref_direction(t, v, TAU))
    assert info_nce(v, t, TAU).item() == pytest.approx(expected, abs=ATOL)


def ref_hard_negative_direction(anchor, candidates, negatives, valid, tau, offset):
    """Mean over i of -log of the positive's share among all candidates plus, where valid, i's own negative."""
    total = 0.0
    for i in range(anchor.shape[0]):
        terms = [math.exp(dot(anchor[i], c) / tau) for c in candidates]
        if valid[i]:
            terms.append(math.exp(dot(anchor[i], negatives[i]) / tau))
        total += -math.log(terms[offset + i] / sum(terms))
    return total / anchor.shape[0]


def test_nce_with_hard_negatives_matches_reference():
    anchor, candidates, negatives = unit(4, 8), unit(10, 8), unit(4, 8)
    valid = torch.tensor([True, False, True, True])
    got = nce_with_hard_negatives(anchor, candidates, negatives, valid, TAU, offset=3)
    assert got.item() == pytest.approx(ref_hard_negative_direction(anchor, candidates, negatives, valid, TAU, 3),
                                       abs=ATOL)
    none = torch.zeros(4, dtype=torch.bool)  # without negatives: the plain direction
    assert nce_with_hard_negatives(anchor, candidates[3:7], negatives, none, TAU).item() == pytest.approx(
        ref_direction(anchor, candidates[3:7], TAU), abs=ATOL)


def test_a_hard_negative_close_to_the_anchor_raises_the_loss_and_gets_pushed_away():
    anchor, candidates = unit(3, 8), unit(3, 8)
    near = F.normalize(anchor + 0.05 * torch.randn(3, 8, dtype=torch.float64), dim=-1).requires_grad_()
    valid = torch.ones(3, dtype=torch.bool)
    loss = nce_with_hard_negatives(anchor, candidates, near, valid, TAU)
    assert loss.item() > nce_with_hard_negatives(anchor, candidates, near, ~valid, TAU).item()
    loss.backward()
    assert ((near.grad * anchor).sum(-1) > 0).all()  # descending the gradient lowers each negative's similarity


def test_pairwise_ranking_matches_reference_and_has_gradients():
    v, t, tm, vm = (unit(6, 8).float().requires_grad_() for _ in range(4))
    got = pairwise_ranking(v, t, tm, vm, tau=0.05, margin=5.0)
    assert got.item() == pytest.approx(ref_ranking(v, t, tm, vm, 0.05, 5.0), abs=ATOL)
    got.backward()
    assert v.grad.abs().sum() > 0 and tm.grad.abs().sum() > 0 and vm.grad.abs().sum() > 0


def test_pairwise_ranking_is_zero_when_margins_hold():
    t = unit(4, 8)
    v = t.clone()  # s(V_e, T_e) = 1
    orthogonal = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    orthogonal = F.normalize(orthogonal - (orthogonal * t).sum(-1, keepdim=True) * t, dim=-1)  # s = 0
    # gap of 1/τ = 20 logits > margin 5 on both hinges
    assert pairwise_ranking(v, t, orthogonal, orthogonal, tau=0.05, margin=5.0).item() == 0.0
    # at margin 25 the gap of 20 falls short by 5 on each hinge
    assert pairwise_ranking(v, t, orthogonal, orthogonal, tau=0.05, margin=25.0).item() == pytest.approx(10.0)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_focal_mlm_matches_reference(gamma):
    logits = torch.randn(3, 5, 11, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 5))
    labels[torch.rand(3, 5) < 0.5] = -100
    labels[0, 0] = 4  # at least one predicted token
    assert focal_mlm(logits, labels, gamma).item() == pytest.approx(
        ref_focal(logits, labels, gamma), abs=ATOL
    )


def test_focal_mlm_with_gamma_zero_is_cross_entropy():
    logits = torch.randn(20, 30, requires_grad=True)
    labels = torch.randint(0, 30, (20,))
    labels[::3] = -100
    focal = focal_mlm(logits, labels, gamma=0.0)
    torch.testing.assert_close(focal, F.cross_entropy(logits, labels, ignore_index=-100))
    (grad_focal,) = torch.autograd.grad(focal, logits)
    (grad_ce,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    torch.testing.assert_close(grad_focal, grad_ce)


def test_focal_mlm_down_weights_easy_tokens_and_survives_no_masks():
    logits = torch.zeros(2, 4)
    logits[0, 1] = 10.0  # confident and right: focal ≪ CE
    labels = torch.tensor([1, -100])
    assert focal_mlm(logits, labels, 2.0) < 1e-3 * F.cross_entropy(logits, labels)
    none_masked = torch.randn(2, 3, 4, requires_grad=True)
    loss = focal_mlm(none_masked, torch.full((2, 3), -100))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(none_masked.grad, torch.zeros_like(none_masked))
    assert focal_mlm(logits, labels, 2.0, reduction="none").shape == (1,)


def test_bag_of_words_matches_reference():
    logits = torch.randn(4, 9, dtype=torch.float64)
    targets = torch.rand(4, 9) < 0.3
    targets[0] = False  # a sample with no word: counts as 0
    targets[1, 2] = True
    per_sample = ref_bag_of_words(logits, targets)
    assert bag_of_words(logits, targets).item() == pytest.approx(sum(per_sample) / len(per_sample), abs=ATOL)
    assert bag_of_words(logits, targets, reduction="sum").item() == pytest.approx(sum(per_sample), abs=ATOL)


def test_bag_of_words_raises_every_target_word_and_lowers_the_rest():
    logits = torch.zeros(1, 5, requires_grad=True)
    targets = torch.tensor([[True, False, True, False, False]])
    bag_of_words(logits, targets).backward()
    assert (logits.grad[0, [0, 2]] < 0).all() and (logits.grad[0, [1, 3, 4]] > 0).all()
    assert bag_of_words(torch.randn(2, 5), torch.zeros(2, 5, dtype=torch.bool)).item() == 0.0


def test_hard_negatives_never_draw_the_positive_and_follow_similarity():
    gen = torch.Generator().manual_seed(0)
    sim = torch.zeros(4, 4)
    sim[0, 2] = 5.0  # text 2 is by far the hardest negative for video 0
    sim[3, 1] = 5.0  # video 3 is the hardest negative for text 1
    counts_text, counts_video = torch.zeros(4, 4), torch.zeros(4, 4)
    for _ in range(200):
        neg_text, neg_video = sample_hard_negatives(sim, gen)
        counts_text[torch.arange(4), neg_text] += 1
        counts_video[torch.arange(4), neg_video] += 1
    assert counts_text.diagonal().sum() == 0 and counts_video.diagonal().sum() == 0
    # e^5 / (e^5 + 2) ≈ 0.987
    assert counts_text[0, 2] > 0.95 * 200 and counts_video[1, 3] > 0.95 * 200
    assert (counts_text[1, [0, 2, 3]] > 30).all()  # uniform rows stay spread (expected 67 each)


def test_hard_negatives_respect_exclusions_and_are_deterministic():
    sim = torch.randn(4, 4)
    exclude = torch.zeros(4, 4, dtype=torch.bool)
    exclude[0, 1] = True  # video 0 and text 1 share a caption: not a negative either way
    exclude[3, [0, 1, 2]] = True  # nothing left for video 3: uniform fallback over the other texts
    fallback = set()
    for seed in range(30):
        neg_text, neg_video = sample_hard_negatives(sim, torch.Generator().manual_seed(seed), exclude)
        assert int(neg_text[0]) in (2, 3)
        assert int(neg_video[1]) == 2  # videos 0 and 3 excluded, 1 is its own
        assert int(neg_text[3]) != 3
        fallback.add(int(neg_text[3]))
    assert len(fallback) > 1
    a = sample_hard_negatives(sim, torch.Generator().manual_seed(7))
    b = sample_hard_negatives(sim, torch.Generator().manual_seed(7))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError):
        sample_hard_negatives(torch.zeros(1, 1))


def test_video_text_matching_loss_matches_reference():
    pos, neg = torch.randn(3, 2, requires_grad=True), torch.randn(6, 2)
    total = 0.0
    for row, label in [(r, 1) for r in pos.detach()] + [(r, 0) for r in neg]:
        exps = [math.exp(float(x)) for x in row]
        total += -math.log(exps[label] / sum(exps))
    loss = video_text_matching_loss(pos, neg)
    assert loss.item() == pytest.approx(total / 9, abs=ATOL)
    loss.backward()
    assert pos.grad.abs().sum() > 0


def test_loss_weights_default_to_clovers_total():
    weights = LossWeights()
    assert (weights.tma, weights.ranking, weights.mlm, weights.info_nce, weights.matching) == (1, 1, 1, 0, 0)
    assert weights.focal_gamma == 2.0
