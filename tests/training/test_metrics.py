"""Retrieval and QA metrics against brute-force references (sort every query's list, read the rank)."""

import statistics

import pytest
import torch

from training.metrics import qa_accuracy, retrieval_metrics, retrieval_ranks


def brute_force_ranks(sim, correct_sets):
    """Sort each row; at equal scores put incorrect items first (the pessimistic convention)."""
    ranks = []
    for query, correct in enumerate(correct_sets):
        order = sorted(range(sim.shape[1]), key=lambda d, q=query, c=correct: (-float(sim[q, d]), d in c))
        ranks.append(next(position for position, d in enumerate(order, start=1) if d in correct))
    return ranks


def brute_force_metrics(ranks):
    n = len(ranks)
    return {
        "R@1": 100.0 * sum(r <= 1 for r in ranks) / n,
        "R@5": 100.0 * sum(r <= 5 for r in ranks) / n,
        "R@10": 100.0 * sum(r <= 10 for r in ranks) / n,
        "median_rank": float(statistics.median(ranks)),
        "mean_rank": sum(ranks) / n,
    }


@pytest.mark.parametrize("tied", [False, True])
def test_single_correct_item_matches_brute_force(tied):
    gen = torch.Generator().manual_seed(0)
    sim = torch.randn(40, 30, generator=gen)
    if tied:
        sim = sim.mul(2).round()  # only a handful of distinct values: ties everywhere
    gt = torch.randint(0, 30, (40,), generator=gen)
    expected = brute_force_ranks(sim, [{int(g)} for g in gt])
    assert retrieval_ranks(sim, gt).tolist() == expected
    assert retrieval_metrics(sim, gt) == pytest.approx(brute_force_metrics(expected))
    assert retrieval_metrics(sim, gt.tolist()) == pytest.approx(brute_force_metrics(expected))


def test_several_correct_items_the_best_counts():
    gen = torch.Generator().manual_seed(1)
    sim = torch.randn(25, 12, generator=gen).mul(2).round()
    correct = [set(torch.randperm(12, generator=gen)[: 1 + q % 3].tolist()) for q in range(25)]
    expected = brute_force_ranks(sim, correct)
    assert retrieval_ranks(sim, correct).tolist() == expected
    assert retrieval_metrics(sim, [list(c) for c in correct]) == pytest.approx(brute_force_metrics(expected))


def test_ties_are_pessimistic_and_video_to_text_is_the_transpose():
    constant = torch.zeros(3, 5)
    assert retrieval_ranks(constant, [0, 1, 2]).tolist() == [5, 5, 5]
    assert retrieval_ranks(constant, [{0, 1}, {2}, {0, 1, 2, 3, 4}]).tolist() == [4, 5, 1]
    # 2 videos with 2 captions each: text->video is single-correct, video->text has sets
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.3], [0.1, 0.8], [0.7, 0.6]])  # [texts, videos]
    assert retrieval_ranks(sim, [0, 0, 1, 1]).tolist() == [1, 2, 1, 2]
    assert retrieval_ranks(sim.T, [{0, 1}, {2, 3}]).tolist() == [1, 1]
    metrics = retrieval_metrics(sim, [0, 0, 1, 1], ks=(1,))
    assert metrics == {"R@1": 50.0, "median_rank": 1.5, "mean_rank": 1.5}


def test_retrieval_input_validation():
    with pytest.raises(ValueError):
        retrieval_ranks(torch.zeros(2, 3), [0])
    with pytest.raises(ValueError):
        retrieval_ranks(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError):
        retrieval_ranks(torch.zeros(2, 3), [{0}, set()])


def test_qa_accuracy_overall_and_per_type():
    predictions = ["dog", "red", "two", "cat", "run"]
    answers = ["dog", "blue", "two", "cat", "walk"]
    types = ["what", "color", "count", "what", "what"]
    assert qa_accuracy(predictions, answers) == {"overall": 60.0}
    result = qa_accuracy(predictions, answers, types)
    assert result == pytest.approx({"overall": 60.0, "what": 200 / 3, "color": 0.0, "count": 100.0})
    assert qa_accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3]))["overall"] == pytest.approx(200 / 3)
    with pytest.raises(ValueError):
        qa_accuracy([1], [1, 2])
    with pytest.raises(ValueError):
        qa_accuracy([], [])
