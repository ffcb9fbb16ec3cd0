"""The Clover video-language model: Video Swin + BERT dual encoders, a 3-layer fusion encoder and heads.

Imported by training, indexing and serving; imports none of them. The names below load lazily, so a decode
worker that needs only `model.video_io` does not pay for importing transformers.
"""

from importlib import import_module
from typing import TYPE_CHECKING

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "fingerprint": "checkpoint",
    "Clover": "clover",
    "CloverConfig": "config",
    "FusionConfig": "config",
    "HeadConfig": "config",
    "TextConfig": "config",
    "VideoConfig": "config",
    "convert_official_video_swin": "convert",
    "load_video_swin_weights": "convert",
    "create_model": "factory",
    "get_model_config": "factory",
    "list_models": "factory",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # pragma: no cover
    from .checkpoint import CheckpointError, fingerprint  # noqa: F401
    from .clover import Clover  # noqa: F401
    from .config import CloverConfig, FusionConfig, HeadConfig, TextConfig, VideoConfig  # noqa: F401
    from .convert import convert_official_video_swin, load_video_swin_weights  # noqa: F401
    from .factory import create_model, get_model_config, list_models  # noqa: F401


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'model' has no attribute {name!r}")
    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
