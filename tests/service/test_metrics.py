"""The Prometheus text format written by service.core.metrics."""

from __future__ import annotations

import pytest

from service.core.metrics import Counter, Gauge, Histogram, Registry, ServiceMetrics


def test_counter_renders_labels_escaped_and_sorted():
    c = Counter("x_total", "Help with \\ and\nnewline.", ("route", "status"))
    c.inc(route='/a"b', status="200")
    c.inc(2, route="/a", status="200")
    lines = c.render()
    assert lines[0] == "# HELP x_total Help with \\\\ and\\nnewline."
    assert lines[1] == "# TYPE x_total counter"
    assert lines[2:] == ['x_total{route="/a",status="200"} 2.0', 'x_total{route="/a\\"b",status="200"} 1.0']


def test_counter_rejects_wrong_labels():
    c = Counter("y_total", "h", ("a",))
    with pytest.raises(ValueError, match="takes labels"):
        c.inc(b="1")


def test_histogram_buckets_are_cumulative_with_inf_sum_and_count():
    h = Histogram("lat_seconds", "h", (0.1, 1.0), ("route",))
    for value in (0.05, 0.5, 0.5, 3.0):
        h.observe(value, route="/s")
    lines = h.render()[2:]
    assert lines == [
        'lat_seconds_bucket{route="/s",le="0.1"} 1',
        'lat_seconds_bucket{route="/s",le="1.0"} 3',
        'lat_seconds_bucket{route="/s",le="+Inf"} 4',
        'lat_seconds_sum{route="/s"} 4.05',
        'lat_seconds_count{route="/s"} 4',
    ]
    assert h.count(route="/s") == 4


def test_gauge_reads_at_scrape_time_and_skips_none():
    value = {"v": None}
    g = Gauge("g", "h", lambda: value["v"])
    assert g.render() == []
    value["v"] = 7
    assert g.render()[-1] == "g 7.0"


def test_registry_refuses_duplicates_and_ends_with_newline():
    r = Registry()
    r.register(Counter("a_total", "h"))
    with pytest.raises(ValueError):
        r.register(Counter("a_total", "h"))
    assert r.render().endswith("\n")


def test_service_metrics_has_the_documented_series():
    m = ServiceMetrics()
    m.requests.inc(method="GET", route="/search", status="200")
    text = m.render()
    for name in ("clover_http_requests_total", "clover_http_request_duration_seconds", "clover_query_batch_size"):
        assert f"# TYPE {name}" in text
