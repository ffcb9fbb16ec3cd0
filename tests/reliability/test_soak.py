"""A 20-second soak (bench/soak.py): searches, QA and browsing while videos are added, deleted and reloaded."""

from __future__ import annotations

import pytest

from bench.soak import run_soak


@pytest.mark.slow
def test_short_soak_answers_everything_and_keeps_memory_flat(tmp_path):
    report = run_soak(20, tmp_path, search_clients=3, qa_clients=2, log_path=tmp_path / "server.log")
    problems = report.unexpected + report.transport_errors + report.failed_jobs
    assert not problems, "\n".join(problems[:20]) + "\n" + (tmp_path / "server.log").read_text()[-3000:]
    assert report.lost == 0 and sum(report.sent.values()) > 200
    assert {"search", "qa", "browse", "admin"} <= set(report.sent)
    assert report.admin_cycles >= 2  # videos really were added, found, deleted and the index reloaded meanwhile
    rss = report.rss_summary()
    assert rss["growth"] < 100, rss  # loose in 20 s; bench/soak.py --minutes N is the real memory check
