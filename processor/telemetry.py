"""The processor's own health counters: what came in, what was refused, what looked wrong.

Receiver threads and the worker update these; the Prometheus collector reads
them at scrape time.  Receiver-side updates take a lock (once per OTLP request,
never per span); worker-side updates come from the single worker thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

__all__ = ["PipelineStats", "DATA_QUALITY_CHECKS", "REJECT_REASONS", "ERROR_LOG_INTERVAL"]

log = logging.getLogger("apiusage.processor")

# At most one processing-error log line per interval: a poison span repeated in every
# request must not flood the log (the counter still counts every span).
ERROR_LOG_INTERVAL = 60.0

DATA_QUALITY_CHECKS = (
    "missing_route",
    "missing_consumer",
    "missing_status_code",
    "end_before_start",
    "timestamp_future",
    "timestamp_past",
    "unknown_schema_version",
    "beyond_retention",
    "implausible_sampling_weight",
)
REJECT_REASONS = ("invalid_span", "queue_full", "shutting_down", "unauthorized_service")
EXPORT_OUTCOMES = (
    "success",
    "partial",
    "invalid",
    "too_large",
    "unsupported",
    "queue_full",
    "shutting_down",
    # Metrics and logs requests: handed to exporters.otlp, or answered without one; and refused
    # for a resource of another service than the token's.
    "metrics_forwarded",
    "metrics_not_forwarded",
    "logs_forwarded",
    "logs_not_forwarded",
    "unauthorized_service",
)


class PipelineStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans_received: Counter[str] = Counter()
        self.spans_rejected: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        self.export_requests: Counter[tuple[str, str]] = Counter()
        self.spans_ignored: Counter[str] = Counter({"not_server": 0, "not_http": 0})
        self.data_quality_issues: Counter[str] = Counter({c: 0 for c in DATA_QUALITY_CHECKS})
        self.label_overflow: Counter[tuple[str, str]] = Counter()
        self.spans_processed = 0
        self.processing_errors = 0
        self.requests_derived = 0.0
        self._error_logged_at: float | None = None
        self._errors_unlogged = 0

    def request(
        self, transport: str, outcome: str, received: int = 0, rejected: int = 0, reason: str = ""
    ) -> None:
        """One OTLP export request answered (receiver threads)."""
        with self._lock:
            self.export_requests[transport, outcome] += 1
            if received:
                self.spans_received[transport] += received
            if rejected:
                self.spans_rejected[reason] += rejected

    def ignored(self, not_server: int, not_http: int) -> None:
        self.spans_ignored["not_server"] += not_server
        self.spans_ignored["not_http"] += not_http

    def data_quality(self, **counts: int) -> None:
        for check, n in counts.items():
            if n:
                self.data_quality_issues[check] += n

    def processing_error(self, n: int, where: str, exc: BaseException) -> None:
        """Count `n` spans lost to an internal error (worker thread); log with rate limiting."""
        self.processing_errors += n
        now = time.monotonic()
        last = self._error_logged_at
        if last is not None and now - last < ERROR_LOG_INTERVAL:
            self._errors_unlogged += n
            return
        more = self._errors_unlogged
        self._error_logged_at, self._errors_unlogged = now, 0
        log.error(
            "internal error %s; %d span(s) lost (apiusage_processing_errors_total)%s",
            where,
            n,
            f", and {more} more since the last such message" if more else "",
            exc_info=exc,
        )

    def overflow(self, metric: str, label: str, n: float) -> None:
        self.label_overflow[metric, label] += n

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {
                "spans_received": dict(self.spans_received),
                "spans_rejected": dict(self.spans_rejected),
                "export_requests": dict(self.export_requests),
                "spans_ignored": dict(self.spans_ignored),
                "data_quality_issues": dict(self.data_quality_issues),
                "label_overflow": dict(self.label_overflow),
            }
