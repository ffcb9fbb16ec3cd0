"""The Engine: loaded once in the app's lifespan and kept on `app.state.engine`.

It owns the model, the current index reader (behind `ReaderSwap`), the executor that runs every model and FAISS
call off the event loop, the query micro-batcher and the indexing job queue. Loading happens in the background
by default, so the process answers `/healthz` immediately and `/readyz` turns 200 once model and index are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from service.core.config import Settings
from service.core.errors import Conflict, NotReady
from service.core.metrics import ServiceMetrics
from service.engine import inference
from service.engine.backend import Backend, CloverBackend, IndexUnavailable
from service.engine.batcher import TextQueryBatcher
from service.engine.jobs import Job, JobQueue
from service.engine.readers import ReaderSwap

log = logging.getLogger("clover.service")
T = TypeVar("T")
STATS_TTL_S = 5.0  # how long /metrics reuses the index stats (they count catalog rows and bytes on disk)


class EngineState(enum.StrEnum):
    LOADING = "loading"
    READY = "ready"  # model and index loaded
    NO_INDEX = "no_index"  # model loaded, index missing or unopenable: admin can still build it
    FAILED = "failed"  # the model could not be loaded: nothing works until a restart


class Engine:
    def __init__(self, settings: Settings, metrics: ServiceMetrics | None = None,
                 backend: Backend | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or ServiceMetrics()
        self.backend: Backend = backend or CloverBackend()
        self.model: Any = None
        self.checkpoint_fingerprint: str | None = None
        self.state = EngineState.LOADING
        self.state_detail = "loading the model and the index"
        self.readers = ReaderSwap()
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="clover-infer")
        self.batcher = TextQueryBatcher(
            self._encode_queries, self.run,
            window_ms=settings.batch_window_ms, max_batch=settings.batch_max_size,
            cache_size=settings.query_cache_size, on_batch=lambda n: self.metrics.query_batch.observe(n),
        )
        self.jobs = JobQueue(self._run_job)
        self.write_lock = threading.Lock()  # one index writer at a time (jobs, and reloads wait for them)
        self._reload_lock = threading.Lock()
        self._load_task: asyncio.Task[None] | None = None
        self.loaded_at: float | None = None
        self._stats_cache: tuple[Any, float, dict[str, Any]] | None = None
        self.metrics.bind_gauges(self._gauges())

        from service.engine.catalog import CatalogEngine
        from service.engine.qa import QAEngine
        from service.engine.search import SearchEngine

        self.search = SearchEngine(self)
        self.qa = QAEngine(self)
        self.catalog = CatalogEngine(self)

    # ---- lifecycle -----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self.batcher.start()
        self.jobs.start()
        if self.settings.load_in_background:
            self._load_task = asyncio.get_running_loop().create_task(self._load(), name="clover-load")
        else:
            await self._load()

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._load_task
        await self.batcher.stop()
        await asyncio.to_thread(self.jobs.stop)
        self.readers.clear("the service is shutting down")
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def wait_loaded(self, timeout: float = 120.0) -> None:
        """Wait for the background load to finish (tests, and the demo, use it)."""
        if self._load_task is not None:
            await asyncio.wait_for(asyncio.shield(self._load_task), timeout)

    async def _load(self) -> None:
        s = self.settings
        try:
            t0 = time.perf_counter()
            self.checkpoint_fingerprint = await self.run(self.backend.checkpoint_fingerprint, s.checkpoint)
            model = await self.run(self.backend.load_model, s.checkpoint, s.device)
            # one throw-away query pays the first-call costs (kernel selection, allocator) before users do
            await self.run(inference.encode_texts, model, ["warm up"])
            self.model = model
            log.info("model loaded from %s in %.1fs", s.checkpoint, time.perf_counter() - t0)
        except Exception as exc:
            self.state, self.state_detail = EngineState.FAILED, f"the model could not be loaded: {exc}"
            log.error("%s", self.state_detail)
            self.readers.clear(self.state_detail)
            return
        try:
            reader = await self.run(self.backend.open_reader, s.index_dir, self.checkpoint_fingerprint, s.db_url)
        except IndexUnavailable as exc:
            self._index_unavailable(str(exc))
            return
        except Exception as exc:  # an indexer bug must not leave the service "loading" forever
            log.exception("opening the index failed")
            self._index_unavailable(f"{type(exc).__name__}: {exc}")
            return
        self.readers.swap(reader)
        self.loaded_at = time.time()
        self.state, self.state_detail = EngineState.READY, "model and index loaded"
        log.info("index loaded from %s", s.index_dir)

    def _index_unavailable(self, reason: str) -> None:
        detail = f"the index at {self.settings.index_dir} cannot be opened: {reason}"
        self.state, self.state_detail = EngineState.NO_INDEX, detail
        self.readers.clear(detail)
        log.warning("%s", detail)

    # ---- running work off the event loop ----------------------------------------------------------------

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call (model, FAISS, catalog) in the inference executor."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args, **kwargs))

    def require_model(self) -> Any:
        if self.model is None:
            raise NotReady(self.state_detail)
        return self.model

    def _encode_queries(self, texts: list[str]) -> Any:
        t0 = time.perf_counter()
        embeddings = inference.encode_texts(self.require_model(), texts)
        self.metrics.inference.observe(time.perf_counter() - t0, op="encode_text")
        return embeddings

    def timed(self, op: str) -> contextlib.AbstractContextManager[None]:
        """Record the duration of a block as an inference metric (used inside executor functions)."""
        return _Timer(self.metrics, op)

    # ---- reload and writes -------------------------------------------------------------------------------

    def reload(self, wait_for_writer_s: float | None = None) -> dict[str, Any]:
        """Open the index again and swap it in (sync; run it in a thread).

        With `wait_for_writer_s`, wait that long for a running index job to finish first and refuse with 409
        otherwise (the job reloads on its own when it ends). If the new reader cannot be opened the old one keeps
        serving and the caller gets a 409 that says why.
        """
        if wait_for_writer_s is not None:
            if not self.write_lock.acquire(timeout=wait_for_writer_s):
                raise Conflict("an indexing job is running; the index reloads by itself when it finishes")
            try:
                return self._reload()
            finally:
                self.write_lock.release()
        return self._reload()

    def _reload(self) -> dict[str, Any]:
        self.require_model()
        with self._reload_lock:
            t0 = time.perf_counter()
            try:
                reader = self.backend.open_reader(
                    self.settings.index_dir, self.checkpoint_fingerprint, self.settings.db_url)
            except Exception as exc:
                if not isinstance(exc, IndexUnavailable):
                    log.exception("reopening the index failed")
                reason = str(exc) if isinstance(exc, IndexUnavailable) else f"{type(exc).__name__}: {exc}"
                if not self.readers.loaded:
                    self._index_unavailable(reason)
                    raise Conflict(self.state_detail) from exc
                raise Conflict(f"reload failed, still serving the previous index: {reason}") from exc
            generation = self.readers.swap(reader)
            self.loaded_at = time.time()
            self.state, self.state_detail = EngineState.READY, "model and index loaded"
            return {
                "generation": generation,
                "num_vectors": int(reader.num_vectors),
                "fingerprint": getattr(reader, "fingerprint", None),
                "took_ms": round((time.perf_counter() - t0) * 1000, 2),
            }

    def _run_job(self, job: Job) -> dict[str, Any]:
        model = self.require_model()
        s = self.settings
        with self.write_lock:
            if job.kind == "index":
                result = self.backend.index_paths(s.index_dir, [Path(p) for p in job.paths], model, s.db_url,
                                                  self.checkpoint_fingerprint, s.index_workers)
            else:
                result = self.backend.delete_videos(s.index_dir, list(job.video_ids), s.db_url)
                self._remove_uploaded_files(job.paths)
            reload = self._reload()
        return {"result": _jsonable(result), "reload": reload}

    def _remove_uploaded_files(self, paths: list[str]) -> None:
        """Uploads belong to the service: deleting their video deletes the file too (library files are kept)."""
        upload_root = self.settings.resolved_upload_dir.resolve()
        for raw in paths:
            path = Path(raw).resolve()
            if path.is_relative_to(upload_root) and path.is_file():
                path.unlink(missing_ok=True)

    # ---- status ------------------------------------------------------------------------------------------

    def _gauges(self) -> dict[str, tuple[str, Callable[[], float | None]]]:
        def reader_stat(attr: str) -> Callable[[], float | None]:
            def read() -> float | None:
                reader = self.readers.peek()
                return float(getattr(reader, attr)) if reader is not None else None
            return read

        return {
            "clover_ready": ("1 when model and index are loaded.", lambda: float(self.state == EngineState.READY)),
            "clover_index_vectors": ("Segment vectors in the loaded FAISS index.", reader_stat("num_vectors")),
            "clover_index_dim": ("Dimension of the loaded index.", reader_stat("dim")),
            "clover_index_videos": ("Videos in the catalog of the loaded index.", self._stat("videos")),
            "clover_index_failed_videos": ("Videos the indexer could not read.", self._stat("failed")),
            "clover_index_segments": ("Indexed segments in the catalog.", self._stat("segments")),
            "clover_index_generation": ("Reloads since start (1 = first load).",
                                        lambda: float(self.readers.generation)),
            "clover_jobs_pending": ("Indexing jobs queued or running.", lambda: float(self.jobs.pending())),
        }

    def _stat(self, key: str) -> Callable[[], float | None]:
        def read() -> float | None:
            value = self._index_stats().get(key)
            return float(value) if isinstance(value, int | float) else None
        return read

    def _index_stats(self) -> dict[str, Any]:
        """reader.stats(), cached for a few seconds: one scrape reads several gauges from it."""
        reader = self.readers.peek()
        if reader is None:
            return {}
        now = time.monotonic()
        cached = self._stats_cache
        if cached is not None and cached[0] is reader and now - cached[1] < STATS_TTL_S:
            return cached[2]
        try:
            stats = dict(reader.stats())
        except Exception:  # a gauge must never fail a scrape
            return {}
        self._stats_cache = (reader, now, stats)
        return stats


class _Timer:
    def __init__(self, metrics: ServiceMetrics, op: str) -> None:
        self.metrics, self.op = metrics, op

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.metrics.inference.observe(time.perf_counter() - self.t0, op=self.op)


def _jsonable(value: Any) -> Any:
    """The indexer's summary as plain JSON (paths and numpy scalars become strings / numbers)."""
    try:
        return json.loads(json.dumps(value, default=_default))
    except (TypeError, ValueError):
        return str(value)


def _default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "__dict__"):
        return {k: v for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)
