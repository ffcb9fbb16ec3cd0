"""Fuzz the HTTP API from its own OpenAPI schema (schemathesis) against a real server.

    python bench/fuzz_api.py                                   # tiny world, served here; 200 examples a mode
    python bench/fuzz_api.py --examples 1000 --seed 7
    python bench/fuzz_api.py --url http://127.0.0.1:8000 --api-key "$CLOVER_API_KEY"   # a running server

For every operation in `/openapi.json`, schemathesis generates requests from the schema -- valid ones
(`positive`) and ones that break it (`negative`: wrong types, missing fields, values out of range, odd strings)
-- plus, for the routes of one video (except DELETE), valid requests about a video that exists (random ids
almost never do) -- and each response is checked for: no 5xx (`not_a_server_error`), a status code the schema
documents (`status_code_conformance`), the documented content type (`content_type_conformance`) and a body
valid against the documented schema (`response_schema_conformance`). Admin routes are called with the admin key, so they are
exercised past the key check (test_security.py covers missing and wrong keys); the server has a library root
and an upload directory of its own, so adds, uploads and deletes really run. Every failure is recorded with the
curl command that reproduces it, and the run goes on.

`tests/reliability/test_fuzz_api.py` runs the same function with a few examples per operation (CI); this script
is the longer run. Needs `pip install schemathesis`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit, header, table, write_result  # noqa: E402

ADMIN_KEY = "fuzz-admin-key"


@dataclass
class FuzzReport:
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)  # operation -> status code -> count
    failures: list[dict[str, str]] = field(default_factory=list)  # distinct (operation, check title) failures
    not_generated: list[str] = field(default_factory=list)  # "operation (mode)" with no case to generate
    seconds: float = 0.0

    @property
    def requests(self) -> int:
        return sum(sum(codes.values()) for codes in self.statuses.values())

    @property
    def server_errors(self) -> int:
        return sum(n for codes in self.statuses.values() for code, n in codes.items() if code.startswith("5"))


def fuzz(url: str, examples: int, api_key: str | None = None, seed: int = 0, negative: bool = True,
         timeout: float = 60.0) -> FuzzReport:
    """Fuzz every operation of the server at `url`; returns what was sent and what failed (never raises on it)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.core.failures import FailureGroup
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    headers = {"X-API-Key": api_key} if api_key else {}
    modes = [schemathesis.GenerationMode.POSITIVE] + ([schemathesis.GenerationMode.NEGATIVE] if negative else [])
    report = FuzzReport()
    seen: set[tuple[str, str]] = set()
    began = time.perf_counter()
    real_ids = [str(v["video_id"]) for v in httpx.get(f"{url}/videos", params={"limit": 3, "status": "indexed"},
                                                        timeout=timeout).json()["videos"]]
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        codes = report.statuses.setdefault(label, {})

        def send(case: Any, label: str = label, codes: dict[str, int] = codes) -> None:
            try:
                response = case.call(base_url=url, headers=headers, timeout=timeout)
            except Exception as error:  # a dropped connection is a failure too, not a crash of the fuzzer
                _record(report, seen, label, "no response", f"{type(error).__name__}: {error}", case)
                return
            codes[str(response.status_code)] = codes.get(str(response.status_code), 0) + 1
            try:
                case.validate_response(response, checks=checks)
            except FailureGroup as group:
                for failure in group.exceptions:
                    _record(report, seen, label, failure.title, failure.message, case)

        strategies = {mode.value: operation.as_strategy(generation_mode=mode) for mode in modes}
        if "{video_id}" in operation.path and operation.method.upper() != "DELETE" and real_ids:
            # random ids almost never exist: also vary everything else around a video that does
            strategies["positive, real video id"] = operation.as_strategy(path_parameters={"video_id": real_ids[0]})
        for mode, strategy in strategies.items():
            run = _property(strategy, send)
            try:
                settings(max_examples=examples, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                         suppress_health_check=list(HealthCheck))(hypothesis_seed(seed)(run))()
            except Unsatisfiable:  # nothing to break in this operation's schema (e.g. no parameters at all)
                report.not_generated.append(f"{label} ({mode})")
    report.seconds = round(time.perf_counter() - began, 1)
    return report


def _property(strategy: Any, send: Callable[[Any], None]) -> Callable[[], None]:
    """A hypothesis test sending each generated case (built here: @given refuses functions with defaults)."""
    from hypothesis import given

    @given(case=strategy)
    def run(case: Any) -> None:
        send(case)

    return run


def _record(report: FuzzReport, seen: set[tuple[str, str]], label: str, title: str, message: str, case: Any) -> None:
    if (label, title) in seen:
        return
    seen.add((label, title))
    try:
        curl = case.as_curl_command()
    except Exception:  # noqa: BLE001 (only a convenience for the report)
        curl = ""
    report.failures.append({"operation": label, "check": title, "message": message[:1500], "curl": curl[:1500]})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="fuzz this running server instead of starting one")
    parser.add_argument("--api-key", help="admin key of the server given by --url")
    parser.add_argument("--examples", type=int, default=200, help="examples per operation and mode")
    parser.add_argument("--positive-only", action="store_true", help="no schema-violating requests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="20 examples per operation and mode")
    args = parser.parse_args(argv)
    if args.quick:
        args.examples = 20
    machine = header("API fuzzing (schemathesis, from /openapi.json)", args.quick)
    if args.url:
        report = fuzz(args.url, args.examples, args.api_key, args.seed, not args.positive_only)
    else:
        from bench.server import serve
        from bench.synthetic import tiny_world

        with tempfile.TemporaryDirectory(prefix="clover-fuzz-") as scratch:
            world = tiny_world(Path(scratch) / "world")
            env = {"CLOVER_API_KEY": ADMIN_KEY, "CLOVER_LIBRARY_ROOTS": str(world["library"]),
                   "CLOVER_INDEX_WORKERS": "0", "CLOVER_MAX_UPLOAD_BYTES": "2000000"}
            with serve(world["index_dir"], world["checkpoint"], env=env) as server:
                report = fuzz(server.url, args.examples, ADMIN_KEY, args.seed, not args.positive_only)
                log_tail = server.log_tail()
            if report.failures:
                emit(f"server log tail:\n```\n{log_tail}\n```\n")
    emit(f"{report.requests} requests over {len(report.statuses)} operations in {report.seconds:.0f} s, "
         f"{args.examples} examples per operation and mode ({'positive' if args.positive_only else 'positive + negative'}"
         f", seed {args.seed}): {report.server_errors} server errors, {len(report.failures)} distinct failures.\n")
    if report.not_generated:
        emit(f"No case could be generated for: {', '.join(report.not_generated)} (nothing in their schema to vary "
             "or to violate).\n")
    emit(table(["operation", "requests", "status codes"], [
        [label, sum(codes.values()), ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))]
        for label, codes in report.statuses.items()], align="lrl"))
    for failure in report.failures:
        emit(f"\n- **{failure['operation']}**: {failure['check']}\n\n  ```\n  {failure['curl']}\n  ```\n"
             f"  {failure['message'][:500]}")
    write_result("fuzz", {"examples": args.examples, "seed": args.seed, "requests": report.requests,
                          "server_errors": report.server_errors, "statuses": report.statuses,
                          "failures": report.failures, "not_generated": report.not_generated,
                          "seconds": report.seconds}, args.quick, machine)
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
