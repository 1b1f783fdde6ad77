"""The api_feedback_total family, from derive/feedback_metrics.py's series, at scrape time."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, Metric

from ..derive.feedback_metrics import FEEDBACK_LABELS, FeedbackMetrics

__all__ = ["FeedbackCollector", "HELP"]

HELP = "Developer feedback events (OTLP log records named apiusage.feedback), per score 1-5."


class FeedbackCollector:
    def __init__(self, metrics: FeedbackMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        family = CounterMetricFamily("api_feedback", HELP, labels=list(FEEDBACK_LABELS))
        for key, value in sorted(self._metrics.snapshot().items()):
            family.add_metric(list(key), value)
        yield family
