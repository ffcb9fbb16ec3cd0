"""Load Video Swin weights from the official release or from torchvision into the video encoder.

Official Video-Swin checkpoints (mmaction2) name blocks `backbone.layers.{i}.blocks.{j}...` with `mlp.fc1/fc2`
and `layers.{i}.downsample`; torchvision's `SwinTransformer3d` interleaves stages and mergings in one
`features` sequence: `features.{2i}.{j}...`, `mlp.0/mlp.3`, `features.{2i+1}`. Classification heads are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from .video_encoder import VideoSwinEncoder

_BLOCK = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)\.(.+)$")
_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_MLP = {"mlp.fc1.": "mlp.0.", "mlp.fc2.": "mlp.3."}
_HEAD_PREFIXES = ("cls_head.", "head.", "fc.", "classifier.")


def convert_official_video_swin(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official Video-Swin keys -> torchvision `SwinTransformer3d` keys (head dropped).

    Accepts the file's top-level dict (`{"state_dict": {...}}`) or the state dict itself, with or without the
    `backbone.` (and DDP `module.`) prefixes.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    converted: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        name = key.removeprefix("module.")
        if name.startswith(_HEAD_PREFIXES):
            continue
        name = name.removeprefix("backbone.")
        if name.startswith(_HEAD_PREFIXES):
            continue
        if match := _BLOCK.match(name):
            stage, block, rest = match.groups()
            for old, new in _MLP.items():
                rest = rest.replace(old, new)
            name = f"features.{2 * int(stage)}.{block}.{rest}"
        elif match := _DOWNSAMPLE.match(name):
            stage, rest = match.groups()
            name = f"features.{2 * int(stage) + 1}.{rest}"
        converted[name] = tensor
    return converted


def load_video_swin_weights(
    encoder: VideoSwinEncoder, state_dict: Mapping[str, torch.Tensor]
) -> dict[str, list[str]]:
    """Load official or torchvision Video Swin weights into `encoder`; returns missing / unexpected keys.

    The layout is detected from the key names. A tensor whose shape differs from the model's is an error naming
    it (a wrong preset or patch size must not load half a model silently).
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    official = any(".blocks." in k for k in state_dict)
    source = convert_official_video_swin(state_dict) if official else {
        k.removeprefix("module."): v for k, v in state_dict.items() if not k.removeprefix("module.").startswith(_HEAD_PREFIXES)
    }
    target = encoder.swin.state_dict()
    loadable: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        if name not in target:
            continue
        want = target[name].shape
        if tensor.shape != want:
            if name.endswith("relative_position_index") and tensor.numel() == target[name].numel():
                tensor = tensor.reshape(want)  # stored (N, N) by one codebase and (N*N,) by the other
            else:
                raise ValueError(f"Video Swin tensor {name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(want)}")
        loadable[name] = tensor
    result = encoder.swin.load_state_dict(loadable, strict=False)
    return {"missing": sorted(result.missing_keys), "unexpected": sorted(set(source) - set(target))}
