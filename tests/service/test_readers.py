"""Atomic reader swap: in-flight leases keep the old reader, which closes after the last one."""

from __future__ import annotations

import pytest

from service.core.errors import NotReady
from service.engine.readers import ReaderSwap


class Reader:
    def __init__(self, name: str) -> None:
        self.name, self.closed = name, False

    def close(self) -> None:
        assert not self.closed, "closed twice"
        self.closed = True


def test_lease_before_load_is_not_ready():
    swap = ReaderSwap()
    with pytest.raises(NotReady), swap.lease():
        pass


def test_swap_keeps_old_reader_open_until_in_flight_leases_end():
    swap = ReaderSwap()
    old, new = Reader("old"), Reader("new")
    assert swap.swap(old) == 1
    with swap.lease() as during:
        assert swap.swap(new) == 2
        assert during is old and not old.closed  # the request in flight still reads the old index
        with swap.lease() as later:
            assert later is new  # new requests get the new one at once
    assert old.closed and not new.closed


def test_swap_closes_an_idle_reader_immediately_and_clear_refuses_new_leases():
    swap = ReaderSwap()
    a, b = Reader("a"), Reader("b")
    swap.swap(a)
    swap.swap(b)
    assert a.closed
    swap.clear("shutting down")
    assert b.closed
    with pytest.raises(NotReady, match="shutting down"), swap.lease():
        pass
