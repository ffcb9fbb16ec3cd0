"""The service loses nothing on the way: a split's captions searched over HTTP score what `clover eval` does.

A tiny synthworld (8 held-out clips of 2 s, distinct captions, frames the test model's size) and a tiny
checkpoint go through `bench/parity.py` as a user would run it: the index is built by `clover index
build` (one segment per clip), a real `clover serve` answers `GET /search`, and `training.evaluate` scores
the same videos. R@K must be equal, and so must every query's whole top-10 list, with and without re-ranking.
"""

from __future__ import annotations

import pytest

from bench.parity import load_samples, markdown, parity

NUM_TEST_VIDEOS = 8


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """Seeded here, not taken from the session: a random tiny model ranks by small cosine gaps (~2e-4, against
    ~5e-5 that fp16 storage moves them), so its weights must not depend on which tests ran before."""
    import torch

    from tests.model.helpers import tiny_model

    torch.manual_seed(0)
    return tiny_model().save_pretrained(tmp_path_factory.mktemp("ckpt") / "tiny")


@pytest.fixture(scope="module")
def world_split(tmp_path_factory):
    from training.synthworld import generate_world

    out = tmp_path_factory.mktemp("synthworld")
    # the test split is capped at 20% of all clips: 40 clips give 8 test clips (~1 s to render)
    summary = generate_world(out, num_videos=5 * NUM_TEST_VIDEOS, seed=0, size=32, workers=1)
    assert summary["splits"]["test"] == NUM_TEST_VIDEOS
    samples = load_samples(out, "test")
    assert len({s.captions[0] for s in samples}) == NUM_TEST_VIDEOS  # one right answer per query
    return samples


def test_http_search_recall_equals_clover_eval(world_split, checkpoint, tmp_path):
    from model import Clover
    from training.evaluate import evaluate

    samples = world_split
    result = parity(checkpoint, samples, tmp_path / "index", rerank_k=10, k=10, workers=0)
    print(markdown(result))

    assert result["num_videos"] == NUM_TEST_VIDEOS and (tmp_path / "index" / "index.json").is_file()
    # what `clover eval` reports for the same checkpoint and videos
    reported = evaluate(Clover.from_pretrained(checkpoint), samples, rerank_k=10, qa=False)["retrieval"]
    for mode, metric in (("dual", "t2v"), ("rerank", "t2v_rerank")):
        row = result["modes"][mode]
        assert row["eval"] == {key: reported[metric][key] for key in ("R@1", "R@5", "R@10")}
        assert row["http"] == row["eval"], (mode, row)
        assert row["recomputed_eval"] == row["eval"]
        assert row["different_top_k"] == []
    assert result["path_prefix"] is None  # the index holds exactly the split
    assert result["max_cosine_delta"] < 1e-3  # fp16 storage moves cosines a little, never the order here
