"""The hand-off between receivers and derivation: a bounded queue and one worker thread.

Receiver threads only decode and `offer()`; a full queue refuses the batch at
once so the receiver can answer with a retryable status instead of blocking a
client.  The worker derives ApiRequests and hands them to every sink.  On
shutdown the queue closes to new batches and the worker drains what it holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Protocol

from .derive.requests import ApiRequest, Deriver
from .telemetry import PipelineStats

__all__ = ["Sink", "SpanQueue", "Worker", "LATENCY_BUCKETS"]

log = logging.getLogger("apiusage.processor")

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


class Sink(Protocol):
    def consume(self, requests: Sequence[ApiRequest]) -> None: ...


class SpanQueue:
    """FIFO of scanned OTLP requests, bounded by the number of spans it holds."""

    def __init__(self, max_spans: int) -> None:
        self.capacity = max_spans
        self._items: deque[tuple[list, list, float]] = deque()
        self._spans = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def depth(self) -> int:
        return self._spans

    @property
    def closed(self) -> bool:
        return self._closed

    def offer(self, resources: list, spans: list) -> bool:
        """Enqueue unless full; a batch larger than the whole queue still goes into an empty one."""
        n = len(spans)
        with self._cond:
            if self._closed:
                return False
            if self._spans and self._spans + n > self.capacity:
                return False
            self._items.append((resources, spans, time.monotonic()))
            self._spans += n
            self._cond.notify()
        return True

    def take(self, timeout: float) -> tuple[list, list, float] | None:
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
                if not self._items:
                    return None
            item = self._items.popleft()
        return item

    def done(self, n: int) -> None:
        """Release the room of a processed batch (after processing, so depth stays honest)."""
        with self._cond:
            self._spans -= n

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def empty(self) -> bool:
        return not self._items


class Worker:
    """Runs derivation and the sinks for every queued batch, on one thread."""

    def __init__(self, queue: SpanQueue, deriver: Deriver, sinks: Sequence[Sink],
                 stats: PipelineStats) -> None:
        self._queue = queue
        self._deriver = deriver
        self._sinks = list(sinks)
        self._stats = stats
        self._thread = threading.Thread(target=self._run, name="apiusage-worker", daemon=True)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        queue = self._queue
        while True:
            item = queue.take(0.2)
            if item is None:
                if queue.closed and queue.empty():
                    return
                continue
            resources, spans, enqueued = item
            try:
                requests = self._deriver.derive(resources, spans)
                for sink in self._sinks:
                    sink.consume(requests)
            except Exception:  # a bug must not stop the pipeline; the batch is lost and logged
                log.exception("failed to process a batch of %d spans", len(spans))
                self._stats.processing_errors += len(spans)
            finally:
                queue.done(len(spans))
            self._observe(time.monotonic() - enqueued, len(spans))

    def _observe(self, seconds: float, spans: int) -> None:
        i = 0
        while i < len(LATENCY_BUCKETS) and seconds > LATENCY_BUCKETS[i]:
            i += 1
        self.latency_buckets[i] += 1
        self.latency_sum += seconds
        self.latency_count += 1
        self._stats.spans_processed += spans

    def stop(self, timeout: float) -> bool:
        """Close the queue, drain it, and wait; False if the drain did not finish in time."""
        self._queue.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()
