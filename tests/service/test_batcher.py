"""The query micro-batcher: concurrent queries share encode calls; errors reach every waiter."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.engine.batcher import TextQueryBatcher


class CountingEncoder:
    """Deterministic fake text encoder: row = [len(text), first char code]; records every call."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[list[str]] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self.lock:
            self.calls.append(list(texts))
        if self.delay:
            threading.Event().wait(self.delay)
        return np.array([[len(t), ord(t[0])] for t in texts], dtype=np.float32)


async def _run_off_loop(fn, *args):
    return await asyncio.to_thread(fn, *args)


def _batcher(encoder, **kw) -> TextQueryBatcher:
    return TextQueryBatcher(encoder, _run_off_loop, **kw)


def test_concurrent_queries_are_encoded_together_and_get_their_own_rows():
    async def main():
        encoder = CountingEncoder()
        sizes = []
        batcher = _batcher(encoder, window_ms=50, max_batch=64, cache_size=0, on_batch=sizes.append)
        batcher.start()
        texts = [f"q{i}" + "x" * i for i in range(20)]
        rows = await asyncio.gather(*(batcher.encode(t) for t in texts))
        await batcher.stop()
        return encoder, sizes, texts, rows

    encoder, sizes, texts, rows = asyncio.run(main())
    assert len(encoder.calls) == 1 and sorted(encoder.calls[0]) == sorted(texts)
    assert sizes == [20]
    for text, row in zip(texts, rows, strict=True):
        assert row.tolist() == [len(text), ord(text[0])]


def test_max_batch_splits_and_duplicates_are_encoded_once():
    async def main():
        encoder = CountingEncoder()
        batcher = _batcher(encoder, window_ms=50, max_batch=4, cache_size=0)
        batcher.start()
        rows = await asyncio.gather(*(batcher.encode(t) for t in ["a", "a", "a", "a", "bb", "cc", "dd"]))
        await batcher.stop()
        return encoder, rows

    encoder, rows = asyncio.run(main())
    assert [len(c) for c in encoder.calls] == [1, 3]  # first batch: four "a" -> one text
    assert rows[0].tolist() == rows[3].tolist() == [1, ord("a")]


def test_cache_serves_repeats_without_the_model():
    async def main():
        encoder = CountingEncoder()
        batcher = _batcher(encoder, window_ms=0, cache_size=2)
        batcher.start()
        await batcher.encode("one")
        await batcher.encode("one")
        await batcher.encode("two")
        await batcher.encode("three")  # evicts "one"
        await batcher.encode("one")
        await batcher.stop()
        return encoder

    encoder = asyncio.run(main())
    assert encoder.calls == [["one"], ["two"], ["three"], ["one"]]


def test_an_encoder_error_reaches_every_waiter_and_the_batcher_survives():
    calls = {"n": 0}

    def flaky(texts):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return np.ones((len(texts), 2), np.float32)

    async def main():
        batcher = _batcher(flaky, window_ms=30, cache_size=0)
        batcher.start()
        results = await asyncio.gather(batcher.encode("a"), batcher.encode("b"), return_exceptions=True)
        after = await batcher.encode("c")
        await batcher.stop()
        return results, after

    results, after = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert after.tolist() == [1.0, 1.0]


def test_encode_before_start_is_an_error():
    with pytest.raises(RuntimeError, match="start"):
        asyncio.run(_batcher(CountingEncoder()).encode("x"))
