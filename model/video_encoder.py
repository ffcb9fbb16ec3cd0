"""Video Swin backbone that returns the token grid, with Clover's block masking.

Built on torchvision's `SwinTransformer3d` (its classification head is dropped). Masking happens right after the
patch embedding: masked cells of the spatial patch grid are replaced by a learnable mask token in *every* time
step, because an object persists across frames and per-frame masking would leak it from the neighbours.

`stem="conv"` replaces the patch embedding's single strided convolution with a small convolutional stem of the
same stride (Xiao et al. 2021, "Early Convolutions Help Transformers See Better"). Trained from scratch on shape
labels alone, clover-tiny's Swin stays at chance while the conv stem reaches 55% in 300 steps
(`bench/probe_shape_learning.py`); in a full pretraining run it did not improve shape (docs/benchmarks.md,
session 4), so no preset uses it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.video.swin_transformer import SwinTransformer3d

from .config import VideoConfig


class ConvStem(nn.Module):
    """3D conv stem with the stride of `patch_size`: a 3x3 conv at full resolution, one stride-2 3x3 conv per
    halving of height and width (BatchNorm + GELU after each), then a conv over `pt` frames to `embed_dim`.
    Spatial strides must be powers of two; time is merged only in the last layer."""

    def __init__(self, patch_size: tuple[int, int, int], embed_dim: int, width: int = 16):
        super().__init__()
        pt, ph, pw = patch_size
        if ph != pw or ph & (ph - 1):
            raise ValueError(f"a conv stem needs a square power-of-two spatial patch, got {ph}x{pw}")
        layers, channels = self._block(3, width, 1), width
        for _ in range(ph.bit_length() - 1):
            out = min(channels * 2, embed_dim)
            layers += self._block(channels, out, 2)
            channels = out
        layers.append(nn.Conv3d(channels, embed_dim, kernel_size=(pt, 1, 1), stride=(pt, 1, 1)))
        self.layers = nn.Sequential(*layers)

    @staticmethod
    def _block(cin: int, cout: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        return [conv, nn.BatchNorm3d(cout), nn.GELU()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, C, T/pt, H/ph, W/pw)
        return self.layers(x)


class PoolStem(nn.Module):
    """2D conv stem that downsamples by max pooling, as a small image CNN does: per frame, a 3x3 conv + GELU +
    2x2 max pool for each halving of height and width, then a conv over `pt` frames to `embed_dim`. Max pooling
    lets a feature land anywhere inside a patch, where a patch projection must learn every offset separately.
    Spatial strides must be powers of two; time is merged only in the last layer."""

    def __init__(self, patch_size: tuple[int, int, int], embed_dim: int, width: int = 32):
        super().__init__()
        pt, ph, pw = patch_size
        if ph != pw or ph & (ph - 1) or ph < 2:
            raise ValueError(f"a pooling stem needs a square power-of-two spatial patch >= 2, got {ph}x{pw}")
        layers, channels = [], 3
        for i in range(ph.bit_length() - 1):
            out = min(width * 2**i, 2 * width)
            layers += [nn.Conv3d(channels, out, (1, 3, 3), padding=(0, 1, 1)), nn.GELU(),
                       nn.MaxPool3d((1, 2, 2))]
            channels = out
        layers.append(nn.Conv3d(channels, embed_dim, kernel_size=(pt, 1, 1), stride=(pt, 1, 1)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, T, H, W) -> (B, C, T/pt, H/ph, W/pw)
        # The per-frame layers run as 2-D ops on channels-last frames: the same function (the 3-D layers keep
        # the parameters, so checkpoints are unchanged), in about 0.8x the 3-D layers' time (bench/stem_speed.py).
        b, c, t, h, w = x.shape
        y = x.transpose(1, 2).reshape(b * t, c, h, w).contiguous(memory_format=torch.channels_last)
        *per_frame, time_merge = self.layers
        for layer in per_frame:
            if isinstance(layer, nn.Conv3d):
                y = F.conv2d(y, layer.weight.squeeze(2), layer.bias, padding=layer.padding[1:])
            elif isinstance(layer, nn.MaxPool3d):
                y = F.max_pool2d(y, layer.kernel_size[1:], layer.stride[1:])
            else:
                y = layer(y)
        y = y.reshape(b, t, *y.shape[1:]).transpose(1, 2)  # (B, C, T, H', W')
        return time_merge(y)


class VideoSwinEncoder(nn.Module):
    def __init__(self, cfg: VideoConfig, num_frames: int, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.swin = SwinTransformer3d(
            patch_size=list(cfg.patch_size),
            embed_dim=cfg.embed_dim,
            depths=list(cfg.depths),
            num_heads=list(cfg.num_heads),
            window_size=list(cfg.window_size),
            mlp_ratio=cfg.mlp_ratio,
            dropout=cfg.dropout,
            attention_dropout=cfg.attention_dropout,
            stochastic_depth_prob=cfg.drop_path,
            num_classes=1,
        )
        # Retrieval needs tokens, not Kinetics logits: drop the head and its pooling.
        del self.swin.head, self.swin.avgpool
        if cfg.stem == "conv":  # Swin's padding and norm stay
            self.swin.patch_embed.proj = ConvStem(cfg.patch_size, cfg.embed_dim)
        elif cfg.stem == "pool":
            self.swin.patch_embed.proj = PoolStem(cfg.patch_size, cfg.embed_dim, width=cfg.stem_width)
        elif cfg.stem != "patch":
            raise ValueError(f"video stem must be 'patch', 'conv' or 'pool', got {cfg.stem!r}")
        self.mask_token = nn.Parameter(torch.zeros(cfg.embed_dim))
        nn.init.trunc_normal_(self.mask_token, std=0.02)

        pt, ph, pw = cfg.patch_size
        merges = len(cfg.depths) - 1
        self.patch_grid = (-(-num_frames // pt), -(-image_size // ph), -(-image_size // pw))  # ceil: swin pads
        grid_t, grid_h, grid_w = self.patch_grid
        self.token_grid = (grid_t, -(-grid_h // 2**merges), -(-grid_w // 2**merges))
        self.out_dim = cfg.embed_dim * 2**merges
        self.stem_global = nn.Linear(cfg.embed_dim, self.out_dim) if cfg.stem_global else None

    def train(self, mode: bool = True) -> VideoSwinEncoder:
        # A frozen tower stays in eval mode: BatchNorm (conv stem) keeps its statistics, no stochastic depth.
        frozen = not any(p.requires_grad for p in self.parameters())
        return super().train(mode and not frozen)

    @property
    def num_tokens(self) -> int:
        t, h, w = self.token_grid
        return t * h * w

    def forward(self, frames: torch.Tensor, video_mask: torch.Tensor | None = None) -> torch.Tensor:
        """frames [B, T, 3, H, W] -> tokens [B, K, C] in (t, h, w) order; video_mask [B, Hp, Wp] bool."""
        x = frames.permute(0, 2, 1, 3, 4)  # (B, 3, T, H, W), torchvision's layout
        x = self.swin.patch_embed(x)  # (B, Tp, Hp, Wp, C0)
        if video_mask is not None:
            if video_mask.shape[1:] != x.shape[2:4]:
                raise ValueError(f"video_mask grid {tuple(video_mask.shape[1:])} != patch grid {tuple(x.shape[2:4])}")
            keep = (~video_mask).to(x.dtype)[:, None, :, :, None]  # (B, 1, Hp, Wp, 1), shared over time
            x = x * keep + self.mask_token.to(x.dtype) * (1 - keep)
        stem = x
        x = self.swin.pos_drop(x)
        x = self.swin.features(x)  # (B, T', H', W', C); patch merging is spatial only, so T' = Tp
        x = self.swin.norm(x)
        if self.stem_global is not None:
            x = x + self.stem_global(stem.amax(dim=(2, 3)))[:, :, None, None, :]
        return x.flatten(1, 3)  # (B, K, C)
