"""Micro-batching of text queries: concurrent searches share one `model.encode_text` call.

Encoding one query costs nearly as much as encoding a dozen (the text tower is latency-bound on small batches),
so the batcher waits up to `window_ms` after the first queued query for others to arrive, encodes up to
`max_batch` of them in one call off the event loop, and hands each caller its row. While one batch is being
encoded the next one fills up, so under load batches grow on their own and when idle the only added latency is
the window. Identical texts in a batch are encoded once, and a small LRU serves repeated queries (paging,
toggling re-ranking) without touching the model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np

EncodeBatch = Callable[[list[str]], np.ndarray]  # texts -> float32 [B, D]
RunOffLoop = Callable[..., Awaitable[np.ndarray]]  # runs a sync callable in the inference executor


class TextQueryBatcher:
    def __init__(
        self,
        encode_batch: EncodeBatch,
        run_off_loop: RunOffLoop,
        *,
        window_ms: float = 3.0,
        max_batch: int = 32,
        cache_size: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self._encode_batch = encode_batch
        self._run = run_off_loop
        self._window_s = window_ms / 1000.0
        self._max_batch = max_batch
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[str, asyncio.Future[np.ndarray]]] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the consumer task on the running event loop (called from the app's lifespan)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._consume(), name="clover-query-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                _, future = self._queue.get_nowait()
                if not future.done():
                    future.cancel()

    async def encode(self, text: str) -> np.ndarray:
        """The query's embedding, float32 [D]."""
        cached = self._cache.get(text)
        if cached is not None:
            self._cache.move_to_end(text)
            return cached
        if self._queue is None or self._task is None:
            raise RuntimeError("TextQueryBatcher.start() was not called")
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put((text, future))
        return await future

    async def _consume(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self._window_s
            while len(batch) < self._max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except TimeoutError:
                    break
            await self._encode(batch)

    async def _encode(self, batch: list[tuple[str, asyncio.Future[np.ndarray]]]) -> None:
        live = [(text, fut) for text, fut in batch if not fut.done()]  # callers that gave up are skipped
        if not live:
            return
        texts = list(dict.fromkeys(text for text, _ in live))  # unique, order kept
        try:
            embeddings = await self._run(self._encode_batch, texts)
        except Exception as exc:  # every waiter gets the error; the consumer keeps running
            for _, fut in live:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(texts))
        rows = {text: np.asarray(embeddings[i], dtype=np.float32) for i, text in enumerate(texts)}
        for text, row in rows.items():
            self._remember(text, row)
        for text, fut in live:
            if not fut.done():
                fut.set_result(rows[text])

    def _remember(self, text: str, row: np.ndarray) -> None:
        if self._cache_size <= 0:
            return
        row.setflags(write=False)  # shared between callers: nobody may modify it in place
        self._cache[text] = row
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
