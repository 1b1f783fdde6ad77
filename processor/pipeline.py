"""The hand-off between receivers and derivation: a bounded queue and one worker thread.

Receiver threads only decode and `offer()`; a full queue refuses the batch at
once so the receiver can answer with a retryable status instead of blocking a
client.  The worker derives ApiRequests and hands them to every sink; an internal
error costs the span(s) it concerns, never their neighbours.  Feedback events (from OTLP logs)
share the queue and its room, one event for one span, and reach the sinks that define
`consume_feedback`; feature-flag evaluations (from OTLP logs too) likewise, to the sinks that
define `consume_flag_evaluations`.  On shutdown the queue closes to new batches and the worker drains what it
holds.  Sinks that hold data between batches (`PendingSink`: the experiment join) are expired by
the worker at least every `expire_interval`, with or without traffic, and told to count what they
still hold once the drain is done.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from . import selfmetrics
from .derive.feedback import Feedback
from .derive.flags import FlagEvaluation
from .derive.requests import ApiRequest, Deriver
from .telemetry import PipelineStats

__all__ = [
    "FeedbackBatch",
    "FeedbackSink",
    "FlagEvaluationBatch",
    "FlagEvaluationSink",
    "PendingSink",
    "Sink",
    "SpanQueue",
    "Worker",
    "LATENCY_BUCKETS",
]

log = logging.getLogger("apiusage.processor")

LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


@runtime_checkable
class Sink(Protocol):
    def consume(self, requests: Sequence[ApiRequest]) -> None: ...


@runtime_checkable
class FeedbackSink(Protocol):
    def consume_feedback(self, events: Sequence[Feedback]) -> None: ...


class FeedbackBatch(NamedTuple):
    """The feedback of one logs request, in the queue: its events, and how many feedback records
    it held whose score was refused (counted by the worker, with the other data-quality checks)."""

    events: Sequence[Feedback]
    refused: int = 0


@runtime_checkable
class FlagEvaluationSink(Protocol):
    def consume_flag_evaluations(self, evaluations: Sequence[FlagEvaluation]) -> None: ...


class FlagEvaluationBatch(NamedTuple):
    """The feature-flag evaluations of one logs request, in the queue, and how many evaluation
    records it held without a key or variant (counted by the worker as invalid_flag_evaluation)."""

    evaluations: Sequence[FlagEvaluation]
    refused: int = 0


@runtime_checkable
class PendingSink(Protocol):
    """A sink that holds data between batches (the experiment join). The worker, on its thread,
    expires it by the clock with or without traffic, and drops (counting) what is left once the
    queue has drained at shutdown."""

    def expire_pending(self) -> None: ...

    def drop_pending(self) -> None: ...


#: Seconds between two expire_pending() calls of the worker, busy or idle.
EXPIRE_INTERVAL = 1.0


class SpanQueue:
    """FIFO of scanned OTLP requests, bounded by the number of spans it holds.

    An item is (resources, spans, enqueued), or (None, FeedbackBatch, enqueued) for feedback,
    whose events take the room of as many spans, or (None, FlagEvaluationBatch, enqueued) likewise."""

    def __init__(self, max_spans: int) -> None:
        self.capacity = max_spans
        self._items: deque[tuple[Any, Any, float]] = deque()
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

    def reserve(self, n: int) -> bool:
        """Take the room of `n` feedback events or flag evaluations unless full (offer's rule), for
        put_feedback and put_flag_evaluations."""
        with self._cond:
            if self._closed or (self._spans and self._spans + n > self.capacity):
                return False
            self._spans += n
        return True

    def release(self, n: int) -> None:
        """Give back room reserved for events that will not be put."""
        self.done(n)

    def put_feedback(self, events: Sequence[Feedback], refused: int = 0) -> None:
        """Enqueue feedback whose room reserve() took. Even once closed: only the receivers put,
        and they stop before the worker drains."""
        with self._cond:
            self._items.append((None, FeedbackBatch(events, refused), time.monotonic()))
            self._cond.notify()

    def put_flag_evaluations(self, evaluations: Sequence[FlagEvaluation], refused: int = 0) -> None:
        """Enqueue flag evaluations whose room reserve() took (as put_feedback)."""
        with self._cond:
            self._items.append((None, FlagEvaluationBatch(evaluations, refused), time.monotonic()))
            self._cond.notify()

    def take(self, timeout: float) -> tuple[Any, Any, float] | None:
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
    """Runs derivation and the sinks for every queued batch, on one thread; a component
    (component.py) whose shutdown drains the queue for at most `drain_timeout`."""

    name = "worker"
    families = selfmetrics.owned_by("worker")

    def __init__(
        self,
        queue: SpanQueue,
        deriver: Deriver,
        sinks: Sequence[Sink | FeedbackSink | FlagEvaluationSink],
        stats: PipelineStats,
        drain_timeout: float = 10.0,
        expire_interval: float = EXPIRE_INTERVAL,
    ) -> None:
        self.drain_timeout = drain_timeout  # processors.queue.shutdown_timeout
        self.expire_interval = expire_interval
        self._queue = queue
        self._deriver = deriver
        # A sink takes requests (consume), feedback (consume_feedback), flag evaluations
        # (consume_flag_evaluations), or any of them.
        self._sinks = [s for s in sinks if isinstance(s, Sink)]
        self._feedback_sinks = [s for s in sinks if isinstance(s, FeedbackSink)]
        self._flag_sinks = [s for s in sinks if isinstance(s, FlagEvaluationSink)]
        self._pending_sinks = [s for s in sinks if isinstance(s, PendingSink)]
        self._stats = stats
        self._thread = threading.Thread(target=self._run, name="apiusage-worker", daemon=True)
        self.latency_buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.latency_count = 0

    def add_sink(self, sink: Sink | FeedbackSink | FlagEvaluationSink) -> None:
        """Hand the batches to one more sink too; before start() (the lists are read unlocked)."""
        if self._thread.ident is not None:
            raise RuntimeError("Worker.add_sink after start()")
        self._sinks.extend([sink] if isinstance(sink, Sink) else [])
        self._feedback_sinks.extend([sink] if isinstance(sink, FeedbackSink) else [])
        self._flag_sinks.extend([sink] if isinstance(sink, FlagEvaluationSink) else [])
        self._pending_sinks.extend([sink] if isinstance(sink, PendingSink) else [])

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        queue = self._queue
        expired_at = time.monotonic()
        while True:
            item = queue.take(min(0.2, self.expire_interval))
            if self._pending_sinks and time.monotonic() - expired_at >= self.expire_interval:
                self._pending("expire_pending")
                expired_at = time.monotonic()
            if item is None:
                if queue.closed and queue.empty():
                    self._pending("drop_pending")
                    return
                continue
            resources, spans, enqueued = item
            if resources is None:  # a FeedbackBatch or a FlagEvaluationBatch
                flags = isinstance(spans, FlagEvaluationBatch)
                n = len(spans.evaluations if flags else spans.events)
                try:
                    if flags:
                        self._process_flag_evaluations(spans)
                    else:
                        self._process_feedback(spans)
                except Exception as exc:  # noqa: BLE001 - last resort: the worker must keep running
                    where = "processing flag evaluations" if flags else "processing feedback"
                    self._stats.processing_error(n, where, exc)
                finally:
                    queue.done(n)
                self._observe(time.monotonic() - enqueued, 0)
                continue
            try:
                self._process(resources, spans)
            except Exception as exc:  # noqa: BLE001 - last resort: the worker must keep running
                self._stats.processing_error(len(spans), "processing a batch", exc)
            finally:
                queue.done(len(spans))
            self._observe(time.monotonic() - enqueued, len(spans))

    def _pending(self, method: str) -> None:
        """expire_pending or drop_pending of every PendingSink, failures isolated and logged."""
        for sink in self._pending_sinks:
            try:
                getattr(sink, method)()
            except Exception as exc:  # noqa: BLE001 - the worker must keep running
                self._stats.processing_error(0, f"in {type(sink).__name__}.{method}", exc)

    def _process(self, resources: list, spans: list) -> None:
        """Derive (which isolates failures per span) and hand the batch to each sink in turn."""
        requests = self._deriver.derive(resources, spans)
        for sink in self._sinks:
            try:
                sink.consume(requests)
            except Exception:  # noqa: BLE001
                # Find the request(s) the sink cannot take, one at a time, so only they are lost.
                # RequestMetrics aggregates a batch before merging it, so its failures change
                # nothing and the retry is exact; a sink that applies request by request may
                # see the requests before the failing one twice (a bug path, counted and logged).
                self._retry_one_by_one(sink.consume, requests, f"in {type(sink).__name__}")

    def _process_feedback(self, batch: FeedbackBatch) -> None:
        """Count the refused records and hand the events to each feedback sink, failures isolated
        as in _process."""
        if batch.refused:
            self._stats.data_quality(invalid_feedback_score=batch.refused)
        events = batch.events
        if not events:
            return
        for sink in self._feedback_sinks:
            try:
                sink.consume_feedback(events)
            except Exception:  # noqa: BLE001
                self._retry_one_by_one(sink.consume_feedback, events, f"in {type(sink).__name__} (feedback)")

    def _process_flag_evaluations(self, batch: FlagEvaluationBatch) -> None:
        """Count the refused records and hand the evaluations to each flag sink, failures isolated
        as in _process."""
        if batch.refused:
            self._stats.data_quality(invalid_flag_evaluation=batch.refused)
        evaluations = batch.evaluations
        if not evaluations:
            return
        for sink in self._flag_sinks:
            try:
                sink.consume_flag_evaluations(evaluations)
            except Exception:  # noqa: BLE001
                self._retry_one_by_one(
                    sink.consume_flag_evaluations, evaluations, f"in {type(sink).__name__} (flag evaluations)"
                )

    def _retry_one_by_one(
        self, consume: Callable[[Sequence[Any]], None], items: Sequence[Any], where: str
    ) -> None:
        lost = 0
        error: Exception | None = None
        for item in items:
            try:
                consume((item,))
            except Exception as exc:  # noqa: BLE001
                lost += 1
                error = exc
        if error is not None:
            self._stats.processing_error(lost, where, error)

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
        if self._thread.ident is None:  # never started: nothing was accepted
            return self._queue.empty()
        self._thread.join(timeout)
        # Still running but holding nothing (it wakes every 0.2 s to notice the close): drained.
        return not self._thread.is_alive() or self._queue.depth == 0

    def shutdown(self, deadline: float) -> bool:
        """Drain within drain_timeout and `deadline`; False (logged) when spans were left."""
        drained = self.stop(max(0.0, min(self.drain_timeout, deadline - time.monotonic())))
        if not drained:
            log.error("shutdown timeout: %d spans still queued were not processed", self._queue.depth)
        return drained
