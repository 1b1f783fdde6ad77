"""api_feedback_total: feedback events counted per service, route, category and score.

A sink of the worker (pipeline.py hands it each batch of Feedback through `consume_feedback`).
Its series are bounded like the request families': each label by `processors.limits`
(category and score have small defaults), idle series expire after `limits.series_ttl`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

from ..config import LimitsConfig
from ..telemetry import PipelineStats
from .feedback import Feedback
from .series import SeriesTable

__all__ = ["FEEDBACK_LABELS", "FeedbackMetrics"]

FEEDBACK_LABELS = ("service", "route", "category", "score")


class FeedbackMetrics:
    def __init__(
        self, limits: LimitsConfig, stats: PipelineStats, sweep_interval: float | None = None
    ) -> None:
        self._lock = threading.Lock()
        ttl = float(limits.series_ttl)
        self._sweep_interval = sweep_interval or max(1.0, min(60.0, ttl / 10))
        self._last_sweep = time.monotonic()
        self.feedback = SeriesTable.limited(
            "api_feedback",
            FEEDBACK_LABELS,
            limits,
            lambda: [0.0, 0.0],
            stats,  # [last_update, value]
        )

    def consume_feedback(self, events: Sequence[Feedback]) -> None:
        """Count one batch (worker thread); aggregated first so a scrape never sees half of it."""
        counts: dict[tuple[str, str, str, str], int] = {}
        for e in events:
            key = (e.service, e.route, e.category, e.score)
            counts[key] = counts.get(key, 0) + 1
        now = time.monotonic()
        with self._lock:
            for key, n in counts.items():
                self.feedback.cell(key, now, n)[1] += n
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._last_sweep = now
        self.feedback.expire(now)

    def snapshot(self) -> dict[tuple[str, ...], float]:
        """Every series' value, consistent, for one scrape."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_sweep >= self._sweep_interval:
                self._sweep(now)
            return {key: cell[1] for key, cell in self.feedback.series.items()}
