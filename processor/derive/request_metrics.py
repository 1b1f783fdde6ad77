"""Request-level usage metrics: counters and latency histograms aggregated from ApiRequests.

A sink of the derivation stage.  It aggregates each batch into plain dicts
first (one entry per distinct label set in the batch, usually a handful), then
merges those into the series tables under a lock, so the per-span work is a
dict update and a bisect, and scrapes never see a half-merged batch.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import LimitsConfig
from ..telemetry import PipelineStats
from .requests import COUNTER_FIELDS, ApiRequest
from .series import SeriesTable

__all__ = ["RequestMetrics", "Snapshot", "FAMILIES"]

# metric name → label names; the order of label values in every key.
FAMILIES: dict[str, tuple[str, ...]] = {
    "api_requests": ("service", "method", "route", "status_code", "plan_tier", "deprecated"),
    "api_client_requests": ("service", "client_name", "client_version", "status_class"),
    "api_deprecated_requests": ("service", "method", "route", "plan_tier", "client_name", "client_version"),
    "api_request_duration_seconds": ("service", "method", "route", "plan_tier"),
    # Issue 15: the surface each client library uses. Its labels are all in the counters' key, so
    # it costs a cell per distinct key in the merge, not a pass over the spans in another sink.
    "api_client_endpoint_requests": ("service", "client_name", "method", "route", "status_class"),
}

# The counters' key: the leading COUNTER_FIELDS of each request. `r[:n]`, not `r[slice(n)]`: mypy
# types a NamedTuple indexed by a slice object as one of its fields, and a colon slice as a tuple.
_COUNTER_LEN = len(COUNTER_FIELDS)
_STATUS_CLASS = {str(c): f"{c // 100}xx" for c in range(100, 600)}
_MAX_COMBOS = 100_000


@dataclass
class Snapshot:
    """A consistent copy of every series, taken under the lock for one scrape."""

    counters: dict[str, dict[tuple[Any, ...], float]]
    histograms: dict[tuple[Any, ...], tuple[list[float], float, float, list[Any]]]
    buckets: tuple[float, ...]
    series_counts: dict[str, int]


class RequestMetrics:
    def __init__(
        self,
        limits: LimitsConfig,
        buckets: Sequence[float],
        stats: PipelineStats,
        exemplars: bool = True,
        sweep_interval: float | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._bounds = tuple(buckets)
        self._nbuckets = len(self._bounds) + 1  # + the +Inf bucket
        self._exemplars = exemplars
        self._ttl = float(limits.series_ttl)
        self._sweep_interval = sweep_interval or max(1.0, min(60.0, self._ttl / 10))
        self._last_sweep = time.monotonic()

        def table(name: str, new_cell: Callable[[], list[Any]]) -> SeriesTable:
            return SeriesTable.limited(name, FAMILIES[name], limits, new_cell, stats)

        counter_cell = lambda: [0.0, 0.0]  # noqa: E731  [last_update, value]
        n = self._nbuckets
        # [last_update, count, sum, bucket counts, exemplar per bucket]
        hist_cell = lambda: [0.0, 0.0, 0.0, [0.0] * n, [None] * n]  # noqa: E731
        self.requests = table("api_requests", counter_cell)
        self.client_requests = table("api_client_requests", counter_cell)
        self.deprecated_requests = table("api_deprecated_requests", counter_cell)
        self.durations = table("api_request_duration_seconds", hist_cell)
        self.client_endpoints = table("api_client_endpoint_requests", counter_cell)
        # counter key → the cells it updates in each counter table, when none of its labels folds
        # into __other__: one lookup a key instead of one per table. Emptied at every sweep.
        self._combos: dict[tuple[Any, ...], tuple[list[Any], ...]] = {}

    def consume(self, requests: Sequence[ApiRequest]) -> None:
        """Aggregate one batch; called from the worker thread."""
        counts: dict[tuple[Any, ...], float] = {}
        hists: dict[tuple[Any, ...], list[Any]] = {}
        bounds = self._bounds
        n = self._nbuckets
        exemplars = self._exemplars
        for r in requests:
            key = r[:_COUNTER_LEN]  # service … client_version: every counter label comes from these
            w = r.weight
            counts[key] = counts.get(key, 0.0) + w
            d = r.duration
            if d < 0:
                continue  # end before start: counted, but no latency to observe
            hkey = (r.service, r.method, r.route, r.plan_tier)
            h = hists.get(hkey)
            if h is None:
                h = hists[hkey] = [0.0, 0.0, [0.0] * n, [None] * n]
            i = bisect_left(bounds, d)
            h[0] += w
            h[1] += d * w
            h[2][i] += w
            if exemplars:
                h[3][i] = r

        now = time.monotonic()
        with self._lock:
            combos = self._combos
            for ckey, w in counts.items():
                cells = combos.get(ckey)
                if cells is not None:
                    for c in cells:
                        c[0] = now
                        c[1] += w
                    continue
                service, method, route, code, plan, deprecated, cname, cver = ckey
                status_class = _STATUS_CLASS.get(code, "unknown")
                parts = [
                    self.requests.cell_folds((service, method, route, code, plan, deprecated), now, w),
                    self.client_requests.cell_folds((service, cname, cver, status_class), now, w),
                    self.client_endpoints.cell_folds((service, cname, method, route, status_class), now, w),
                ]
                if deprecated == "true":
                    parts.append(
                        self.deprecated_requests.cell_folds(
                            (service, method, route, plan, cname, cver), now, w
                        )
                    )
                folded = False
                for c, f in parts:
                    c[1] += w
                    folded = folded or f
                if not folded:
                    if len(combos) >= _MAX_COMBOS:
                        combos.clear()
                    combos[ckey] = tuple(c for c, _ in parts)
            for hkey, (count, total, buckets, examples) in hists.items():
                cell = self.durations.cell(hkey, now, count)
                cell[1] += count
                cell[2] += total
                cb, ce = cell[3], cell[4]
                for i in range(n):
                    if buckets[i]:
                        cb[i] += buckets[i]
                        if examples[i] is not None:
                            ce[i] = examples[i]
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self._combos.clear()  # expiry may drop the cells it points at
        for t in self._tables():
            t.expire(now)

    def _tables(self) -> tuple[SeriesTable, ...]:
        return (
            self.requests,
            self.client_requests,
            self.deprecated_requests,
            self.durations,
            self.client_endpoints,
        )

    def series_counts(self) -> dict[str, int]:
        return {t.metric: len(t) for t in self._tables()}

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        with self._lock:
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)
            counters = {
                t.metric: {k: c[1] for k, c in t.series.items()}
                for t in (
                    self.requests,
                    self.client_requests,
                    self.deprecated_requests,
                    self.client_endpoints,
                )
            }
            histograms = {k: (list(c[3]), c[1], c[2], list(c[4])) for k, c in self.durations.series.items()}
            counts = {t.metric: len(t) for t in self._tables()}
        return Snapshot(counters, histograms, self._bounds, counts)
