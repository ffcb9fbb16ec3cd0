"""A small Prometheus registry: counters, gauges and histograms rendered in the text exposition format 0.0.4.

Written here rather than pulled from `prometheus_client` because the service needs a handful of series and no
push gateway, multiprocess mode or collectors; the format rules that matter (label escaping, cumulative
`_bucket` lines ending in `+Inf`, `_sum` / `_count`) are implemented and tested.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence

LabelValues = tuple[str, ...]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_value(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(float(value))


def _labels(names: Sequence[str], values: Sequence[str], extra: str = "") -> str:
    parts = [f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help_text
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        help_text = self.help.replace("\\", "\\\\").replace("\n", "\\n")
        return [f"# HELP {self.name} {help_text}", f"# TYPE {self.name} {self.kind}"]

    def render(self) -> list[str]:
        raise NotImplementedError


class Counter(_Metric):
    kind = "counter"

    def __init__(self, name: str, help_text: str, labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        with self._lock:
            items = sorted(self._values.items())
        return self.header() + [f"{self.name}{_labels(self.labelnames, k)} {_format_value(v)}" for k, v in items]


class Gauge(_Metric):
    """A gauge whose value is read at scrape time from a callback, so it can never go stale."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, read: Callable[[], float | None]) -> None:
        super().__init__(name, help_text)
        self._read = read

    def render(self) -> list[str]:
        value = self._read()
        if value is None:
            return []
        return self.header() + [f"{self.name} {_format_value(value)}"]


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Iterable[float], labelnames: Sequence[str] = ()) -> None:
        super().__init__(name, help_text, labelnames)
        self.buckets = tuple(sorted(float(b) for b in buckets))
        # per label set: (non-cumulative counts per bucket + overflow, sum, count)
        self._series: dict[LabelValues, tuple[list[int], float, int]] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            counts, total, n = self._series.get(key) or ([0] * (len(self.buckets) + 1), 0.0, 0)
            index = next((i for i, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))
            counts[index] += 1
            self._series[key] = (counts, total + value, n + 1)

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return series[2] if series else 0

    def render(self) -> list[str]:
        with self._lock:
            items = sorted((k, (list(c), s, n)) for k, (c, s, n) in self._series.items())
        lines = self.header()
        for key, (counts, total, n) in items:
            cumulative = 0
            for bound, count in zip((*self.buckets, math.inf), counts, strict=True):
                cumulative += count
                le = f'le="{_format_value(bound)}"'
                lines.append(f"{self.name}_bucket{_labels(self.labelnames, key, le)} {cumulative}")
            lines.append(f"{self.name}_sum{_labels(self.labelnames, key)} {_format_value(total)}")
            lines.append(f"{self.name}_count{_labels(self.labelnames, key)} {n}")
        return lines


class Registry:
    """The metrics one app exposes at /metrics."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def register(self, metric: _Metric, replace: bool = False) -> _Metric:
        """Add a metric; `replace` swaps out one of the same name (gauges rebound to a new engine)."""
        existing = [m for m in self._metrics if m.name == metric.name]
        if existing and not replace:
            raise ValueError(f"metric {metric.name} registered twice")
        self._metrics = [m for m in self._metrics if m.name != metric.name] + [metric]
        return metric

    def render(self) -> str:
        lines: list[str] = []
        for metric in self._metrics:
            lines += metric.render()
        return "\n".join(lines) + "\n"


LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class ServiceMetrics:
    """The series this service exports; gauges are bound later to the engine that knows their values."""

    def __init__(self) -> None:
        self.registry = Registry()
        self.requests = self.registry.register(
            Counter("clover_http_requests_total", "HTTP requests by method, route and status.",
                    ("method", "route", "status")))
        self.latency = self.registry.register(
            Histogram("clover_http_request_duration_seconds", "HTTP request latency by method and route.",
                      LATENCY_BUCKETS, ("method", "route")))
        self.query_batch = self.registry.register(
            Histogram("clover_query_batch_size", "Queries encoded together in one encode_text call.",
                      BATCH_BUCKETS))
        self.inference = self.registry.register(
            Histogram("clover_inference_duration_seconds", "Model and FAISS time by operation.",
                      LATENCY_BUCKETS, ("op",)))

    def bind_gauges(self, gauges: dict[str, tuple[str, Callable[[], float | None]]]) -> None:
        for name, (help_text, read) in gauges.items():
            self.registry.register(Gauge(name, help_text, read), replace=True)

    def render(self) -> str:
        return self.registry.render()
