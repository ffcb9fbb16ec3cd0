"""Clover: dual encoders for retrieval plus a light fusion encoder for re-ranking and QA.

Retrieval uses only `encode_video` / `encode_text` (cosine in a shared D-dim space), so a library is encoded
once, offline. Re-ranking and QA run the fusion encoder over *cached* video tokens, never the video backbone.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedTokenizerBase

from .config import CloverConfig
from .fusion import FusionEncoder
from .heads import ChoiceHead, ClsProjection, MLMHead, OpenQAHead, VideoProjection
from .text_encoder import build_text_encoder, load_tokenizer, mean_pool, resolve_pretrained
from .video_encoder import VideoSwinEncoder


class Clover(nn.Module):
    def __init__(
        self,
        config: CloverConfig,
        tokenizer: PreTrainedTokenizerBase | None = None,
        load_pretrained: bool = True,
        answer_vocab: list[str] | None = None,
    ):
        super().__init__()
        self.config = config
        self.video_encoder = VideoSwinEncoder(config.video, config.num_frames, config.image_size)
        self.text_encoder = build_text_encoder(config.text, load_pretrained=load_pretrained)
        bert_cfg = self.text_encoder.config
        hidden = bert_cfg.hidden_size
        self.fusion = FusionEncoder(bert_cfg, config.fusion.num_layers, self.video_encoder.out_dim,
                                    self.video_encoder.token_grid,
                                    clip_dim=config.embed_dim if config.fusion.clip_token else None,
                                    video_attends_text=config.fusion.video_attends_text)
        if config.fusion.init_from_text:
            self.fusion.init_from_text_layers(self.text_encoder.encoder.layer)

        heads = config.heads
        self.video_proj = VideoProjection(self.video_encoder.out_dim, heads.video_hidden, config.embed_dim,
                                          heads.video_pooling, self.video_encoder.num_tokens)
        self.text_proj = ClsProjection(hidden, config.embed_dim)
        self.fused_proj = ClsProjection(hidden, config.embed_dim)
        self.mlm_head = MLMHead(hidden, bert_cfg.vocab_size, eps=bert_cfg.layer_norm_eps)
        # Untied from the word embeddings: a tied decoder read shape at chance (docs/benchmarks.md, session 11).
        self.word_head = nn.Linear(self.video_encoder.out_dim, bert_cfg.vocab_size) if heads.word_head else None
        self.match_head = nn.Linear(hidden, 2)
        self.choice_head = ChoiceHead(hidden, heads.mc_hidden)
        self.answer_vocab: list[str] = list(answer_vocab or [])
        self.qa_head = self._new_qa_head() if heads.num_answers else None
        if len(self.answer_vocab) != heads.num_answers:
            raise ValueError(f"answer vocabulary has {len(self.answer_vocab)} entries, config says {heads.num_answers}")

        if tokenizer is None:
            tokenizer = load_tokenizer(resolve_pretrained(config.text.pretrained) if load_pretrained else None)
        self.tokenizer = tokenizer

    # ---- shapes and device -------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def video_token_shape(self) -> tuple[int, int]:
        """(K, C) of the cached video tokens."""
        return self.video_encoder.num_tokens, self.video_encoder.out_dim

    @property
    def mask_grid(self) -> tuple[int, int]:
        """(Hp, Wp): the spatial patch grid that video block masking acts on."""
        return self.video_encoder.patch_grid[1:]

    # ---- uni-modal encoders (retrieval) ------------------------------------------------------------------

    def encode_video(self, frames: torch.Tensor, video_mask: torch.Tensor | None = None, return_tokens: bool = False):
        """frames [B, T, 3, H, W] normalised -> unit embedding [B, D] (and tokens [B, K, C])."""
        tokens = self.video_encoder(frames, video_mask)
        embedding = self.embed_video_tokens(tokens)
        return (embedding, tokens) if return_tokens else embedding

    def embed_video_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Video tokens [B, K, C] -> unit embedding [B, D]."""
        return F.normalize(self.video_proj(tokens), dim=-1)

    @property
    def text_dropout_active(self) -> bool:
        """Whether the text tower draws dropout noise now (then equal texts do not give equal states)."""
        return self.text_encoder.training and self.config.text.dropout > 0

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_hidden: bool = False):
        """input_ids, attention_mask [B, L] -> unit embedding [B, D] (and hidden states [B, L, H]).

        Repeated rows are encoded once while no dropout is active: a QA batch asks the same templated questions
        of many clips (synthworld: about 110 distinct questions among a batch's 190)."""
        hidden = None
        if not self.text_dropout_active:
            width = input_ids.shape[1]
            rows = torch.cat([input_ids, attention_mask.to(input_ids.dtype)], dim=1)
            unique, inverse = torch.unique(rows, dim=0, return_inverse=True)  # the distinct (ids, mask) rows
            if len(unique) < len(rows):
                hidden = self.text_encoder(input_ids=unique[:, :width],
                                           attention_mask=unique[:, width:].to(attention_mask.dtype))
                hidden = hidden.last_hidden_state[inverse]
        if hidden is None:
            hidden = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        embedding = F.normalize(self.text_proj(self.pool_text(hidden, attention_mask)), dim=-1)
        return (embedding, hidden) if return_hidden else embedding

    def pool_text(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[B, L, H] text states -> [B, H]: the [CLS] state, or the mean over real tokens (config.text.pooling)."""
        if self.config.text.pooling == "cls":
            return hidden[:, 0]
        return mean_pool(hidden, mask)

    def tokenize(self, texts: list[str] | str, max_length: int | None = None, pair: list[str] | None = None) -> dict:
        """Padded token ids and mask on the model's device (pairs are truncated in their first text only)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        batch = self.tokenizer(
            texts,
            pair,
            padding=True,
            truncation="only_first" if pair is not None else True,
            max_length=max_length or self.config.text.max_length,
            return_tensors="pt",
        )
        out = {"input_ids": batch["input_ids"].to(self.device), "attention_mask": batch["attention_mask"].to(self.device)}
        if pair is not None:  # positions of the second text (what `choice_logits` pools)
            out["second_mask"] = (batch["token_type_ids"] * batch["attention_mask"]).to(self.device)
        return out

    # ---- fusion ------------------------------------------------------------------------------------------

    def fuse(self, video_tokens: torch.Tensor, text_hidden: torch.Tensor, text_mask: torch.Tensor,
             video_index: torch.Tensor | None = None):
        """-> (fused [B, K+L, H], pooled [B, H]); pooled is the fused text part pooled like the text tower
        ([CLS], the paper's m_cls, or the masked mean) and feeds every head on the fusion encoder.
        `video_index` [B] pairs text i with clip video_index[i] of video_tokens [V, K, C] (`FusionEncoder`)."""
        clip = self.video_proj(video_tokens.to(text_hidden.dtype)) if self.config.fusion.clip_token else None
        fused = self.fusion(video_tokens, text_hidden, text_mask, clip, video_index)
        return fused, self.pool_text(fused[:, video_tokens.shape[1]:], text_mask)

    def add_clip_token(self) -> None:
        """Give a pretrained model's fusion encoder the clip token (a new, untrained input layer)."""
        if self.config.fusion.clip_token:
            return
        hidden = self.text_encoder.config.hidden_size
        self.fusion.clip_proj = FusionEncoder.new_clip_proj(self.config.embed_dim, hidden).to(self.device)
        self.config.fusion.clip_token = True

    def fused_embedding(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled fused state -> unit vector in the retrieval space (the third modality of tri-modal alignment)."""
        return F.normalize(self.fused_proj(pooled), dim=-1)

    def mlm_logits(self, fused_text: torch.Tensor) -> torch.Tensor:
        """Fused text positions [B, L, H] -> vocabulary logits [B, L, V] (decoder tied to word embeddings)."""
        return self.mlm_head(fused_text, self.text_encoder.embeddings.word_embeddings.weight)

    def word_logits(self, video_tokens: torch.Tensor) -> torch.Tensor:
        """Video tokens [B, K, C] -> vocabulary logits [B, V] of the words a caption of the clip would use: a
        linear readout of the tokens' channel-wise max (position-free, like the QA readout)."""
        if self.word_head is None:
            raise RuntimeError("this model has no word head (model config heads.word_head)")
        return self.word_head(video_tokens.amax(dim=1).to(self.word_head.weight.dtype))  # cached tokens may be half

    def match_logits(self, cls: torch.Tensor) -> torch.Tensor:
        """Pooled fused state -> [B, 2] (no match, match) for video-text matching."""
        return self.match_head(cls)

    def _fuse_texts(self, video_tokens: torch.Tensor, texts: dict, video_index: torch.Tensor | None = None,
                    text_hidden: torch.Tensor | None = None):
        """`text_hidden`: the texts' text-tower states when the caller already has them."""
        video_tokens = video_tokens.to(self.device, dtype=next(self.fusion.parameters()).dtype)
        hidden = text_hidden
        if hidden is None:
            _, hidden = self.encode_text(texts["input_ids"], texts["attention_mask"], return_hidden=True)
        return self.fuse(video_tokens, hidden, texts["attention_mask"], video_index)[1]

    # ---- inference from cached video tokens (re-ranking and QA) -----------------------------------------

    @torch.no_grad()
    def match_score(self, video_tokens: torch.Tensor, texts: list[str] | str) -> torch.Tensor:
        """Log-odds that each (video, text) pair matches -> [N]; one text is compared with every video."""
        video_tokens = torch.as_tensor(video_tokens)
        n = video_tokens.shape[0]
        if isinstance(texts, str):  # one query against n videos: encode the text once, fuse n times
            tokens = self.tokenize([texts])
            _, hidden = self.encode_text(tokens["input_ids"], tokens["attention_mask"], return_hidden=True)
            video_tokens = video_tokens.to(self.device, dtype=hidden.dtype)
            cls = self.fuse(video_tokens, hidden.expand(n, -1, -1), tokens["attention_mask"].expand(n, -1))[1]
        else:
            if len(texts) != n:
                raise ValueError(f"{n} videos but {len(texts)} texts")
            cls = self._fuse_texts(video_tokens, self.tokenize(list(texts)))
        logits = self.match_logits(cls)
        return (logits[:, 1] - logits[:, 0]).float()

    def rerank_scores(self, match_log_odds: torch.Tensor, cosine: torch.Tensor) -> torch.Tensor:
        """The score re-ranked results are ordered by: match log-odds + weight x dual cosine (config.heads)."""
        return match_log_odds + self.config.heads.rerank_cosine_weight * cosine

    def open_qa_logits(self, video_tokens: torch.Tensor, texts: dict, video_index: torch.Tensor | None = None,
                       text_hidden: torch.Tensor | None = None):
        """-> [B, num_answers]; `video_index` [B] asks question i of clip video_index[i] (several per clip);
        `text_hidden` [B, L, H]: the questions' text-tower states when the caller has them (`QuestionStates`)."""
        if self.qa_head is None:
            raise RuntimeError("this checkpoint has no open-ended QA head (fine-tune with `clover finetune --task open-qa`)")
        cls = self._fuse_texts(video_tokens, texts, video_index, text_hidden)
        if not self.config.heads.qa_video_skip:
            return self.qa_head(cls, None)
        video_tokens = video_tokens.to(cls.device)
        return self.qa_head(cls, video_tokens if video_index is None else video_tokens[video_index])

    @torch.no_grad()
    def answer_open(self, video_tokens: torch.Tensor, questions: list[str]) -> torch.Tensor:
        """-> logits [B, num_answers] over `answer_vocab`."""
        return self.open_qa_logits(torch.as_tensor(video_tokens), self.tokenize(questions)).float()

    def choice_texts(self, questions: list[str], candidates: list[list[str]]) -> dict:
        """Each candidate as the pair ("Q Options: a, b, ...", "a_i"), flattened to [B*C]; C must be constant."""
        num_choices = len(candidates[0])
        if any(len(c) != num_choices for c in candidates):
            raise ValueError("every question needs the same number of candidates")
        firsts, seconds = [], []
        for question, options in zip(questions, candidates, strict=True):
            prompt = f"{question} Options: {', '.join(options)}. Answer:"
            firsts += [prompt] * num_choices
            seconds += list(options)
        return self.tokenize(firsts, max_length=3 * self.config.text.max_length, pair=seconds)

    def choice_logits(self, video_tokens: torch.Tensor, texts: dict, num_choices: int) -> torch.Tensor:
        video_tokens = video_tokens.repeat_interleave(num_choices, dim=0)  # (B*C, K, C)
        video_tokens = video_tokens.to(self.device, dtype=next(self.fusion.parameters()).dtype)
        _, hidden = self.encode_text(texts["input_ids"], texts["attention_mask"], return_hidden=True)
        fused = self.fuse(video_tokens, hidden, texts["attention_mask"])[0][:, video_tokens.shape[1]:]
        # Mean pooling over a 40-token prompt would dilute the few tokens in which candidates differ, so the
        # choice head reads the candidate's own positions ([CLS] when the tower pools by [CLS], as in the paper).
        pooled = fused[:, 0] if self.config.text.pooling == "cls" else self.pool_text(fused, texts["second_mask"])
        return self.choice_head(pooled).view(-1, num_choices)

    @torch.no_grad()
    def answer_choice(self, video_tokens: torch.Tensor, questions: list[str], candidates: list[list[str]]) -> torch.Tensor:
        """-> scores [B, C], one per candidate (softmax over C gives the choice distribution)."""
        texts = self.choice_texts(questions, candidates)
        return self.choice_logits(torch.as_tensor(video_tokens), texts, len(candidates[0])).float()

    # ---- checkpoints ---------------------------------------------------------------------------------------

    def save_pretrained(self, directory: str | Path, **extra_json) -> Path:
        from .checkpoint import save_checkpoint

        return save_checkpoint(self, directory, **extra_json)

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> Clover:
        from .checkpoint import load_checkpoint

        return load_checkpoint(directory, map_location=map_location)

    def set_answer_vocab(self, answers: list[str]) -> None:
        """Attach (or replace) the open-ended QA head for a new answer vocabulary."""
        heads = self.config.heads
        heads.num_answers = len(answers)
        self.answer_vocab = list(answers)
        self.qa_head = self._new_qa_head().to(self.device)

    def _new_qa_head(self) -> OpenQAHead:
        heads = self.config.heads
        return OpenQAHead(self.text_encoder.config.hidden_size, heads.qa_hidden, heads.num_answers, heads.qa_dropout,
                          self.video_encoder.out_dim if heads.qa_video_skip else 0)
