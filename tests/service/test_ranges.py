"""HTTP Range parsing for video streaming (RFC 9110 section 14)."""

from __future__ import annotations

import pytest

from service.api.streaming import parse_range
from service.core.errors import RangeNotSatisfiable


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=10-", (10, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),  # suffix longer than the file: the whole file
        ("bytes=990-5000", (990, 999)),  # end past the file is clipped
        ("Bytes = 5-5", (5, 5)),
        ("bytes=0-1,5-9", None),  # several ranges: the whole file (allowed by the RFC)
    ],
)
def test_satisfiable_ranges(header, expected):
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize(
    "header",
    ["bytes=1000-", "bytes=5000-6000", "bytes=9-3", "bytes=abc", "items=0-5", "bytes=", "bytes=-0", "bytes=1-x"],
)
def test_bad_ranges_are_416_with_content_range(header):
    with pytest.raises(RangeNotSatisfiable) as info:
        parse_range(header, 1000)
    assert info.value.headers["Content-Range"] == "bytes */1000"
    assert info.value.status_code == 416


def test_any_range_of_an_empty_file_is_416():
    with pytest.raises(RangeNotSatisfiable):
        parse_range("bytes=-10", 0)
