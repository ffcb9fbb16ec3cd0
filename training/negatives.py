"""Hard negative captions by noun swaps (NegCLIP: Yuksekgonul et al. 2023, "When and why vision-language models
behave like bags-of-words").

In-batch negatives rarely differ from the true caption in one word only, so a dual encoder can match videos and
captions without ever telling two object nouns apart: on synthworld the video tower learned colours, sizes and
directions but not shapes (docs/benchmarks.md, sessions 3-4). A swapped caption ("a small red *square* moves
left" for a circle) is a negative that only the noun separates. The nouns come from spaCy's POS tags (the model
the semantic masker uses) and the replacements from the other captions of the same batch, so nothing here knows
synthworld's vocabulary.

Drawn by frequency alone, a quarter of synthworld's swaps replaced a shape by a shape and a third replaced it by a
word of another kind ("a red *moves* moves left", the small tagger calling some verbs nouns), which the text alone
rejects. So the word to replace is drawn by how consistently the tagger calls it a noun in the batch, and with
`WordVectors` the replacement by its similarity to the word it replaces under a pretrained sentence encoder, so
nouns are swapped for nouns of their own kind (a circle for a triangle, not for the background). A synonym is a near
neighbour too: this is a bias towards hard negatives, not a guarantee of false ones, and `temperature` sets how
strong it is.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from typing import Any

import numpy as np

from .masking import NOUN_POS, LazyTagger, LRUCache

Span = tuple[int, int]  # character offsets of a word in its caption


class NounSwapper(LazyTagger):
    """One negative per caption: a noun replaced by a different noun drawn from the batch's noun occurrences.

    Returns None for a caption without nouns, or when the batch offers no other noun. Deterministic for a given
    `random.Random`, so batches (and resumed runs) are reproducible; each caption's nouns are tagged once.
    """

    def __init__(self, nlp: Any = None, cache_size: int = 200_000, vectors: WordVectors | None = None,
                 temperature: float = 0.05):
        self._nlp, self._owns_nlp = nlp, nlp is None
        self._nouns = LRUCache(cache_size)  # caption -> its noun spans
        self.vectors, self.temperature = vectors, temperature

    def nouns(self, captions: list[str]) -> list[list[Span]]:
        found = {caption: self._nouns.lookup(caption) for caption in dict.fromkeys(captions)}
        missing = [caption for caption, spans in found.items() if spans is None]
        for caption, doc in zip(missing, self.nlp.pipe(missing, batch_size=256), strict=True):
            found[caption] = [(t.idx, t.idx + len(t.text)) for t in doc if t.pos_ in NOUN_POS]
            self._nouns.store(caption, found[caption])
        return [found[caption] for caption in captions]

    def __call__(self, captions: list[str], rng: random.Random) -> list[str | None]:
        spans = self.nouns(captions)
        # Every noun occurrence of the batch, so replacements follow the batch's word frequencies: the common
        # object nouns get swapped for each other, not mostly for rare words or tagging mistakes.
        pool = [caption[a:b].lower() for caption, found in zip(captions, spans, strict=True) for a, b in found]
        noun_share = self._noun_share(captions, pool)
        negatives: list[str | None] = []
        for caption, found in zip(captions, spans, strict=True):
            if not found:
                negatives.append(None)
                continue
            words = [caption[a:b].lower() for a, b in found]
            # A word the tagger calls a noun only now and then ("moves") is mostly a verb it mis-tagged.
            start, end = rng.choices(found, weights=[noun_share[word] for word in words])[0]
            word = caption[start:end].lower()
            others = [noun for noun in pool if noun != word]
            if not others:
                negatives.append(None)
                continue
            weights = self.similarity_weights(word, others) if self.vectors is not None else None
            negatives.append(caption[:start] + rng.choices(others, weights=weights)[0] + caption[end:])
        return negatives

    @staticmethod
    def _noun_share(captions: list[str], nouns: list[str]) -> dict[str, float]:
        """For each noun of the batch: its noun-tagged occurrences over all its occurrences in the batch."""
        tagged = Counter(nouns)
        counts = Counter(re.findall(r"[\w']+", " ".join(captions).lower()))
        return {word: min(1.0, n / max(counts[word], n)) for word, n in tagged.items()}

    def similarity_weights(self, word: str, others: list[str]) -> list[float]:
        """exp(cos / temperature) for each candidate occurrence, relative to the most similar one."""
        cosines = self.vectors.cosines(word, others)
        top = max(cosines)
        return [math.exp((cos - top) / self.temperature) for cos in cosines]


class WordVectors:
    """Unit vectors of single words ("a {word}", mean-pooled) from the pretrained all-MiniLM-L6-v2 sentence encoder,
    loaded on first use in each process and cached per word: a batch holds a few dozen distinct nouns."""

    TEMPLATE = "a {}"

    def __init__(self, source: Any = None):
        self.source = source  # a directory with the encoder and its tokenizer; None = the packaged MiniLM
        self._encoder: Any = None
        self._cache: dict[str, np.ndarray] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "_encoder": None, "_cache": {}}

    def cosines(self, word: str, others: list[str]) -> list[float]:
        self._embed([word, *others])
        anchor = self._cache[word]
        return [float(anchor @ self._cache[other]) for other in others]

    def _embed(self, words: list[str]) -> None:
        missing = [word for word in dict.fromkeys(words) if word not in self._cache]
        if not missing:
            return
        import torch

        from model.text_encoder import mean_pool

        tokenizer, encoder = self._load()
        tokens = tokenizer([self.TEMPLATE.format(word) for word in missing], padding=True, return_tensors="pt")
        with torch.no_grad():
            hidden = encoder(**tokens).last_hidden_state
        pooled = torch.nn.functional.normalize(mean_pool(hidden, tokens["attention_mask"]), dim=-1)
        self._cache.update(zip(missing, pooled.numpy(), strict=True))

    def _load(self) -> tuple[Any, Any]:
        if self._encoder is None:
            from transformers import AutoModel

            from model.text_encoder import load_tokenizer, minilm_dir, quiet_transformers

            source = self.source or minilm_dir()
            with quiet_transformers():
                self._encoder = (load_tokenizer(source), AutoModel.from_pretrained(source).eval())
        return self._encoder
