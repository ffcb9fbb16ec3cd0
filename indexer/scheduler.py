"""The decode stage: probe and decode videos on worker processes, ahead of the encoder.

Work runs as small tasks (one probe per video, then one task per chunk of windows) on a process pool, with up to
`prefetch` tasks in flight so decoding overlaps encoding. Results come back in submission order. A file that
raises is one failed video; a file that kills its worker (a decoder segfault) breaks the pool: the pool is
restarted, the tasks that were in flight are retried one at a time, and the one that kills a worker alone is
recorded as failed. Several crashes in a row with no success between them mean the workers cannot run at
all, which aborts the run instead of failing every video. With `workers=0` the tasks run on one background thread (tests, tiny jobs).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from indexer.decode import (
    DecodedChunk,
    DecodeSettings,
    ProbeResult,
    Window,
    decode_chunk,
    init_worker,
    probe_and_cut,
)
from model.video_io import VideoDecodeError

CRASH_REASON = "decoder crashed (worker process died)"
MAX_CRASH_STREAK = 3


class DecodeWorkersBroken(RuntimeError):
    """Workers die whatever file they get: an environment problem, which must not fail every video."""


@dataclass(frozen=True)
class VideoJob:
    video_id: int
    path: str


@dataclass
class DecodeFailure:
    video_id: int
    path: str
    reason: str


@dataclass
class _Task:
    job: VideoJob
    function: Callable[..., Any]
    args: tuple
    isolated: bool = False  # retried alone after a worker crash
    probe: bool = field(default=False)


def _make_executor(workers: int) -> Executor:
    if workers <= 0:
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode")
    # forkserver: workers start from a clean process, not a fork of one holding a model and OpenMP threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["indexer.decode"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=init_worker)


class DecodeStage:
    def __init__(
        self, settings: DecodeSettings, workers: int = 2, prefetch: int | None = None, chunk_windows: int = 16
    ):
        self.settings = settings
        self.workers = workers
        self.max_in_flight = prefetch or max(2, 2 * max(workers, 1))
        self.chunk_windows = chunk_windows
        self._failed: set[int] = set()

    def run(self, jobs: Iterable[VideoJob]) -> Iterator[ProbeResult | DecodedChunk | DecodeFailure]:
        """Yield each video's ProbeResult, then its DecodedChunks (interleaved with other videos), or a failure."""
        job_iter = iter(jobs)
        waiting: deque[_Task] = deque()  # chunk tasks of probed videos, submitted before new probes
        suspects: deque[_Task] = deque()  # tasks in flight when a worker died: retried alone
        in_flight: deque[tuple[_Task, Future]] = deque()
        failed: set[int] = set()
        crashed: list[
            DecodeFailure
        ] = []  # files that killed a worker alone, reported once the pool proves sane
        self._failed = failed
        executor = _make_executor(self.workers)
        try:
            while True:
                executor = self._refill(executor, job_iter, waiting, suspects, in_flight)
                if not in_flight:
                    yield from crashed
                    return
                task, future = in_flight.popleft()
                try:
                    result = future.result()
                except BrokenProcessPool:
                    if task.isolated:
                        failed.add(task.job.video_id)
                        crashed.append(DecodeFailure(task.job.video_id, task.job.path, CRASH_REASON))
                        if len(crashed) >= MAX_CRASH_STREAK:
                            raise DecodeWorkersBroken(
                                f"{len(crashed)} decode workers in a row died, alone, on different files: "
                                "the workers cannot run here (not a file problem); try --workers 0"
                            ) from None
                    else:
                        suspects.extend([task, *(t for t, _ in in_flight)])
                    in_flight.clear()
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = _make_executor(self.workers)
                    continue
                except VideoDecodeError as error:
                    result = DecodeFailure(task.job.video_id, task.job.path, str(error))
                except Exception as error:  # any decoder bug is this file's failure, never the run's
                    result = DecodeFailure(
                        task.job.video_id, task.job.path, f"decode error: {type(error).__name__}: {error}"
                    )
                if crashed:  # a task ran fine after them: those crashes were the files' fault
                    yield from crashed
                    crashed.clear()
                if task.job.video_id in failed:
                    continue  # later chunks of a video that already failed
                if isinstance(result, DecodeFailure):
                    failed.add(task.job.video_id)
                elif isinstance(result, ProbeResult):
                    waiting.extend(self._chunk_tasks(task.job, result))
                yield result
        finally:
            executor.shutdown(wait=True, cancel_futures=True)

    def _chunk_tasks(self, job: VideoJob, probe: ProbeResult) -> list[_Task]:
        windows: list[Window] = probe.windows
        size = self.chunk_windows
        return [
            _Task(
                job, decode_chunk, (job.video_id, job.path, probe.info, windows[i : i + size], self.settings)
            )
            for i in range(0, len(windows), size)
        ]

    def _refill(self, executor, job_iter, waiting, suspects, in_flight) -> Executor:
        if suspects:
            if not in_flight:
                task = suspects.popleft()
                task.isolated = True
                in_flight.append((task, executor.submit(task.function, *task.args)))
            return executor
        while len(in_flight) < self.max_in_flight:
            if waiting:
                task = waiting.popleft()
                if task.job.video_id in self._failed:
                    continue
            else:
                job = next(job_iter, None)
                if job is None:
                    break
                task = _Task(job, probe_and_cut, (job.video_id, job.path, self.settings), probe=True)
            in_flight.append((task, executor.submit(task.function, *task.args)))
        return executor
