"""The HTTP API fuzzed from its own OpenAPI schema (schemathesis) against a real server: no 5xx, every response
as the schema documents it (status code, content type, body). The longer run is `python bench/fuzz_api.py`."""

from __future__ import annotations

import pytest

from bench.fuzz_api import fuzz
from tests.reliability.conftest import ADMIN_KEY, serve_copy

pytest.importorskip("schemathesis")

EXAMPLES = 25  # per operation and mode (valid / schema-violating / a real video id): ~700 requests, < 30 s


@pytest.fixture(scope="module")
def served(world, tmp_path_factory):
    with serve_copy(world, tmp_path_factory.mktemp("fuzz"), CLOVER_MAX_UPLOAD_BYTES="2000000") as served:
        yield served


def test_fuzzed_requests_get_documented_answers_and_never_a_5xx(served):
    report = fuzz(served.url, EXAMPLES, api_key=ADMIN_KEY, seed=0)
    details = "\n\n".join(f"{f['operation']}: {f['check']}\n{f['message']}\n{f['curl']}" for f in report.failures)
    assert not report.failures, f"{len(report.failures)} failures:\n{details}\n\nserver log:\n{served.server.log_tail()}"
    assert report.server_errors == 0
    assert report.requests >= 150 and len(report.statuses) >= 14  # every operation was exercised
    searched = report.statuses["GET /search"]
    assert searched.get("200", 0) > 0 and sum(searched.values()) > searched.get("200", 0)  # valid and refused
