"""The Clover video-language model: Video Swin + BERT dual encoders, a 3-layer fusion encoder and heads.

Imported by training, indexing and serving; imports none of them.
"""

from .checkpoint import CheckpointError, fingerprint
from .clover import Clover
from .config import CloverConfig, FusionConfig, HeadConfig, TextConfig, VideoConfig
from .convert import convert_official_video_swin, load_video_swin_weights
from .factory import create_model, get_model_config, list_models

__all__ = [
    "CheckpointError",
    "Clover",
    "CloverConfig",
    "FusionConfig",
    "HeadConfig",
    "TextConfig",
    "VideoConfig",
    "convert_official_video_swin",
    "create_model",
    "fingerprint",
    "get_model_config",
    "list_models",
    "load_video_swin_weights",
]
