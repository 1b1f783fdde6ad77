"""Request-level usage metrics: counters and latency histograms aggregated from ApiRequests.

A sink of the derivation stage.  It aggregates each batch into plain dicts
first (one entry per distinct label set in the batch, usually a handful), then
merges those into the series tables under a lock, so the per-span work is a
dict update and a bisect, and scrapes never see a half-merged batch.

The release families (issue 16) ride on the same keys: a request's service.version is one more
element of its counter and histogram keys, so they cost a cell per distinct key in the merge.
Versions arrive for ever, so per service only the newest `limits.max_releases` versions by first
sight keep their own series: when a newer one arrives, the oldest one's series leave the
exposition and its later traffic folds into `version="__other__"`, counted in
apiusage_label_overflow_total{label="version"} (docs/releases.md).
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
from .series import OVERFLOW_VALUE, SeriesTable, sanitize_label_value

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
    # Issue 16: per release (the resource's service.version), only requests that carry one.
    "api_release_requests": ("service", "version", "method", "route", "status_class"),
    "api_release_request_duration_seconds": ("service", "version"),
}

# The counters' key: the leading COUNTER_FIELDS of each request. `r[:n]`, not `r[slice(n)]`: mypy
# types a NamedTuple indexed by a slice object as one of its fields, and a colon slice as a tuple.
_COUNTER_LEN = len(COUNTER_FIELDS)
_STATUS_CLASS = {str(c): f"{c // 100}xx" for c in range(100, 600)}
_MAX_COMBOS = 100_000
_MAX_RELEASE_SERVICES = 10_000  # raw service values with a version window (hostile input is unbounded)
_MAX_RETIRED = 100_000  # versions remembered as pushed out, over every service


@dataclass
class Snapshot:
    """A consistent copy of every series, taken under the lock for one scrape."""

    counters: dict[str, dict[tuple[Any, ...], float]]
    histograms: dict[tuple[Any, ...], tuple[list[float], float, float, list[Any]]]
    buckets: tuple[float, ...]
    series_counts: dict[str, int]
    # api_release_request_duration_seconds: (service, version) → (buckets, count, sum)
    release_histograms: dict[tuple[Any, ...], tuple[list[float], float, float]] | None = None


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
        self._stats = stats
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
        self.release_requests = table("api_release_requests", counter_cell)
        release_hist_cell = lambda: [0.0, 0.0, 0.0, [0.0] * n]  # noqa: E731  no exemplars
        self.release_durations = table("api_release_request_duration_seconds", release_hist_cell)
        self._max_releases = limits.max_releases
        self._max_length = limits.max_label_length
        # service → its live versions, oldest first sight first; and the versions pushed out of
        # the window (their traffic folds into __other__ rather than pushing out a newer one).
        self._versions: dict[str, dict[str, None]] = {}
        self._retired: dict[str, set[str]] = {}
        self._retired_count = 0
        self.releases_retired = 0  # versions whose series left the exposition for a newer one
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
            sv = r.service_version
            if sv is not None:
                key += (sv,)
            w = r.weight
            counts[key] = counts.get(key, 0.0) + w
            d = r.duration
            if d < 0:
                continue  # end before start: counted, but no latency to observe
            hkey = (r.service, r.method, r.route, r.plan_tier, sv)
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
                service, method, route, code, plan, deprecated, cname, cver = ckey[:_COUNTER_LEN]
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
                if len(ckey) > _COUNTER_LEN:
                    version = self._version(service, ckey[_COUNTER_LEN], w)
                    rkey = (service, version, method, route, status_class)
                    parts.append(self.release_requests.cell_folds(rkey, now, w))
                    folded = version == OVERFLOW_VALUE  # each update must count in the overflow again
                for c, f in parts:
                    c[1] += w
                    folded = folded or f
                if not folded:
                    if len(combos) >= _MAX_COMBOS:
                        combos.clear()
                    combos[ckey] = tuple(c for c, _ in parts)
            releases: dict[tuple[Any, ...], list[Any]] = {}
            for hkey, (count, total, buckets, examples) in hists.items():
                sv = hkey[4]
                if sv is not None:
                    rh = releases.get((hkey[0], sv))
                    if rh is None:
                        releases[hkey[0], sv] = [count, total, list(buckets)]
                    else:
                        rh[0] += count
                        rh[1] += total
                        rb = rh[2]
                        for i in range(n):
                            rb[i] += buckets[i]
                cell = self.durations.cell(hkey[:4], now, count)
                cell[1] += count
                cell[2] += total
                cb, ce = cell[3], cell[4]
                for i in range(n):
                    if buckets[i]:
                        cb[i] += buckets[i]
                        if examples[i] is not None:
                            ce[i] = examples[i]
            for (service, sv), (count, total, buckets) in releases.items():
                version = self._version(service, sv, 0.0)
                cell = self.release_durations.cell((service, version), now, count)
                cell[1] += count
                cell[2] += total
                cb = cell[3]
                for i in range(n):
                    cb[i] += buckets[i]
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)

    def _version(self, service: str, version: str, weight: float) -> str:
        """The version label of a request (lock held): the version while it is one of its service's
        newest `max_releases` by first sight, else __other__ (counted as an overflow)."""
        live = self._versions.get(service)
        if live is None:
            if len(self._versions) >= _MAX_RELEASE_SERVICES:
                self._versions.clear()
                self._retired.clear()
                self._retired_count = 0
            live = self._versions[service] = {}
        if version in live:
            return version
        retired = self._retired.get(service)
        if retired is not None and version in retired:
            self._stats_overflow(weight)
            return OVERFLOW_VALUE
        live[version] = None
        if len(live) > self._max_releases:
            oldest = next(iter(live))
            del live[oldest]
            if self._retired_count >= _MAX_RETIRED:
                # Bounded: a forgotten old version may come back, for one window, if it is called.
                self._retired.clear()
                self._retired_count = 0
            self._retired.setdefault(service, set()).add(oldest)
            self._retired_count += 1
            self._retire(service, oldest)
        return version

    def _stats_overflow(self, weight: float) -> None:
        if weight:
            self._stats.overflow("api_release_requests", "version", weight)

    def _retire(self, service: str, version: str) -> None:
        """Drop the series of a release pushed out of its service's window."""
        s = sanitize_label_value(service, self._max_length)
        v = sanitize_label_value(version, self._max_length)
        for t in (self.release_requests, self.release_durations):
            t.discard(lambda key: key[0] == s and key[1] == v)
        self.releases_retired += 1
        self._combos.clear()  # it may point at the dropped cells

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
            self.release_requests,
            self.release_durations,
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
                    self.release_requests,
                )
            }
            histograms = {k: (list(c[3]), c[1], c[2], list(c[4])) for k, c in self.durations.series.items()}
            releases = {k: (list(c[3]), c[1], c[2]) for k, c in self.release_durations.series.items()}
            counts = {t.metric: len(t) for t in self._tables()}
        return Snapshot(counters, histograms, self._bounds, counts, releases)
