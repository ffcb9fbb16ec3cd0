"""Two gloo processes under torchrun train exactly like one process on the same global batch (every term that
spans ranks, the caption negatives included)."""

import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.model.helpers import deterministic_tiny_model
from training.masking import RandomTextMasker
from training.objective import CloverObjective, objective_config
from training.trainer import TrainingStep

ROOT = Path(__file__).resolve().parents[2]


def make_batch(model, size: int = 4) -> dict:
    g = torch.Generator().manual_seed(3)
    cfg = model.config
    captions = ["a small red circle moves left", "a large blue square grows", "a white cross stays still",
                "a little green triangle moves up and then shrinks"][:size]
    masked = RandomTextMasker(model.tokenizer, max_length=16, seed=1)(captions)
    swapped = ["a small red square moves left", "a large blue circle grows", "a white cross stays still",
               "a little green cross moves up and then shrinks"][:size]
    negatives = model.tokenizer(swapped, padding=True, return_tensors="pt")
    return {
        "negative_input_ids": negatives["input_ids"],
        "negative_attention_mask": negatives["attention_mask"],
        "has_negative": torch.tensor([True, True, False, True][:size]),
        "frames": torch.randn(size, cfg.num_frames, 3, cfg.image_size, cfg.image_size, generator=g),
        "input_ids": masked["input_ids"],
        "attention_mask": masked["attention_mask"],
        "masked_input_ids": masked["masked_input_ids"],
        "mlm_labels": masked["labels"],
    }


def test_two_process_gloo_matches_one_process(tmp_path):
    torch.manual_seed(0)
    model = deterministic_tiny_model()
    torch.save(model.state_dict(), tmp_path / "init.pt")
    batch = make_batch(model)
    torch.save(batch, tmp_path / "batch.pt")

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests/training/ddp_worker.py"), str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    single = TrainingStep(model, CloverObjective(objective_config("clover", matching=False,
                                                                caption_negatives=True)))
    loss, terms = single(batch, torch.Generator().manual_seed(7))
    loss.backward()
    assert {"tma", "ranking", "mlm", "caption_negatives"} <= set(terms)
    # Global terms are identical on both ranks; local means average to the global mean.
    torch.testing.assert_close(ddp["losses"].mean(), loss.detach(), atol=1e-4, rtol=1e-5)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == ddp["grads"].keys()
    for name, grad in grads.items():
        torch.testing.assert_close(ddp["grads"][name], grad, atol=2e-5, rtol=1e-3, msg=name)
