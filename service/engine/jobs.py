"""Background indexing jobs: one worker thread, one job at a time.

Adding and deleting videos write the index, and the index has one writer at a time, so every write goes through
this queue; the HTTP request that asked for it returns 202 with the job at once and the client polls
`GET /jobs/{id}`. Jobs live in memory (the catalog records each video's own status durably); the most recent
`max_kept` are remembered.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

log = logging.getLogger("clover.service.jobs")

JobKind = Literal["index", "delete"]
JobStatus = Literal["queued", "running", "succeeded", "failed"]


@dataclass
class Job:
    job_id: str
    kind: JobKind
    paths: list[str] = field(default_factory=list)  # files to index (resolved, inside the library roots)
    video_ids: list[Any] = field(default_factory=list)  # videos to delete
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    summary: dict[str, Any] | None = None  # what the indexer reported, plus the reload that followed
    error: str | None = None


class JobQueue:
    def __init__(self, run_job: Callable[[Job], dict[str, Any]], max_kept: int = 1000) -> None:
        self._run_job = run_job
        self._max_kept = max_kept
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="clover-index-jobs", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the running job (if any); queued jobs are dropped with the process."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def submit(self, kind: JobKind, *, paths: list[str] | None = None, video_ids: list[Any] | None = None) -> Job:
        job = Job(job_id=uuid.uuid4().hex, kind=kind, paths=list(paths or []), video_ids=list(video_ids or []))
        with self._lock:
            self._jobs[job.job_id] = job
            while len(self._jobs) > self._max_kept:
                oldest = next(iter(self._jobs))
                if self._jobs[oldest].status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
            snapshot = replace(job)
        self._queue.put(job.job_id)
        return snapshot

    def get(self, job_id: str) -> Job | None:
        """A snapshot of the job (the worker keeps mutating the original)."""
        with self._lock:
            job = self._jobs.get(job_id)
            return replace(job) if job is not None else None

    def pending(self) -> int:
        with self._lock:
            return sum(job.status in ("queued", "running") for job in self._jobs.values())

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                job.status, job.started_at = "running", time.time()
            try:
                summary = self._run_job(replace(job))
                status, error = "succeeded", None
            except Exception as exc:  # a failed job is reported through GET /jobs/{id}, never kills the worker
                log.error("job %s (%s) failed: %s\n%s", job_id, job.kind, exc, traceback.format_exc())
                summary, status, error = None, "failed", f"{type(exc).__name__}: {exc}"
            with self._lock:
                job.summary, job.status, job.error, job.finished_at = summary, status, error, time.time()
