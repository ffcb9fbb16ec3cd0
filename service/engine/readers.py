"""Atomic reader swap with reference counting (copy-on-reload).

A reload opens a *new* reader next to the old one and swaps a pointer under a lock. Requests take a lease on
whichever reader is current when they start and keep using it until they finish, so an in-flight search never
sees half of an old index and half of a new one; the old reader is closed when its last lease is returned.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from service.core.errors import NotReady


@dataclass
class _Slot:
    reader: Any
    generation: int
    leases: int = 0
    retired: bool = False


class ReaderSwap:
    """Holds the current IndexReader; `lease()` borrows it, `swap()` replaces it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slot: _Slot | None = None
        self._generation = 0
        self.unavailable_reason = "the index is not loaded yet"

    @property
    def generation(self) -> int:
        return self._generation

    @property
    def loaded(self) -> bool:
        return self._slot is not None

    def peek(self) -> Any | None:
        """The current reader without a lease: only for cheap, race-tolerant reads such as gauges."""
        slot = self._slot
        return slot.reader if slot is not None else None

    @contextmanager
    def lease(self) -> Iterator[Any]:
        """Borrow the current reader for the duration of one request's work."""
        with self._lock:
            slot = self._slot
            if slot is None:
                raise NotReady(self.unavailable_reason)
            slot.leases += 1
        try:
            yield slot.reader
        finally:
            self._release(slot)

    def swap(self, reader: Any) -> int:
        """Make `reader` current; the previous one is closed once no request holds it. Returns the generation."""
        with self._lock:
            old = self._slot
            self._generation += 1
            self._slot = _Slot(reader, self._generation)
            close_now = old is not None and old.leases == 0
            if old is not None:
                old.retired = True
        if close_now:
            _close(old.reader)
        return self._generation

    def clear(self, reason: str) -> None:
        """Drop the current reader (shutdown, or an index that can no longer be opened)."""
        with self._lock:
            old, self._slot = self._slot, None
            self.unavailable_reason = reason
            close_now = old is not None and old.leases == 0
            if old is not None:
                old.retired = True
        if close_now:
            _close(old.reader)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            slot.leases -= 1
            close_now = slot.retired and slot.leases == 0
        if close_now:
            _close(slot.reader)


def _close(reader: Any) -> None:
    close = getattr(reader, "close", None)
    if close is not None:
        close()
