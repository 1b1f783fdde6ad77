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
from enum import Enum

__all__ = [
    "DATA_QUALITY_CHECKS",
    "ERROR_LOG_INTERVAL",
    "EXPORT_OUTCOMES",
    "REJECT_REASONS",
    "DataQualityCheck",
    "ExportOutcome",
    "FlagOutcome",
    "IgnoreReason",
    "PipelineStats",
    "RejectReason",
]

log = logging.getLogger("apiusage.processor")

# At most one processing-error log line per interval: a poison span repeated in every
# request must not flood the log (the counter still counts every span).
ERROR_LOG_INTERVAL = 60.0


class _Names(str, Enum):
    """A closed set of label values: members compare and hash as their value, and print as it."""

    __str__ = str.__str__

    # A method, not `__format__ = str.__format__`: typeshed types str's and Enum's differently.
    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


class ExportOutcome(_Names):
    """`outcome` of apiusage_export_requests_total: every answer a receiver gives (docs/metrics.md)."""

    SUCCESS = "success"
    PARTIAL = "partial"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    UNSUPPORTED = "unsupported"
    QUEUE_FULL = "queue_full"
    STATE_BACKLOG = "state_backlog"
    MEMORY_LIMIT = "memory_limit"
    UNAUTHENTICATED = "unauthenticated"
    SHUTTING_DOWN = "shutting_down"
    NOT_FOUND = "not_found"
    RECEIVE_TIMEOUT = "receive_timeout"  # gRPC
    EVICTED = "evicted"  # gRPC
    CANCELLED = "cancelled"  # gRPC
    LENGTH_REQUIRED = "length_required"  # HTTP
    METHOD = "method"  # HTTP
    MALFORMED = "malformed"  # HTTP, refused by the server itself (_httpserver.py)
    TIMEOUT = "timeout"  # HTTP, refused by the server itself
    CONNECTION_LIMIT = "connection_limit"  # HTTP, refused by the server itself
    # Metrics and logs requests: handed to exporters.otlp, or answered without one; and refused
    # for a resource of another service than the token's.
    METRICS_FORWARDED = "metrics_forwarded"
    METRICS_NOT_FORWARDED = "metrics_not_forwarded"
    LOGS_FORWARDED = "logs_forwarded"
    LOGS_NOT_FORWARDED = "logs_not_forwarded"
    UNAUTHORIZED_SERVICE = "unauthorized_service"

    @property
    def retryable(self) -> bool:
        """Whether the client is told to retry later (HTTP 503 + Retry-After, gRPC UNAVAILABLE)."""
        return self in _RETRYABLE


_RETRYABLE = frozenset(
    (
        ExportOutcome.QUEUE_FULL,
        ExportOutcome.SHUTTING_DOWN,
        ExportOutcome.MEMORY_LIMIT,
        ExportOutcome.STATE_BACKLOG,
        ExportOutcome.EVICTED,
    )
)


class RejectReason(_Names):
    """`reason` of apiusage_spans_rejected_total."""

    INVALID_SPAN = "invalid_span"
    QUEUE_FULL = "queue_full"
    SHUTTING_DOWN = "shutting_down"
    UNAUTHORIZED_SERVICE = "unauthorized_service"


class IgnoreReason(_Names):
    """`reason` of apiusage_spans_ignored_total."""

    NOT_SERVER = "not_server"
    NOT_HTTP = "not_http"


class DataQualityCheck(_Names):
    """`check` of apiusage_data_quality_issues_total (the keywords of PipelineStats.data_quality)."""

    MISSING_ROUTE = "missing_route"
    MISSING_CONSUMER = "missing_consumer"
    MISSING_STATUS_CODE = "missing_status_code"
    END_BEFORE_START = "end_before_start"
    TIMESTAMP_FUTURE = "timestamp_future"
    TIMESTAMP_PAST = "timestamp_past"
    UNKNOWN_SCHEMA_VERSION = "unknown_schema_version"
    BEYOND_RETENTION = "beyond_retention"
    IMPLAUSIBLE_SAMPLING_WEIGHT = "implausible_sampling_weight"
    # Schema version 2 (API design) attributes
    INVALID_BODY_SIZE = "invalid_body_size"
    INVALID_NAME = "invalid_name"
    NAMES_TRUNCATED = "names_truncated"
    VALIDATION_MISMATCH = "validation_mismatch"
    INVALID_CLIENT_REGION = "invalid_client_region"
    # A feedback log record refused: its score is not an integer 1..5 (derive/feedback.py).
    INVALID_FEEDBACK_SCORE = "invalid_feedback_score"
    # A feature-flag evaluation without a key or a variant, refused: a span event (derive/requests.py)
    # or a log record (derive/flags.py).
    INVALID_FLAG_EVALUATION = "invalid_flag_evaluation"
    # A parameter name not written to the state store: its endpoint has max_names_per_route
    # undeclared ones there (state/activity.py).
    NAMES_NOT_STORED = "names_not_stored"
    # A span with more feature-flag events than the Deriver keeps (the rest are not read).
    FLAG_EVALUATIONS_TRUNCATED = "flag_evaluations_truncated"


class FlagOutcome(_Names):
    """`outcome` of apiusage_flag_evaluations_total: what the experiment join made of a flag
    evaluation (derive/experiments.py)."""

    EXPOSURE = "exposure"  # counted in the api_experiment_* families
    DUPLICATE = "duplicate"  # the request already had an evaluation of the experiment's flag
    NOT_EXPERIMENT = "not_experiment"  # no experiment of the service reads this flag
    OUT_OF_SEGMENT = "out_of_segment"  # the request is outside the experiment's segment
    UNDECLARED_VARIANT = "undeclared_variant"  # not one of the experiment's variants
    UNJOINABLE = "unjoinable"  # a log record without a span id: no request to join it to


#: `source` of apiusage_flag_evaluations_total: a span event of the request, or an OTLP log record.
FLAG_SOURCES = ("span_event", "log")
#: `kind` of the experiment join's pending maps, and `reason` an entry left one without a join.
JOIN_PENDING_KINDS = ("evaluations", "requests")
JOIN_DROP_REASONS = ("expired", "evicted", "shutdown")


# The value tuples, for callers that iterate plain strings.
DATA_QUALITY_CHECKS = tuple(c.value for c in DataQualityCheck)
REJECT_REASONS = tuple(r.value for r in RejectReason)
EXPORT_OUTCOMES = tuple(o.value for o in ExportOutcome)


class _Tally(dict[tuple[str, str], float]):
    """Weighted counts that read 0 when missing, as Counter does (typeshed's Counter holds ints)."""

    def __missing__(self, key: tuple[str, str]) -> float:
        return 0.0


class PipelineStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans_received: Counter[str] = Counter()
        self.spans_rejected: Counter[str] = Counter({r: 0 for r in REJECT_REASONS})
        self.export_requests: Counter[tuple[str, str]] = Counter()
        self.spans_ignored: Counter[str] = Counter({r.value: 0 for r in IgnoreReason})
        self.data_quality_issues: Counter[str] = Counter({c: 0 for c in DATA_QUALITY_CHECKS})
        self.label_overflow = _Tally()
        self.spans_processed = 0
        self.processing_errors = 0
        self.requests_derived = 0.0
        # The experiment join (derive/experiments.py; worker thread).
        self.flag_evaluations: Counter[tuple[str, str]] = Counter(
            {(s, o.value): 0 for s in FLAG_SOURCES for o in FlagOutcome}
        )
        self.experiment_join_dropped: Counter[tuple[str, str]] = Counter(
            {(k, r): 0 for k in JOIN_PENDING_KINDS for r in JOIN_DROP_REASONS}
        )
        self.experiment_join_pending: dict[str, int] = {k: 0 for k in JOIN_PENDING_KINDS}
        self._error_logged_at: float | None = None
        self._errors_unlogged = 0

    def request(
        self,
        transport: str,
        outcome: ExportOutcome,
        received: int = 0,
        rejected: int = 0,
        reason: RejectReason | None = None,
    ) -> None:
        """One OTLP export request answered (receiver threads)."""
        outcome = ExportOutcome(outcome)  # a string outside the set fails here, not in a dashboard
        with self._lock:
            self.export_requests[transport, outcome] += 1
            if received:
                self.spans_received[transport] += received
            if rejected:
                self.spans_rejected[RejectReason(reason)] += rejected

    def ignored(self, not_server: int, not_http: int) -> None:
        self.spans_ignored["not_server"] += not_server
        self.spans_ignored["not_http"] += not_http

    def data_quality(self, **counts: int) -> None:
        """Count spans per check; the keywords are DataQualityCheck values (others: ValueError)."""
        for check, n in counts.items():
            if n:
                self.data_quality_issues[DataQualityCheck(check)] += n

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
                "flag_evaluations": dict(self.flag_evaluations),
                "experiment_join_dropped": dict(self.experiment_join_dropped),
                "experiment_join_pending": dict(self.experiment_join_pending),
            }
