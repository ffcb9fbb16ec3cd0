"""Hard negative captions by noun swaps (NegCLIP: Yuksekgonul et al. 2023, "When and why vision-language models
behave like bags-of-words").

In-batch negatives rarely differ from the true caption in one word only, so a dual encoder can match videos and
captions without ever telling two object nouns apart: on synthworld the video tower learned colours, sizes and
directions but not shapes (docs/benchmarks.md, sessions 3-4). A swapped caption ("a small red *square* moves
left" for a circle) is a negative that only the noun separates. The nouns come from spaCy's POS tags (the model
the semantic masker uses) and the replacements from the other captions of the same batch, so nothing here knows
synthworld's vocabulary.
"""

from __future__ import annotations

import random
from typing import Any

from .masking import NOUN_POS, LazyTagger, LRUCache

Span = tuple[int, int]  # character offsets of a word in its caption


class NounSwapper(LazyTagger):
    """One negative per caption: a noun replaced by a different noun drawn from the batch's noun occurrences.

    Returns None for a caption without nouns, or when the batch offers no other noun. Deterministic for a given
    `random.Random`, so batches (and resumed runs) are reproducible; each caption's nouns are tagged once.
    """

    def __init__(self, nlp: Any = None, cache_size: int = 200_000):
        self._nlp, self._owns_nlp = nlp, nlp is None
        self._nouns = LRUCache(cache_size)  # caption -> its noun spans

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
        negatives: list[str | None] = []
        for caption, found in zip(captions, spans, strict=True):
            if not found:
                negatives.append(None)
                continue
            start, end = rng.choice(found)
            word = caption[start:end].lower()
            others = [noun for noun in pool if noun != word]
            negatives.append(caption[:start] + rng.choice(others) + caption[end:] if others else None)
        return negatives
