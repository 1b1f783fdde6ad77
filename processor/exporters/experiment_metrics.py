"""api_experiment_requests_total and api_experiment_request_duration_seconds, from Exposures.

An exposure sink of the experiment join (derive/experiments.py) and a Prometheus collector.
Like the request families, counts are weighted by the sampling adjusted count, each label is
bounded by `processors.limits` (`experiment` and `variant` have their own defaults, past them a
value folds into `__other__`), and idle series expire after `limits.series_ttl`. Per replica,
in memory: `sum` across instances.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from ..config import LimitsConfig
from ..derive.flags import Exposure
from ..derive.series import SeriesTable
from ..telemetry import PipelineStats
from .le import le_label

__all__ = ["DURATION_LABELS", "ExperimentMetrics", "HELP", "REQUEST_LABELS"]

REQUESTS = "api_experiment_requests"
DURATION = "api_experiment_request_duration_seconds"
REQUEST_LABELS = ("service", "experiment", "variant", "status_class")
DURATION_LABELS = ("service", "experiment", "variant")
HELP = {
    REQUESTS: "API requests exposed to an experiment (experiments.yaml), per variant, weighted.",
    DURATION: "Server-side duration of API requests exposed to an experiment, per variant.",
}
_STATUS_CLASS = {str(c): f"{c // 100}xx" for c in range(100, 600)}


class ExperimentMetrics:
    def __init__(
        self,
        limits: LimitsConfig,
        buckets: Sequence[float],
        stats: PipelineStats,
        sweep_interval: float | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._bounds = tuple(buckets)
        n = len(self._bounds) + 1  # + the +Inf bucket
        ttl = float(limits.series_ttl)
        self._sweep_interval = sweep_interval or max(1.0, min(60.0, ttl / 10))
        self._last_sweep = time.monotonic()
        # [last_update, value]
        self.requests = SeriesTable.limited(REQUESTS, REQUEST_LABELS, limits, lambda: [0.0, 0.0], stats)
        # [last_update, count, sum, bucket counts]
        self.durations = SeriesTable.limited(
            DURATION, DURATION_LABELS, limits, lambda: [0.0, 0.0, 0.0, [0.0] * n], stats
        )

    def consume_exposures(self, exposures: Sequence[Exposure]) -> None:
        """Count one batch (worker thread); aggregated first so a scrape never sees half of it."""
        counts: dict[tuple[str, str, str, str], float] = {}
        hists: dict[tuple[str, str, str], list[Any]] = {}
        bounds = self._bounds
        n = len(bounds) + 1
        for x in exposures:
            w = x.weight
            key = (x.service, x.experiment, x.variant, _STATUS_CLASS.get(x.status_code, "unknown"))
            counts[key] = counts.get(key, 0.0) + w
            d = x.duration
            if d < 0:
                continue  # end before start: counted, but no latency to observe
            hkey = (x.service, x.experiment, x.variant)
            h = hists.get(hkey)
            if h is None:
                h = hists[hkey] = [0.0, 0.0, [0.0] * n]
            h[0] += w
            h[1] += d * w
            h[2][bisect_left(bounds, d)] += w
        now = time.monotonic()
        with self._lock:
            for ckey, w in counts.items():
                self.requests.cell(ckey, now, w)[1] += w
            for hkey, (count, total, buckets) in hists.items():
                cell = self.durations.cell(hkey, now, count)
                cell[1] += count
                cell[2] += total
                cb = cell[3]
                for i, b in enumerate(buckets):
                    cb[i] += b
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self.requests.expire(now)
        self.durations.expire(now)

    def series_counts(self) -> dict[str, int]:
        return {t.metric: len(t) for t in (self.requests, self.durations)}

    def collect(self) -> Iterable[Metric]:
        """Both families from one consistent copy of their series (scrape thread)."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)
            counters = {k: c[1] for k, c in self.requests.series.items()}
            hists = {k: (list(c[3]), c[2]) for k, c in self.durations.series.items()}
        family = CounterMetricFamily(REQUESTS, HELP[REQUESTS], labels=list(REQUEST_LABELS))
        for key, value in sorted(counters.items()):
            family.add_metric(list(key), value)
        yield family
        les = [le_label(b) for b in self._bounds] + ["+Inf"]
        histogram = HistogramMetricFamily(
            DURATION, HELP[DURATION], labels=list(DURATION_LABELS), unit="seconds"
        )
        for key, (buckets, total) in sorted(hists.items()):
            cumulative, out = 0.0, []
            for le, b in zip(les, buckets, strict=True):
                cumulative += b
                out.append((le, cumulative))
            histogram.add_metric(list(key), out, total)
        yield histogram
