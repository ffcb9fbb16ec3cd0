"""Named presets and the model factory (open_clip / timm style)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .clover import Clover
from .config import CloverConfig

CONFIG_DIR = Path(__file__).parent / "configs"


def list_models() -> list[str]:
    """Names of the bundled presets, e.g. `clover-tiny`, `clover-base`."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def get_model_config(name: str, **overrides: Any) -> CloverConfig:
    """A preset by name (or a path to a JSON config), with overrides; tower overrides are dicts."""
    path = Path(name)
    if not path.is_file():
        path = CONFIG_DIR / f"{name}.json"
    if not path.is_file():
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    config = CloverConfig.from_dict(json.loads(path.read_text()))
    return config.merged(overrides) if overrides else config


def create_model(name: str, pretrained: str | None = None, **overrides: Any) -> Clover:
    """Build a preset; `pretrained` is a checkpoint directory to load instead (its own config wins)."""
    if pretrained is not None:
        return Clover.from_pretrained(pretrained)
    return Clover(get_model_config(name, **overrides))
