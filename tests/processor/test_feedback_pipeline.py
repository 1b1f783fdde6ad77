"""The worker hands feedback batches to the sinks that define consume_feedback, failures isolated
per event as for requests, and counts refused scores with the other data-quality checks."""

from __future__ import annotations

from collections.abc import Sequence

from apiusage.processor.config import LimitsConfig, UsageConfig
from apiusage.processor.derive.feedback import Feedback
from apiusage.processor.derive.feedback_metrics import FeedbackMetrics
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import Deriver
from apiusage.processor.pipeline import SpanQueue, Worker
from apiusage.processor.telemetry import PipelineStats

from tests.support.polling import wait_until

T = 1_700_000_000_000_000_000
EVENTS = [
    Feedback("orders-api", "", "docs", "5", "c-1", T),
    Feedback("orders-api", "/v1/orders", "poison", "1", None, T),
    Feedback("orders-api", "", "docs", "5", None, T),
]


class Picky:
    """A feedback sink that cannot take the category "poison"."""

    def __init__(self) -> None:
        self.seen: list[Feedback] = []

    def consume_feedback(self, events: Sequence[Feedback]) -> None:
        if any(e.category == "poison" for e in events):
            raise RuntimeError("poison")
        self.seen.extend(events)


def test_feedback_reaches_feedback_sinks_only_and_a_failing_event_costs_only_itself() -> None:
    stats = PipelineStats()
    queue = SpanQueue(100)
    metrics = FeedbackMetrics(LimitsConfig(), stats)
    requests = RequestMetrics(LimitsConfig(), (0.1,), stats)  # consume() only: gets no feedback
    picky = Picky()
    worker = Worker(queue, Deriver(UsageConfig(), stats), [requests, picky, metrics], stats)
    worker.start()
    try:
        assert queue.reserve(3)
        queue.put_feedback(EVENTS, refused=2)
        wait_until(lambda: queue.depth == 0, 5, "the worker took the batch")
        wait_until(lambda: stats.processing_errors == 1, 5, "the poison event was counted")
    finally:
        worker.stop(5)
    assert picky.seen == [EVENTS[0], EVENTS[2]]
    assert metrics.snapshot() == {
        ("orders-api", "", "docs", "5"): 2,
        ("orders-api", "/v1/orders", "poison", "1"): 1,
    }
    assert stats.data_quality_issues["invalid_feedback_score"] == 2
    assert stats.spans_processed == 0
    assert requests.series_counts()["api_requests"] == 0


def test_room_reserved_for_feedback_counts_against_the_spans_room() -> None:
    queue = SpanQueue(10)
    assert queue.reserve(8)
    assert queue.depth == 8
    assert not queue.offer([("orders-api",)], [object()] * 3)  # spans see the room taken
    assert not queue.reserve(3)
    assert queue.reserve(0)  # refused scores alone take no room
    queue.release(8)
    assert queue.depth == 0
    assert queue.reserve(20)  # larger than the queue: still goes into an empty one, like offer()
    queue.close()
    assert not queue.reserve(0)
