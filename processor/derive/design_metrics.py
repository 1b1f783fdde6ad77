"""API design metrics: body sizes, parameters, validation errors, errors, client surface, regions.

A sink of the derivation stage beside `request_metrics.py`, whose hot loop it leaves alone.
Like it, each batch is first aggregated into plain dicts keyed by label tuples, then merged
into the bounded series tables under a lock.  Every request adds to the client-endpoint and
region families; only a request that carries a schema-2 attribute (a size, names, validation
errors, an error type) takes the longer path, so version 1 traffic pays one dict update and
one bisect a span here.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import add
from typing import Any

from ..config import LimitsConfig
from ..telemetry import PipelineStats
from .requests import ApiRequest
from .series import SeriesTable

__all__ = ["DesignMetrics", "DesignSnapshot", "FAMILIES", "COUNTERS", "HISTOGRAMS", "UNKNOWN_REGION"]

#: metric name → label names, in the order of every key (counters without `_total`).
FAMILIES: dict[str, tuple[str, ...]] = {
    "api_parameter_requests": ("service", "method", "route", "location", "parameter"),
    "api_validation_errors": ("service", "method", "route", "location", "field", "error_type"),
    "api_errors": ("service", "method", "route", "error_type"),
    "api_region_requests": ("service", "client_region", "server_region", "status_class"),
    "api_request_body_size_bytes": ("service", "method", "route"),
    "api_response_body_size_bytes": ("service", "method", "route"),
    "api_region_request_duration_seconds": ("service", "client_region"),
}
COUNTERS = (
    "api_parameter_requests",
    "api_validation_errors",
    "api_errors",
    "api_region_requests",
)
HISTOGRAMS = (
    "api_request_body_size_bytes",
    "api_response_body_size_bytes",
    "api_region_request_duration_seconds",
)
# Families whose name label is bounded per endpoint as well (LimitsConfig.max_names_per_route).
_SCOPED = {"api_parameter_requests": "parameter", "api_validation_errors": "field"}
#: The region label of a request whose span (or resource) names none.
UNKNOWN_REGION = "unknown"

_STATUS_CLASS = {str(c): f"{c // 100}xx" for c in range(100, 600)}


@dataclass
class DesignSnapshot:
    """A consistent copy of every series, taken under the lock for one scrape."""

    counters: dict[str, dict[tuple[Any, ...], float]]
    # name → key → (bucket counts, count, sum)
    histograms: dict[str, dict[tuple[Any, ...], tuple[list[float], float, float]]]
    buckets: dict[str, tuple[float, ...]]


def _observe(
    hists: dict[tuple[Any, ...], list[Any]],
    key: tuple[Any, ...],
    bounds: tuple[float, ...],
    value: float,
    w: float,
) -> None:
    h = hists.get(key)
    if h is None:
        h = hists[key] = [0.0, 0.0, [0.0] * (len(bounds) + 1)]
    h[0] += w
    h[1] += value * w
    h[2][bisect_left(bounds, value)] += w


class DesignMetrics:
    def __init__(
        self,
        limits: LimitsConfig,
        latency_buckets: Sequence[float],
        size_buckets: Sequence[float],
        stats: PipelineStats,
        sweep_interval: float | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._latency = tuple(latency_buckets)
        self._sizes = tuple(size_buckets)
        # Sizes are ints: bisecting them among int bounds takes half the time of float bounds.
        self._size_search = tuple(int(b) if float(b).is_integer() else b for b in self._sizes)
        self._ttl = float(limits.series_ttl)
        self._sweep_interval = sweep_interval or max(1.0, min(60.0, self._ttl / 10))
        self._last_sweep = time.monotonic()

        def table(name: str, new_cell: Callable[[], list[Any]]) -> SeriesTable:
            labels = FAMILIES[name]
            # The names of one (service, method, route) are bounded on their own too.
            per_route = labels.index(_SCOPED[name]) if name in _SCOPED else None
            scoped = None if per_route is None else (per_route, 3, limits.max_names_per_route)
            return SeriesTable.limited(name, labels, limits, new_cell, stats, scoped)

        counter_cell = lambda: [0.0, 0.0]  # noqa: E731  [last_update, value]

        def hist_cell(bounds: tuple[float, ...]) -> Callable[[], list[Any]]:
            n = len(bounds) + 1
            return lambda: [0.0, 0.0, 0.0, [0.0] * n]  # [last_update, count, sum, bucket counts]

        self.tables: dict[str, SeriesTable] = {name: table(name, counter_cell) for name in COUNTERS}
        self.tables["api_request_body_size_bytes"] = table(
            "api_request_body_size_bytes", hist_cell(self._sizes)
        )
        self.tables["api_response_body_size_bytes"] = table(
            "api_response_body_size_bytes", hist_cell(self._sizes)
        )
        self.tables["api_region_request_duration_seconds"] = table(
            "api_region_request_duration_seconds", hist_cell(self._latency)
        )

    def consume(self, requests: Sequence[ApiRequest]) -> None:
        """Aggregate one batch; called from the worker thread."""
        counts: dict[tuple[Any, ...], float] = {}  # (service, code, client region, server region)
        durations: dict[tuple[Any, ...], list[Any]] = {}
        latency = self._latency
        n = len(latency) + 1
        design: list[tuple[Any, ...]] = []
        for r in requests:
            (
                service,
                method,
                route,
                code,
                _,
                _,
                cname,
                _,
                _,
                _,
                _,
                d,
                w,
                _,
                _,
                _,
                rq,
                rs,
                qp,
                bf,
                ve,
                et,
                cr,
                sr,
                _,
                _,
            ) = r
            key = (service, code, cr, sr)
            counts[key] = counts.get(key, 0.0) + w
            if d >= 0:  # _observe, inlined: a call a span costs a tenth of this loop
                hk = (service, cr)
                h = durations.get(hk)
                if h is None:
                    h = durations[hk] = [0.0, 0.0, [0.0] * n]
                h[0] += w
                h[1] += d * w
                h[2][bisect_left(latency, d)] += w
            if not (rq is None and rs is None and qp is None and bf is None and ve is None and et is None):
                design.append((service, method, route, w, rq, rs, qp, bf, ve, et))
        sizes = self._size_search
        req_sizes: dict[tuple[Any, ...], list[Any]] = {}
        resp_sizes: dict[tuple[Any, ...], list[Any]] = {}
        params: dict[tuple[Any, ...], float] = {}
        invalid: dict[tuple[Any, ...], float] = {}
        errors: dict[tuple[Any, ...], float] = {}
        nsizes = len(sizes) + 1
        for service, method, route, w, rq, rs, qp, bf, ve, et in design:
            ep = (service, method, route)
            # _observe, inlined (a call costs a third of each observation)
            if rq is not None:
                h = req_sizes.get(ep)
                if h is None:
                    h = req_sizes[ep] = [0.0, 0.0, [0.0] * nsizes]
                h[0] += w
                h[1] += rq * w
                h[2][bisect_left(sizes, rq)] += w
            if rs is not None:
                h = resp_sizes.get(ep)
                if h is None:
                    h = resp_sizes[ep] = [0.0, 0.0, [0.0] * nsizes]
                h[0] += w
                h[1] += rs * w
                h[2][bisect_left(sizes, rs)] += w
            if qp:
                for name in qp:
                    pk = (service, method, route, "query", name)  # (*ep, …) builds a list first
                    params[pk] = params.get(pk, 0.0) + w
            if bf:
                for name in bf:
                    pk = (service, method, route, "body", name)
                    params[pk] = params.get(pk, 0.0) + w
            if ve:
                for where, kind in ve:
                    vk = (service, method, route, where, kind)
                    invalid[vk] = invalid.get(vk, 0.0) + w
            if et is not None:
                ek = (service, method, route, et)
                errors[ek] = errors.get(ek, 0.0) + w

        regions: dict[tuple[Any, ...], float] = {}
        now = time.monotonic()
        t = self.tables
        with self._lock:
            for (service, code, cr, sr), w in counts.items():
                rk = (service, cr or UNKNOWN_REGION, sr or UNKNOWN_REGION, _STATUS_CLASS.get(code, "unknown"))
                regions[rk] = regions.get(rk, 0.0) + w
            table = t["api_region_requests"]
            for k, w in regions.items():
                table.cell(k, now, w)[1] += w
            table = t["api_parameter_requests"]
            for k, w in params.items():
                table.cell(k, now, w)[1] += w
            table = t["api_validation_errors"]
            for (service, method, route, where, kind), w in invalid.items():
                # "body.items.quantity" → location "body", field "items.quantity"; "body" → field ""
                location, _, field = where.partition(".")
                table.cell((service, method, route, location, field, kind), now, w)[1] += w
            table = t["api_errors"]
            for k, w in errors.items():
                table.cell(k, now, w)[1] += w
            self._merge(t["api_request_body_size_bytes"], req_sizes, now)
            self._merge(t["api_response_body_size_bytes"], resp_sizes, now)
            if None in {cr for _, cr in durations}:
                durations = {(s, cr or UNKNOWN_REGION): h for (s, cr), h in durations.items()}
            self._merge(t["api_region_request_duration_seconds"], durations, now)
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)

    @staticmethod
    def _merge(table: SeriesTable, hists: dict[tuple[Any, ...], list[Any]], now: float) -> None:
        for key, (count, total, buckets) in hists.items():
            cell = table.cell(key, now, count)
            cell[1] += count
            cell[2] += total
            cell[3] = list(map(add, cell[3], buckets))  # in C: a third of a Python loop's time

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        for t in self.tables.values():
            t.expire(now)

    def series_counts(self) -> dict[str, int]:
        return {name: len(t) for name, t in self.tables.items()}

    def snapshot(self) -> DesignSnapshot:
        now = time.monotonic()
        t = self.tables
        with self._lock:
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)
            counters = {name: {k: c[1] for k, c in t[name].series.items()} for name in COUNTERS}
            histograms = {
                name: {k: (list(c[3]), c[1], c[2]) for k, c in t[name].series.items()} for name in HISTOGRAMS
            }
        buckets = {
            "api_request_body_size_bytes": self._sizes,
            "api_response_body_size_bytes": self._sizes,
            "api_region_request_duration_seconds": self._latency,
        }
        return DesignSnapshot(counters, histograms, buckets)
