import re

import pytest
import torch

from model import convert_official_video_swin, load_video_swin_weights
from model.config import VideoConfig
from model.video_encoder import VideoSwinEncoder

CFG = VideoConfig(patch_size=(2, 4, 4), embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=(2, 4, 4), drop_path=0.0)


def to_official(torchvision_state: dict) -> dict:
    """The inverse mapping, written independently: torchvision names -> official mmaction2 names."""
    out = {}
    for key, tensor in torchvision_state.items():
        if m := re.match(r"features\.(\d+)\.(\d+)\.(.+)", key):
            index, block, rest = int(m[1]), m[2], m[3]
            rest = rest.replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2.")
            key = f"layers.{index // 2}.blocks.{block}.{rest}"
        elif m := re.match(r"features\.(\d+)\.(.+)", key):
            key = f"layers.{int(m[1]) // 2}.downsample.{m[2]}"
        out[f"backbone.{key}"] = tensor.clone()
    out["cls_head.fc_cls.weight"] = torch.randn(400, 32)
    out["cls_head.fc_cls.bias"] = torch.randn(400)
    return {"state_dict": out, "meta": {}}


def test_official_checkpoint_converts_back_to_the_same_tokens():
    torch.manual_seed(0)
    source = VideoSwinEncoder(CFG, num_frames=4, image_size=32).eval()
    target = VideoSwinEncoder(CFG, num_frames=4, image_size=32).eval()
    official = to_official(source.swin.state_dict())
    assert any(".blocks." in k for k in official["state_dict"])
    converted = convert_official_video_swin(official)
    assert not any(k.startswith(("cls_head", "backbone")) for k in converted)
    assert set(converted) == set(source.swin.state_dict())
    report = load_video_swin_weights(target, official)
    assert report == {"missing": [], "unexpected": []}
    x = torch.randn(2, 4, 3, 32, 32)
    torch.testing.assert_close(target(x), source(x), atol=1e-5, rtol=0)


def test_torchvision_state_dict_loads_and_reports_keys():
    torch.manual_seed(0)
    source = VideoSwinEncoder(CFG, num_frames=4, image_size=32).eval()
    target = VideoSwinEncoder(CFG, num_frames=4, image_size=32).eval()
    state = dict(source.swin.state_dict())
    state["head.weight"] = torch.zeros(400, 32)  # torchvision classifier: dropped
    del state["norm.weight"]
    report = load_video_swin_weights(target, state)
    assert report["missing"] == ["norm.weight"]


def test_shape_mismatch_is_a_clear_error():
    other = VideoSwinEncoder(VideoConfig(patch_size=(2, 4, 4), embed_dim=8, depths=(2, 2), num_heads=(1, 2),
                                         window_size=(2, 4, 4)), num_frames=4, image_size=32)
    target = VideoSwinEncoder(CFG, num_frames=4, image_size=32)
    with pytest.raises(ValueError, match="patch_embed.proj.weight"):
        load_video_swin_weights(target, to_official(other.swin.state_dict()))
