"""Every `apiusage_*` family the processor exposes, declared once: name, type, labels, help, owner.

The collectors that expose them (exporters/prometheus.py, exporters/consumer_metrics.py,
exporters/otlp_forward.py, memory.py) build their families from this table only
(`Family.family()` / `Family.filled()`), so a family cannot be exposed without being declared
here.  tests/processor/test_selfmetrics.py checks docs/metrics.md's table and a live
processor's /metrics against it, both ways.  (The OpenTelemetry Collector generates this
table from each component's metadata.yaml; one Python table serves the same purpose.)

`owner` is the component (processor/component.py) whose work the family reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

__all__ = ["FAMILIES", "Family", "Kind", "by_name", "owned_by"]


class Kind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"

    __str__ = str.__str__

    # A method, not `__format__ = str.__format__`: typeshed types str's and Enum's differently.
    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)


_CLASSES = {
    Kind.COUNTER: CounterMetricFamily,
    Kind.GAUGE: GaugeMetricFamily,
    Kind.HISTOGRAM: HistogramMetricFamily,
}


@dataclass(frozen=True)
class Family:
    """One family: `name` as prometheus_client takes it (a counter without `_total`)."""

    name: str
    kind: Kind
    help: str
    owner: str
    labels: tuple[str, ...] = ()
    unit: str = ""

    @property
    def exposed_name(self) -> str:
        """The name in the text format (and in docs/metrics.md): counters end in `_total`."""
        return f"{self.name}_total" if self.kind is Kind.COUNTER else self.name

    def family(self, value: float | None = None) -> Metric:
        """An empty labelled family to fill, or an unlabelled one holding `value`."""
        cls = _CLASSES[self.kind]
        extra = {"unit": self.unit} if self.unit else {}
        if value is None:
            return cls(self.name, self.help, labels=list(self.labels), **extra)
        if self.labels:
            raise ValueError(f"{self.name} has labels {self.labels}: fill it, do not give one value")
        return cls(self.name, self.help, value=value, **extra)

    def filled(self, values: Mapping) -> Metric:
        """A labelled counter or gauge with one sample per key (a label value or a tuple of them)."""
        family = self.family()
        for key, n in sorted(values.items()):
            family.add_metric(list(key) if isinstance(key, tuple) else [key], n)  # type: ignore[attr-defined]
        return family


_C, _G, _H = Kind.COUNTER, Kind.GAUGE, Kind.HISTOGRAM

# receivers (both transports; `transport` tells them apart)
EXPORT_REQUESTS = Family(
    "apiusage_export_requests", _C, "OTLP export requests answered.", "receivers", ("transport", "outcome")
)
SPANS_RECEIVED = Family(
    "apiusage_spans_received", _C, "Spans decoded from export requests.", "receivers", ("transport",)
)
SPANS_REJECTED = Family(
    "apiusage_spans_rejected", _C, "Spans refused (clients were told).", "receivers", ("reason",)
)
# the worker: derivation and the queue it drains
SPANS_IGNORED = Family(
    "apiusage_spans_ignored", _C, "Spans accepted but not API requests.", "worker", ("reason",)
)
DATA_QUALITY_ISSUES = Family(
    "apiusage_data_quality_issues",
    _C,
    "Spans and feedback records with a data-quality problem.",
    "worker",
    ("check",),
)
LABEL_OVERFLOW = Family(
    "apiusage_label_overflow",
    _C,
    "Observations whose label value was folded into __other__.",
    "worker",
    ("metric", "label"),
)
SPANS_PROCESSED = Family("apiusage_spans_processed", _C, "Spans through derivation.", "worker")
PROCESSING_ERRORS = Family(
    "apiusage_processing_errors", _C, "Spans lost to an internal processing error (see the log).", "worker"
)
QUEUE_SPANS = Family("apiusage_queue_spans", _G, "Spans waiting for derivation.", "worker")
QUEUE_CAPACITY_SPANS = Family(
    "apiusage_queue_capacity_spans", _G, "Capacity of the queue in spans.", "worker"
)
PROCESSING_LATENCY_SECONDS = Family(
    "apiusage_processing_latency_seconds",
    _H,
    "Time from a batch's arrival to the end of its derivation.",
    "worker",
    unit="seconds",
)
SERIES = Family("apiusage_series", _G, "Live series per metric.", "worker", ("metric",))
RELEASE_VERSIONS_RETIRED = Family(
    "apiusage_release_versions_retired",
    _C,
    "Releases whose api_release_* series left the exposition for a newer one (limits.max_releases).",
    "worker",
)
# the metrics endpoint itself
BUILD_INFO = Family(
    "apiusage_build_info", _G, "Version and OTLP scanner in use.", "metrics", ("version", "scanner")
)
# the memory limiter
MEMORY_LIMIT_BYTES = Family(
    "apiusage_memory_limit_bytes", _G, "Resident memory above which new data is refused.", "memory_limiter"
)
MEMORY_OVER_LIMIT = Family(
    "apiusage_memory_over_limit", _G, "1 while new data is refused for memory.", "memory_limiter"
)
MEMORY_LIMITER_REFUSALS = Family(
    "apiusage_memory_limiter_refusals", _C, "Export requests refused for memory.", "memory_limiter"
)
# the trace forwarder (exporters.otlp)
FORWARDED_REQUESTS = Family(
    "apiusage_forwarded_requests",
    _C,
    "OTLP requests forwarded to the OTLP backend, by signal and outcome.",
    "forwarder",
    ("signal", "outcome"),
)
FORWARD_QUEUE_REQUESTS = Family(
    "apiusage_forward_queue_requests", _G, "Requests waiting to be forwarded.", "forwarder"
)
FORWARD_QUEUE_BYTES = Family(
    "apiusage_forward_queue_bytes",
    _G,
    "Bytes of the requests waiting to be forwarded or being sent.",
    "forwarder",
)
# the state service (state.enabled)
CONSUMER_METRIC_VALUES_DROPPED = Family(
    "apiusage_consumer_metric_values_dropped",
    _G,
    "Label values folded into __other__ in a consumer metric at the last refresh (past the "
    "label limit; the busiest values are kept).",
    "state",
    ("metric", "label"),
)
STATE_FLUSHES = Family("apiusage_state_flushes", _C, "State store flushes.", "state", ("outcome",))
STATE_REFRESHES = Family(
    "apiusage_state_refreshes", _C, "Reads of the business metrics from the store.", "state", ("outcome",)
)
STATE_LAST_FLUSH_SUCCESS_TIMESTAMP_SECONDS = Family(
    "apiusage_state_last_flush_success_timestamp_seconds",
    _G,
    "When the last successful flush ended.",
    "state",
)
STATE_FLUSH_DURATION_SECONDS = Family(
    "apiusage_state_flush_duration_seconds", _G, "Duration of the last successful flush.", "state"
)
STATE_REFRESH_DURATION_SECONDS = Family(
    "apiusage_state_refresh_duration_seconds", _G, "Duration of the last metrics refresh.", "state"
)
STATE_PENDING_ROWS = Family(
    "apiusage_state_pending_rows", _G, "Deduplicated rows waiting for the next flush.", "state"
)
STATE_ROWS_WRITTEN = Family("apiusage_state_rows_written", _C, "Rows upserted into the store.", "state")
STATE_UP = Family(
    "apiusage_state_up", _G, "1 when the last flush reached the store; 0 while counting in memory.", "state"
)
STATE_ROWS_DROPPED = Family(
    "apiusage_state_rows_dropped",
    _C,
    "Rows not stored: past max_pending_rows while the store was down, or timestamps beyond max_future_skew.",
    "state",
)
STATE_REPORT_TIMESTAMP_SECONDS = Family(
    "apiusage_state_report_timestamp_seconds",
    _G,
    "When the business metrics were last computed (by this replica or, "
    "on a follower, by the one that computes).",
    "state",
)
STATE_REFRESH_LEADER = Family(
    "apiusage_state_refresh_leader",
    _G,
    "1 when this replica computes the consumer metrics; 0 when it serves "
    "the report another replica published.",
    "state",
)
STATE_REFRESH_INTERVAL_SECONDS = Family(
    "apiusage_state_refresh_interval_seconds", _G, "The configured state.refresh_interval.", "state"
)
EXPERIMENT_CHECKS = Family(
    "apiusage_experiment_checks",
    _C,
    "Experiments checked by the state refresh (the experiment check gauges), by outcome: "
    "success; failure (the statistics refused the data or the store failed: see the log); "
    "unavailable (the experiments extra is not installed).",
    "state",
    ("outcome",),
)
# the experiment join (worker; derive/experiments.py)
FLAG_EVALUATIONS = Family(
    "apiusage_flag_evaluations",
    _C,
    "Feature-flag evaluations (span events and log records) by what the experiment join made of them.",
    "worker",
    ("source", "outcome"),
)
EXPERIMENT_JOIN_PENDING = Family(
    "apiusage_experiment_join_pending",
    _G,
    "Log-record flag evaluations waiting for their request, and requests held for late evaluations.",
    "worker",
    ("kind",),
)
EXPERIMENT_JOIN_DROPPED = Family(
    "apiusage_experiment_join_dropped",
    _C,
    "Entries that left the experiment join's pending maps unjoined: past the TTL or the size bound.",
    "worker",
    ("kind", "reason"),
)

FAMILIES: tuple[Family, ...] = (
    EXPORT_REQUESTS,
    SPANS_RECEIVED,
    SPANS_REJECTED,
    SPANS_IGNORED,
    DATA_QUALITY_ISSUES,
    LABEL_OVERFLOW,
    SPANS_PROCESSED,
    PROCESSING_ERRORS,
    QUEUE_SPANS,
    QUEUE_CAPACITY_SPANS,
    PROCESSING_LATENCY_SECONDS,
    SERIES,
    RELEASE_VERSIONS_RETIRED,
    BUILD_INFO,
    MEMORY_LIMIT_BYTES,
    MEMORY_OVER_LIMIT,
    MEMORY_LIMITER_REFUSALS,
    FORWARDED_REQUESTS,
    FORWARD_QUEUE_REQUESTS,
    FORWARD_QUEUE_BYTES,
    CONSUMER_METRIC_VALUES_DROPPED,
    STATE_FLUSHES,
    STATE_REFRESHES,
    STATE_LAST_FLUSH_SUCCESS_TIMESTAMP_SECONDS,
    STATE_FLUSH_DURATION_SECONDS,
    STATE_REFRESH_DURATION_SECONDS,
    STATE_PENDING_ROWS,
    STATE_ROWS_WRITTEN,
    STATE_UP,
    STATE_ROWS_DROPPED,
    STATE_REPORT_TIMESTAMP_SECONDS,
    STATE_REFRESH_LEADER,
    STATE_REFRESH_INTERVAL_SECONDS,
    EXPERIMENT_CHECKS,
    FLAG_EVALUATIONS,
    EXPERIMENT_JOIN_PENDING,
    EXPERIMENT_JOIN_DROPPED,
)

_BY_NAME = {f.name: f for f in FAMILIES}
if len(_BY_NAME) != len(FAMILIES):  # pragma: no cover - a duplicate row is a bug in this table
    raise RuntimeError("processor/selfmetrics.py declares a family twice")


def by_name(name: str) -> Family:
    """The declared family `name` (KeyError names it when it is not declared)."""
    return _BY_NAME[name]


def owned_by(owner: str) -> tuple[Family, ...]:
    """The families a component exports, in table order."""
    return tuple(f for f in FAMILIES if f.owner == owner)
