"""Experiment exposures, deduplicated in memory between flushes: the state's exposure sink.

The worker calls `consume_exposures()` with the `Exposure` records of a batch (derive/flags.py);
per exposure it updates one row per (service, experiment, consumer), one per (service,
experiment, variant, day) and one per latency bucket of that day, and nothing else. The flush
drains them with the consumer activity (`ConsumerActivity.drain()` appends them at the end of
the batch) and writes them in the same transaction; a failed write `restore()`s them.

The variant a consumer is first seen in is the one it stays in: within a flush, the variant of
its earliest exposure; across flushes and replicas, the one stored first (the upsert never
changes it). A later exposure in another variant sets `other_variant` once: contamination.
The daily tallies count each request under the variant it was served, consumer or not, twice:
weighted by the sampling adjusted count (the estimated traffic) and once per span (the spans
received: the sample sizes the statistics need); a request whose span ended before it began
(duration -1) is counted but has no latency, as in api_request_duration_seconds.

The backlog is bounded like ConsumerActivity's: past twice `max_pending` rows or
`max_pending_bytes` estimated bytes, new rows are dropped and counted in `rows_dropped`, as are
exposures dated too far ahead; `dropped(future, full)` hears of each (ConsumerActivity adds them
to `apiusage_state_rows_dropped_total`).
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
from collections.abc import Callable, Sequence

from ..derive.flags import Exposure
from ..telemetry import PipelineStats
from .schema import EXPERIMENT_LATENCY_BOUNDS
from .store import DAY_MS, ExperimentConsumerRow, ExperimentDayRow, ExperimentLatencyRow

__all__ = ["ExperimentActivity", "ExperimentBatch", "latency_bucket"]

ExperimentBatch = tuple[list[ExperimentConsumerRow], list[ExperimentDayRow], list[ExperimentLatencyRow]]

# As activity._ROW_OVERHEAD: the dict slot, the key tuple, the value list and its numbers.
_ROW_OVERHEAD = 300
_HARD_FACTOR = 2
_EMPTY_STR = sys.getsizeof("")


def _size(key: tuple) -> int:
    return _ROW_OVERHEAD + sum(sys.getsizeof(k) - _EMPTY_STR for k in key if isinstance(k, str))


def latency_bucket(duration: float) -> int:
    """The index into EXPERIMENT_LATENCY_BOUNDS of the first bound >= `duration` (seconds);
    len(bounds) when it is slower than the last."""
    return bisect.bisect_left(EXPERIMENT_LATENCY_BOUNDS, duration)


class ExperimentActivity:
    def __init__(
        self,
        retention_days: int,
        stats: PipelineStats,
        max_pending: int = 1_000_000,
        max_future_skew: float = 300.0,
        max_pending_bytes: int = 256 << 20,
        dropped: Callable[[int, int], None] | None = None,
    ) -> None:
        self._retention_days = retention_days
        self._stats = stats
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._future_ms = int(max_future_skew * 1000)
        self._on_dropped = dropped
        self.rows_dropped = 0
        self._lock = threading.Lock()
        self._bytes = 0
        self._inflight_rows = 0
        self._inflight_bytes = 0
        # (service, experiment, consumer) → [variant, first_seen, last_seen, first_success,
        #                                    other_variant, requests]
        self._consumers: dict[tuple[str, str, str], list] = {}
        # (service, experiment, variant, day) → [requests, errors, client_errors, duration_sum,
        #                                        spans, span_errors, span_client_errors]
        self._days: dict[tuple[str, str, str, int], list] = {}
        # (service, experiment, variant, day, bucket) → [count, spans]
        self._latency: dict[tuple[str, str, str, int, int], list] = {}

    def consume_exposures(self, exposures: Sequence[Exposure]) -> None:
        now_ms = int(time.time() * 1000)
        oldest_day = now_ms // DAY_MS - self._retention_days
        latest = now_ms + self._future_ms
        old = future = full = 0
        bounds = EXPERIMENT_LATENCY_BOUNDS
        with self._lock:
            consumers, days, latency = self._consumers, self._days, self._latency
            hard_rows = self.max_pending * _HARD_FACTOR - self._inflight_rows
            hard_bytes = self.max_pending_bytes * _HARD_FACTOR - self._inflight_bytes

            def full_now() -> bool:  # called for new rows only
                return len(days) + len(consumers) + len(latency) >= hard_rows or self._bytes >= hard_bytes

            for x in exposures:
                at = x.end_time_ns // 1_000_000
                day = at // DAY_MS
                if day < oldest_day:
                    old += 1
                    continue
                if at > latest:
                    future += 1
                    continue
                service, experiment, variant, code, w = x[0], x[1], x[2], x.status_code, x.weight
                first = code[:1]
                duration = x.duration  # -1.0: the span ended before it began, no latency to tally
                timed = duration >= 0
                dkey = (service, experiment, variant, day)
                d = days.get(dkey)
                if d is None:
                    if full_now():
                        full += 1
                    else:
                        server, client = first == "5", first == "4"
                        days[dkey] = [
                            w,
                            w if server else 0.0,
                            w if client else 0.0,
                            duration * w if timed else 0.0,
                            1,
                            1 if server else 0,
                            1 if client else 0,
                        ]
                        self._bytes += _size(dkey)
                else:
                    d[0] += w
                    d[4] += 1
                    if first == "5":
                        d[1] += w
                        d[5] += 1
                    elif first == "4":
                        d[2] += w
                        d[6] += 1
                    if timed:
                        d[3] += duration * w
                if timed:
                    lkey = (service, experiment, variant, day, bisect.bisect_left(bounds, duration))
                    h = latency.get(lkey)
                    if h is None:
                        if full_now():
                            full += 1
                        else:
                            latency[lkey] = [w, 1]
                            self._bytes += _size(lkey)
                    else:
                        h[0] += w
                        h[1] += 1
                consumer = x.consumer_id
                if consumer is None:
                    continue
                ok = first == "2"
                ckey = (service, experiment, consumer)
                c = consumers.get(ckey)
                if c is None:
                    if full_now():
                        full += 1
                        continue
                    consumers[ckey] = [variant, at, at, at if ok else None, None, w]
                    self._bytes += _size(ckey)
                    continue
                _merge_consumer(c, variant, at, at, at if ok else None, None, w)
        if old:
            self._stats.data_quality(beyond_retention=old)
        if future or full:
            self._dropped(future, full)

    def pending(self) -> int:
        """Rows not yet in the store, those being written included."""
        return len(self._consumers) + len(self._days) + len(self._latency) + self._inflight_rows

    def pending_bytes(self) -> int:
        return self._bytes + self._inflight_bytes

    def drain(self) -> ExperimentBatch:
        """Take the rows gathered since the last drain; they count as pending until `written()` or
        `restore()`."""
        with self._lock:
            consumers, self._consumers = self._consumers, {}
            days, self._days = self._days, {}
            latency, self._latency = self._latency, {}
            self._inflight_rows += len(consumers) + len(days) + len(latency)
            self._inflight_bytes += self._bytes
            self._bytes = 0
        return (
            [(s, e, c, *v) for (s, e, c), v in consumers.items()],
            [(*k, *v) for k, v in days.items()],
            [(*k, *v) for k, v in latency.items()],
        )

    def written(self) -> None:
        with self._lock:
            self._inflight_rows = self._inflight_bytes = 0

    def restore(self, batch: ExperimentBatch) -> None:
        """Merge rows that could not be written back in, so the next flush retries them."""
        consumers, days, latency = batch
        full = 0
        with self._lock:
            self._inflight_rows = self._inflight_bytes = 0
            hard_rows = self.max_pending * _HARD_FACTOR
            hard_bytes = self.max_pending_bytes * _HARD_FACTOR

            def room() -> bool:
                rows = len(self._consumers) + len(self._days) + len(self._latency)
                return rows < hard_rows and self._bytes < hard_bytes

            for s, e, c, variant, first, last, success, other, requests in consumers:
                cur = self._consumers.get((s, e, c))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._consumers[s, e, c] = [variant, first, last, success, other, requests]
                    self._bytes += _size((s, e, c))
                else:
                    _merge_consumer(cur, variant, first, last, success, other, requests)
            for s, e, v, day, *tallies in days:
                cur = self._days.get((s, e, v, day))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._days[s, e, v, day] = list(tallies)
                    self._bytes += _size((s, e, v, day))
                else:
                    for i, value in enumerate(tallies):
                        cur[i] += value
            for s, e, v, day, bucket, count, spans in latency:
                cur = self._latency.get((s, e, v, day, bucket))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._latency[s, e, v, day, bucket] = [count, spans]
                    self._bytes += _size((s, e, v, day, bucket))
                else:
                    cur[0] += count
                    cur[1] += spans
        if full:
            self._dropped(0, full)

    def _dropped(self, future: int, full: int) -> None:
        self.rows_dropped += future + full
        if self._on_dropped is not None:
            self._on_dropped(future, full)


def _merge_consumer(
    c: list, variant: str, first: int, last: int, success: int | None, other: str | None, requests: float
) -> None:
    """Fold (variant, first_seen, last_seen, first_success, other_variant, requests) of the same
    consumer into `c`: the earliest variant stays, the first different one is the other."""
    if first < c[1]:
        if variant != c[0]:
            # An earlier exposure in another variant (late export): it is the assignment, and the
            # variant held so far, seen after it, is the first other one.
            c[4] = c[0]
            c[0] = variant
        elif c[4] is None:
            c[4] = other
        c[1] = first
    elif variant != c[0]:
        if c[4] is None:
            c[4] = variant
    elif c[4] is None:
        c[4] = other
    if last > c[2]:
        c[2] = last
    if success is not None and (c[3] is None or success < c[3]):
        c[3] = success
    c[5] += requests
