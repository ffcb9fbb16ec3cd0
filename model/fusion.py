"""The light fusion encoder: single-stream self-attention over [video tokens ; text tokens].

Video tokens are projected to the text width and given learned spatial and temporal position embeddings and a
token-type embedding, then LayerNorm, as in the released code. The transformer layers are BERT layers, started
as copies of the text encoder's first layers so fusion begins from language knowledge instead of noise.

One-way fusion (`video_attends_text=False`) keeps the video positions from attending to the text: the text
still reads the video in every layer, but a clip's video states no longer depend on the text, so a clip fused
with several texts (a QA batch's questions, a re-ranker's captions) runs its video positions once.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertLayer

VIDEO_TOKEN_TYPE = 1  # text tokens keep BERT's type 0


class FusionEncoder(nn.Module):
    def __init__(self, bert_cfg: BertConfig, num_layers: int, video_dim: int, token_grid: tuple[int, int, int],
                 clip_dim: int | None = None, video_attends_text: bool = True):
        super().__init__()
        self.video_attends_text = video_attends_text
        hidden = bert_cfg.hidden_size
        grid_t, grid_h, grid_w = token_grid
        self.token_grid = token_grid
        self.video_proj = nn.Linear(video_dim, hidden)
        self.spatial_pos = nn.Embedding(grid_h * grid_w, hidden)
        self.temporal_pos = nn.Embedding(grid_t, hidden)
        self.token_type = nn.Embedding(2, hidden)
        self.norm = nn.LayerNorm(hidden, eps=bert_cfg.layer_norm_eps)
        self.dropout = nn.Dropout(bert_cfg.hidden_dropout_prob)
        cfg = copy.deepcopy(bert_cfg)
        cfg.num_hidden_layers = num_layers
        self.layers = nn.ModuleList(BertLayer(cfg, layer_idx=i) for i in range(num_layers))
        for emb in (self.spatial_pos, self.temporal_pos, self.token_type):
            nn.init.normal_(emb.weight, std=0.02)
        self.clip_proj = None if clip_dim is None else self.new_clip_proj(clip_dim, hidden)

    @staticmethod
    def new_clip_proj(clip_dim: int, hidden: int) -> nn.Module:
        """The clip token's input layer: the clip embedding -> the fusion width."""
        return nn.Sequential(nn.Linear(clip_dim, hidden), nn.LayerNorm(hidden))

    def init_from_text_layers(self, text_layers: nn.ModuleList) -> None:
        """Copy the text encoder's first layers (the paper initialises fusion from BERT-base's first 3)."""
        if len(text_layers) < len(self.layers):
            raise ValueError(f"fusion has {len(self.layers)} layers, text encoder only {len(text_layers)}")
        for fusion_layer, text_layer in zip(self.layers, text_layers, strict=False):
            fusion_layer.load_state_dict(text_layer.state_dict())

    def embed_video(self, video_tokens: torch.Tensor) -> torch.Tensor:
        """[B, K, C] backbone tokens in (t, h, w) order -> [B, K, H] fusion inputs."""
        grid_t, grid_h, grid_w = self.token_grid
        device = video_tokens.device
        spatial = torch.arange(grid_h * grid_w, device=device).repeat(grid_t)  # (K,)
        temporal = torch.arange(grid_t, device=device).repeat_interleave(grid_h * grid_w)  # (K,)
        x = self.video_proj(video_tokens)
        x = x + self.spatial_pos(spatial) + self.temporal_pos(temporal)
        x = x + self.token_type.weight[VIDEO_TOKEN_TYPE]
        return self.dropout(self.norm(x))

    def forward(
        self, video_tokens: torch.Tensor, text_hidden: torch.Tensor, text_mask: torch.Tensor,
        clip: torch.Tensor | None = None, video_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """-> fused [B, K+L, H]: video positions first, then the text positions. With a clip token (`clip`
        [V, D], the clip's un-normalised embedding) it is attended to as one more video position and left out
        of the output, so positions are the same either way.

        `video_index` [B] fuses text row i with clip video_index[i] of video_tokens [V, K, C] (several texts per
        clip); without it V = B and row i goes with clip i."""
        video = self.embed_video(video_tokens.to(text_hidden.dtype))  # (V, K, H)
        if self.clip_proj is not None:
            if clip is None:
                raise ValueError("this fusion encoder has a clip token: pass the clip embedding")
            clip_token = self.clip_proj(clip.to(text_hidden.dtype)) + self.token_type.weight[VIDEO_TOKEN_TYPE]
            video = torch.cat([clip_token[:, None], video], dim=1)  # (V, 1+K, H)
        num_video = video.shape[1]
        # Additive key mask over [video ; text], broadcast over heads and queries: padding is never attended to.
        keep = torch.cat([text_mask.new_ones(text_mask.shape[0], num_video), text_mask], dim=1)
        additive = (1.0 - keep[:, None, None, :].to(video.dtype)) * torch.finfo(video.dtype).min
        if self.video_attends_text:
            hidden = torch.cat([video if video_index is None else video[video_index], text_hidden], dim=1)
            for layer in self.layers:
                out = layer(hidden, attention_mask=additive)
                hidden = out[0] if isinstance(out, tuple) else out
        else:
            hidden = self._one_way(video, text_hidden, text_mask, additive, video_index)
        return hidden if self.clip_proj is None else hidden[:, 1:]

    def _one_way(self, video: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, additive: torch.Tensor,
                 video_index: torch.Tensor | None) -> torch.Tensor:
        """Each layer runs the V clips' video positions over themselves, then the B texts' positions over
        [their clip's video keys ; their own keys]: the single-stream layer with the video-to-text block masked.

        The texts' per-token layers run on their real tokens only (padding is a fifth of a QA batch's question
        positions and a third of a caption batch's); padding positions come out as 0, which nothing reads: they
        are masked as keys and never pooled."""
        real = text_mask.flatten().nonzero().squeeze(1)  # (T,): the batch's real text positions in [N * L]
        tokens = text.flatten(0, 1).index_select(0, real)  # (T, H)
        for layer in self.layers:
            next_video, (video_keys, video_values) = attend(layer, video)
            if video_index is not None:
                video_keys, video_values = video_keys[video_index], video_values[video_index]
            tokens = attend_packed(layer, tokens, real, text.shape[:2], additive, (video_keys, video_values))
            video = next_video
        text = tokens.new_zeros(text.flatten(0, 1).shape).index_copy(0, real, tokens).view(text.shape)
        return torch.cat([video if video_index is None else video[video_index], text], dim=1)


def _heads(attention, x: torch.Tensor) -> torch.Tensor:
    """[N, L, H] -> [N, heads, L, head_dim]."""
    return x.view(*x.shape[:2], attention.num_attention_heads, -1).transpose(1, 2)


def attend(layer: BertLayer, hidden: torch.Tensor):
    """One BertLayer over hidden [N, L, H] (every position attends to every other), with its own weights ->
    (output [N, L, H], (keys, values) [N, heads, L, d] of hidden's positions, for the texts to attend to)."""
    attention = layer.attention.self
    query, key, value = (_heads(attention, attention.query(hidden)), _heads(attention, attention.key(hidden)),
                         _heads(attention, attention.value(hidden)))
    dropout = attention.dropout.p if attention.training else 0.0
    context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=attention.scaling)
    attended = layer.attention.output(context.transpose(1, 2).flatten(2), hidden)
    return layer.output(layer.intermediate(attended), attended), (key, value)


def attend_packed(layer: BertLayer, tokens: torch.Tensor, real: torch.Tensor, grid: tuple[int, int],
                  additive: torch.Tensor, prefix: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """One BertLayer over texts given as their real tokens [T, H], which sit at flat positions `real` [T] of an
    [N, L] grid, whose queries also see `prefix` (their clip's video keys, values) [N, heads, P, d]; `additive`
    masks [prefix ; L]. The per-token products run on the T tokens, only the attention itself on the padded grid."""
    attention = layer.attention.self

    def padded(x: torch.Tensor) -> torch.Tensor:
        flat = x.new_zeros((grid[0] * grid[1], x.shape[-1])).index_copy(0, real, x)
        return _heads(attention, flat.view(*grid, -1))

    query, key, value = (padded(attention.query(tokens)), padded(attention.key(tokens)),
                         padded(attention.value(tokens)))
    key, value = torch.cat([prefix[0], key], dim=2), torch.cat([prefix[1], value], dim=2)
    dropout = attention.dropout.p if attention.training else 0.0
    context = F.scaled_dot_product_attention(query, key, value, attn_mask=additive, dropout_p=dropout,
                                             scale=attention.scaling)
    context = context.transpose(1, 2).flatten(2).flatten(0, 1).index_select(0, real)  # (T, H)
    attended = layer.attention.output(context, tokens)
    return layer.output(layer.intermediate(attended), attended)
