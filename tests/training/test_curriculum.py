"""The easy-first curriculum: the first steps draw only from the shortest-captioned samples, then the whole set."""

import pytest
import torch
from torch.utils.data import Dataset

from tests.model.helpers import tiny_model
from training.data import caption_length
from training.finetune import QuestionDataset
from training.trainer import TrainConfig, Trainer, shortest_captioned


class IndexedCaptions(Dataset):
    """Item i is just its index, with a caption of `lengths[i]` words."""

    def __init__(self, lengths: list[int]):
        self.lengths = lengths
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> int:
        return i

    def item_caption_lengths(self) -> list[float]:
        return [float(n) for n in self.lengths]


LENGTHS = [7, 2, 9, 4, 12, 3, 8, 15, 5, 11, 6, 14, 10, 13, 16, 17, 18, 19, 20, 21]  # 20 items


def make_trainer(tmp_path, curriculum_steps: int, fraction: float = 0.3) -> Trainer:
    cfg = TrainConfig(out=str(tmp_path), batch_size=2, max_steps=20, warmup_steps=1, workers=0, seed=5,
                      curriculum_steps=curriculum_steps, curriculum_fraction=fraction)
    return Trainer(tiny_model(), lambda model, batch, generator: None, IndexedCaptions(LENGTHS),
                   lambda items: torch.tensor(items), cfg)


def take(trainer: Trainer, count: int) -> list[list[int]]:
    batches = trainer._batches()
    return [next(batches).tolist() for _ in range(count)]


def test_shortest_captioned_keeps_the_shortest_share_in_item_order():
    assert shortest_captioned([5.0, 3.0, 9.0, 3.0, 7.0], 0.4) == [1, 3]
    assert shortest_captioned([5.0, 3.0, 9.0], 0.01) == [1]  # at least one
    assert shortest_captioned([2.0, 1.0], 1.0) == [0, 1]
    with pytest.raises(ValueError, match="curriculum_fraction"):
        shortest_captioned([1.0], 0.0)


def test_curriculum_batches_come_from_the_simple_samples_then_from_all(tmp_path):
    trainer = make_trainer(tmp_path, curriculum_steps=4)
    easy = {i for i, n in enumerate(LENGTHS) if n <= 7}  # the 6 shortest of 20
    batches = take(trainer, 4 + 10)
    curriculum, first_epoch = batches[:4], batches[4:]
    assert all(set(b) <= easy for b in curriculum)
    assert len({i for b in curriculum[:3] for i in b}) == 6  # 3 batches of 2 are one pass over the 6
    assert sorted(i for b in first_epoch for i in b) == list(range(20))  # then a full epoch of everything


@pytest.mark.parametrize("step", [2, 3, 4, 7])
def test_position_follows_the_step_inside_and_after_the_curriculum(tmp_path, step):
    reference = take(make_trainer(tmp_path / "a", curriculum_steps=4), 12)
    resumed = make_trainer(tmp_path / "b", curriculum_steps=4)
    resumed.step = step
    assert take(resumed, 12 - step) == reference[step:]


def test_without_curriculum_the_batches_are_unchanged(tmp_path):
    batches = take(make_trainer(tmp_path, curriculum_steps=0), 10)
    assert sorted(i for b in batches for i in b) == list(range(20))


def test_caption_length_is_mean_words():
    assert caption_length(["a red circle", "a small red circle moves"]) == 4.0
    assert caption_length([]) == 0.0


def test_question_dataset_needs_its_videos_for_a_curriculum():
    dataset = QuestionDataset([{"row": 0, "question": "q", "label": 0, "candidates": None}])
    with pytest.raises(ValueError, match="end-to-end"):
        dataset.item_caption_lengths()
