"""The Trainer on the CPU: resuming from a checkpoint continues with the identical loss sequence; bf16 autocast
trains with float32 weights."""

import copy
import json
import math

import pytest
import torch

from tests.model.helpers import deterministic_tiny_model, tiny_model
from tests.video_factory import write_video
from training.data import FrameCache, TextCollator, VideoTextDataset, read_jsonl_manifest
from training.masking import SemanticTextMasker
from training.objective import CloverObjective, objective_config
from training.trainer import TrainConfig, Trainer

CAPTIONS = ["a small red circle moves left", "a large blue square grows", "a white cross stays still",
            "a green triangle moves up", "a small yellow circle shrinks", "a purple square moves right"]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_data")
    (root / "videos").mkdir()
    lines = []
    for i, caption in enumerate(CAPTIONS * 2):
        write_video(root / "videos" / f"v{i}.mp4", num_frames=8, width=32, height=32, fps=8, seed=i)
        lines.append(json.dumps({"video_id": f"v{i}", "path": f"videos/v{i}.mp4", "captions": [caption, f"{caption} slowly"]}))
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


def make_trainer(dataset_dir, out, max_steps, neighbour_groups=0, max_shift=0, manifest=None, group_key="",
                 curriculum_steps=0, precision="auto", model=None):
    model = model or tiny_model()  # dropout and stochastic depth on: the RNG state must be restored too
    samples = read_jsonl_manifest(manifest or dataset_dir / "train.jsonl", root=dataset_dir)
    cache = FrameCache.build(samples, dataset_dir / "cache.npy", frames=8, size=32, workers=1)
    dataset = VideoTextDataset(samples, model.config.num_frames, model.config.image_size, train=True, cache=cache, seed=3,
                               max_shift=max_shift)
    masker = SemanticTextMasker(model.tokenizer, max_length=16, seed=3)
    cfg = TrainConfig(out=str(out), batch_size=4, max_steps=max_steps, warmup_steps=2, lr=1e-3, workers=0,
                      save_every=3, log_every=1, seed=3, neighbour_groups=neighbour_groups, group_key=group_key,
                      curriculum_steps=curriculum_steps, curriculum_fraction=0.5, precision=precision)
    return Trainer(model, CloverObjective(objective_config("clover", matching_pairs=4)), dataset,
                   TextCollator(model.tokenizer, 16, masker), cfg)


@pytest.mark.parametrize(("neighbour_groups", "max_shift", "curriculum_steps"),
                         [(0, 0, 0), (2, 0, 0), (0, 3, 0), (0, 0, 5)],
                         ids=["random-batches", "neighbour-batches", "shifted-clips", "inside-a-curriculum"])
def test_resume_continues_with_the_identical_loss_sequence(dataset_dir, tmp_path, neighbour_groups, max_shift,
                                                           curriculum_steps):
    full = make_trainer(dataset_dir, tmp_path / "full", max_steps=7, neighbour_groups=neighbour_groups,
                        max_shift=max_shift, curriculum_steps=curriculum_steps).train(progress=False)
    assert (tmp_path / "full" / "checkpoint-0000003" / "trainer_state.pt").is_file()
    assert (tmp_path / "full" / "final" / "model.safetensors").is_file()

    resumed_trainer = make_trainer(dataset_dir, tmp_path / "resumed", max_steps=7, neighbour_groups=neighbour_groups,
                                   max_shift=max_shift, curriculum_steps=curriculum_steps)
    resumed_trainer.resume(tmp_path / "full" / "checkpoint-0000003")
    assert resumed_trainer.step == 3
    resumed = resumed_trainer.train(progress=False)
    # 7 steps cross an epoch boundary (12 samples / batch 4 = 3 batches per epoch).
    assert [r["step"] for r in resumed] == [4, 5, 6, 7]
    assert [r["loss"] for r in resumed] == [r["loss"] for r in full[3:]]
    assert [r["lr"] for r in resumed] == [r["lr"] for r in full[3:]]


def test_shifted_clips_are_reproducible_per_epoch_and_only_in_training(dataset_dir):
    samples = read_jsonl_manifest(dataset_dir / "train.jsonl")
    cache = FrameCache.build(samples, dataset_dir / "cache.npy", frames=8, size=32, workers=1)

    def dataset(train, max_shift):
        return VideoTextDataset(samples, 4, 32, train=train, cache=cache, seed=3, max_shift=max_shift)

    shifted, plain = dataset(True, 4), dataset(True, 0)
    first = [shifted[i]["frames"] for i in range(len(shifted))]
    again = dataset(True, 4)
    assert all(a.equal(again[i]["frames"]) for i, a in enumerate(first))
    assert any(not a.equal(plain[i]["frames"]) for i, a in enumerate(first))  # the clips did move
    shifted.epoch = 1
    assert any(not a.equal(shifted[i]["frames"]) for i, a in enumerate(first))  # a new offset each epoch
    evaluation = dataset(False, 4)
    assert evaluation.max_shift == 0
    assert evaluation[0]["frames"].equal(dataset(False, 0)[0]["frames"])


def test_group_key_batches_samples_that_share_a_manifest_field(dataset_dir, tmp_path):
    rows = [json.loads(line) for line in (dataset_dir / "train.jsonl").read_text().splitlines()]
    grouped = tmp_path / "grouped.jsonl"  # pairs (0, 1), (2, 3), ...: a scene and its shape variant
    grouped.write_text("".join(json.dumps({**row, "group": f"g{i // 2}"}) + "\n" for i, row in enumerate(rows)))
    trainer = make_trainer(dataset_dir, tmp_path / "run", max_steps=2, neighbour_groups=2, manifest=grouped,
                           group_key="group")
    trainer.train(progress=False)
    assert trainer.sampler.neighbours[:, 0].tolist() == [i ^ 1 for i in range(len(rows))]
    for batch in trainer.sampler.global_batches(0):
        assert all(batch[k] // 2 == batch[k + 1] // 2 for k in range(0, len(batch), 2))
    with pytest.raises(ValueError, match="no sample of the training data has that field"):
        make_trainer(dataset_dir, tmp_path / "bad", max_steps=1, neighbour_groups=2, group_key="scene_group")


def test_bf16_autocast_trains_on_the_cpu_with_float32_weights_and_losses(dataset_dir, tmp_path):
    # The recipe's `--precision bf16` on a CPU: autocast around each step, weights and optimizer stay float32.
    torch.manual_seed(0)
    start = deterministic_tiny_model()
    runs = {}
    for precision in ("fp32", "bf16"):
        trainer = make_trainer(dataset_dir, tmp_path / precision, max_steps=3, precision=precision,
                               model=copy.deepcopy(start))
        runs[precision] = (trainer, trainer.train(progress=False))
    trainer, history = runs["bf16"]
    assert trainer.amp_dtype == torch.bfloat16 and runs["fp32"][0].amp_dtype is None
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert all(math.isfinite(row["loss"]) for row in history)
    moved = [not torch.equal(p, q) for p, q in zip(trainer.model.parameters(), start.parameters(), strict=True)]
    assert sum(moved) > len(moved) // 2
    # Same weights, same first batch: bf16 changes the first loss by rounding only.
    assert history[0]["loss"] == pytest.approx(runs["fp32"][1][0]["loss"], rel=0.02)
