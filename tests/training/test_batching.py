"""Caption-neighbour batches (training.batching): groups from the pool, no repeats, exact positions, rank slices."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.model.helpers import tiny_model
from training.batching import NeighbourBatchSampler, caption_neighbours, group_neighbours
from training.distributed import DistInfo

REPO = Path(__file__).resolve().parents[2]

CAPTIONS = [
    "a small red circle moves left",
    "a small red square moves left",  # one word from 0
    "a small red circle moves left",  # identical to 0: never its neighbour
    "a large blue cross grows and then moves up",
    "a large blue cross grows and then moves down",  # one word from 3
    "there are two shapes: a white triangle that stays still and a green square that shrinks",
]


def test_caption_neighbours_skip_self_and_identical_captions():
    neighbours = caption_neighbours(tiny_model(), CAPTIONS, pool=3)
    assert neighbours.shape == (6, 3)
    for i, row in enumerate(neighbours):
        assert i not in row.tolist()
        assert all(CAPTIONS[j] != CAPTIONS[i] for j in row if j >= 0)
    assert neighbours[0, 0] == 1 and neighbours[2, 0] == 1  # the one-word variant, not the identical caption
    assert neighbours[3, 0] == 4 and neighbours[4, 0] == 3


def random_neighbours(n: int, pool: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice([j for j in range(n) if j != i], pool, replace=False) for i in range(n)])


def test_batches_are_groups_of_a_seed_and_its_neighbours():
    neighbours = random_neighbours(40, pool=5)
    sampler = NeighbourBatchSampler(neighbours, batch_size=8, group=4, seed=1, info=DistInfo())
    batches = sampler.global_batches(0)
    assert len(batches) == sampler.batches_per_epoch == 5
    for batch in batches:
        assert len(batch) == len(set(batch)) == 8  # no sample twice in a batch (a false negative)
        for start in range(0, 8, 4):
            seed, *members = batch[start: start + 4]
            in_pool = sum(m in neighbours[seed].tolist() for m in members)
            assert in_pool >= 1  # random fill only where the seed's neighbours are already in the batch
    assert batches == sampler.global_batches(0) and batches != sampler.global_batches(1)  # seeded per epoch
    assert list(sampler) == [i for b in batches for i in b]


def test_position_and_rank_slices_follow_the_global_batches():
    neighbours = random_neighbours(64, pool=6)
    whole = NeighbourBatchSampler(neighbours, batch_size=8, group=2, seed=0, info=DistInfo())
    ranks = [NeighbourBatchSampler(neighbours, batch_size=4, group=2, seed=0, info=DistInfo(rank=r, world_size=2))
             for r in range(2)]
    assert ranks[0].global_batches(3) == whole.global_batches(3)
    for rank in ranks:
        rank.set_position(epoch=3, start_batch=2)
    streams = [list(rank) for rank in ranks]
    expected = whole.global_batches(3)[2:]
    assert streams[0] == [i for b in expected for i in b[:4]] and streams[1] == [i for b in expected for i in b[4:]]
    assert len(ranks[0]) == len(streams[0])


def test_group_must_divide_the_batch():
    with pytest.raises(ValueError, match="multiple of the group size"):
        NeighbourBatchSampler(random_neighbours(20, 4), batch_size=6, group=4, seed=0, info=DistInfo())


def test_training_and_evaluation_import_without_faiss():
    """faiss is only for neighbour batching: a GPU image without it still trains and evaluates."""
    code = ("import sys; sys.modules['faiss'] = None\n"  # any `import faiss` now raises ImportError
            "import training.cli_train, training.cli_eval, training.cli_finetune, training.trainer")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_group_neighbours_come_from_a_shared_field():
    keys = ["a", "b", "a", None, "a", "b"]
    neighbours = group_neighbours(keys, pool=3)
    assert neighbours.tolist() == [[2, 4, -1], [5, -1, -1], [0, 4, -1], [-1, -1, -1], [0, 2, -1], [1, -1, -1]]
    sampler = NeighbourBatchSampler(group_neighbours([f"g{i // 4}" for i in range(32)], 3), batch_size=8,
                                    group=4, seed=0, info=DistInfo())
    for batch in sampler.global_batches(0):  # every group of 4 is one scene and its three variants
        assert all(len({i // 4 for i in batch[s: s + 4]}) == 1 for s in range(0, 8, 4))
