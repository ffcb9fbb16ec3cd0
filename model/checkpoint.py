"""Checkpoint directories: config.json + model.safetensors + tokenizer files (+ qa_answers.json).

Weights are only ever read with safetensors, never unpickled. Loading is strict: a missing or unexpected tensor,
or one of the wrong shape, is an error that names it, because a silently half-loaded model returns plausible
nonsense.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .clover import Clover
from .config import CloverConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
ANSWERS_FILE = "qa_answers.json"


class CheckpointError(RuntimeError):
    """A checkpoint directory that cannot be loaded as it is."""


def save_checkpoint(model: Clover, directory: str | Path, **extra_json) -> Path:
    """Write the checkpoint; each file goes to a temporary name first, so a crash never leaves a torn file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    _atomic(directory / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
    _write_json(directory / CONFIG_FILE, model.config.to_dict())
    if model.answer_vocab:
        _write_json(directory / ANSWERS_FILE, model.answer_vocab)
    for name, payload in extra_json.items():
        _write_json(directory / f"{name}.json", payload)
    model.tokenizer.save_pretrained(str(directory))
    return directory


def load_checkpoint(directory: str | Path, map_location: str | torch.device = "cpu") -> Clover:
    directory = Path(directory)
    for required in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / required).is_file():
            raise CheckpointError(f"{directory} is not a Clover checkpoint: {required} is missing")
    config = CloverConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
    answers_path = directory / ANSWERS_FILE
    answers = json.loads(answers_path.read_text()) if answers_path.is_file() else None
    from .text_encoder import load_tokenizer

    model = Clover(config, tokenizer=load_tokenizer(directory), load_pretrained=False, answer_vocab=answers)
    device = str(map_location)
    load_state_strict(model, load_file(str(directory / WEIGHTS_FILE), device=device), source=str(directory))
    model.checkpoint_fingerprint = fingerprint(directory)  # what an index built with this model records
    return model.to(map_location).eval()


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{source}: missing tensors {missing[:10]}; unexpected tensors {unexpected[:10]}")
    for name, tensor in state.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(
                f"{source}: tensor {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
            )
    model.load_state_dict(state, strict=True)


def fingerprint(directory: str | Path) -> str:
    """sha256 of model.safetensors: what an index records to refuse a different checkpoint."""
    digest = hashlib.sha256()
    with open(Path(directory) / WEIGHTS_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path: Path, payload) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n"))


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)
