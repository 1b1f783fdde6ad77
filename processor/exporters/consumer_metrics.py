"""Prometheus families for the consumer-state report and the state store's health.

Values come from the last refresh of the store (`processors` → `state.refresh_interval`),
computed over every replica's data by the one replica that holds the refresh lease and
loaded by the others (state/lease.py): with several replicas, aggregate with
`max without (instance)`, not `sum`.  Label values are sanitized when spans are derived
(and again by the report for older stores), and each label past `processors.limits`
folds into `__other__` (state/folding.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..state.report import TTFS_BUCKETS
from ..state.service import StateService
from .le import le_label

__all__ = ["ConsumerCollector"]


def _gauge(name: str, doc: str, labels: tuple[str, ...], values: dict, unit: str = "") -> Metric:
    family = GaugeMetricFamily(name, doc, labels=list(labels), unit=unit)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


class ConsumerCollector:
    """The report's families as they are: build_report() already sanitized and folded them."""

    def __init__(self, state: StateService, limits=None) -> None:
        self._state = state  # limits: applied by build_report (StateService), kept for callers

    def collect(self) -> Iterable[Metric]:
        r = self._state.report
        yield _gauge(
            "api_active_consumers",
            "Distinct consumers with a call in the window.",
            ("service", "plan_tier", "window"),
            r.active,
        )
        new = CounterMetricFamily(
            "api_new_consumers", "Consumers seen for the first time, ever.", labels=["service", "plan_tier"]
        )
        for key, n in sorted(r.new.items()):
            new.add_metric(list(key), n)
        yield new
        ttfs = HistogramMetricFamily(
            "api_time_to_first_success_seconds",
            "Time from a consumer's first call to its first 2xx call.",
            labels=["service", "plan_tier"],
            unit="seconds",
        )
        les = [le_label(b) for b in TTFS_BUCKETS] + ["+Inf"]
        for key, (counts, total, _count) in sorted(r.ttfs.items()):
            cumulative, buckets = 0, []
            for le, n in zip(les, counts, strict=True):
                cumulative += n
                buckets.append((le, cumulative))
            ttfs.add_metric(list(key), buckets, total)
        yield ttfs
        yield _gauge(
            "api_endpoint_consumers",
            "Distinct consumers of an endpoint in the window.",
            ("service", "method", "route", "window"),
            r.endpoint_consumers,
        )
        yield _gauge(
            "api_feature_consumers",
            "Distinct consumers of a feature in the window.",
            ("service", "feature", "window"),
            r.feature_consumers,
        )
        yield _gauge(
            "api_feature_adoption_ratio",
            "Feature consumers / active consumers, per plan tier and window.",
            ("service", "feature", "plan_tier", "window"),
            r.feature_adoption,
        )
        yield _gauge(
            "api_client_version_consumers",
            "Distinct consumers per client SDK and version in the window.",
            ("service", "client_name", "client_version", "window"),
            r.client_versions,
        )
        yield _gauge(
            "api_deprecated_endpoint_consumers",
            "Distinct consumers of a deprecated endpoint in the window.",
            ("service", "method", "route", "window"),
            r.deprecated_consumers,
        )
        yield _gauge(
            "api_endpoint_sunset_timestamp_seconds",
            "Sunset date of a deprecated endpoint (catalog), as a Unix time.",
            ("service", "method", "route"),
            r.sunset,
        )
        yield _gauge(
            "api_migrated_consumers",
            "Consumers of a deprecated endpoint in the window who have since called its replacement.",
            ("service", "method", "route", "window"),
            r.migrated,
        )
        yield _gauge(
            "api_unused_endpoints", "Catalog endpoints with no call in 30 days.", ("service",), r.unused
        )
        yield _gauge(
            "api_endpoint_last_called_timestamp_seconds",
            "Last call to a catalog endpoint, as a Unix time.",
            ("service", "method", "route"),
            r.last_called,
        )
        yield _gauge(
            "api_cohort_retention_ratio",
            "Share of a first-seen week's consumers active N weeks later.",
            ("service", "cohort_week", "weeks_since"),
            r.cohorts,
        )
        yield _gauge(
            "api_consumers_at_risk",
            "Consumers whose last-7-day calls fell below half their previous 4-week weekly average.",
            ("service", "plan_tier"),
            r.at_risk,
        )
        yield from self._health({key: values for key, (values, _) in r.folded.items()})

    def _health(self, dropped_values: dict[tuple[str, str], int]) -> Iterable[Metric]:
        dropped = GaugeMetricFamily(
            "apiusage_consumer_metric_values_dropped",
            "Label values folded into __other__ in a consumer metric at the last refresh (past the "
            "label limit; the busiest values are kept).",
            labels=["metric", "label"],
        )
        for (metric, label), n in sorted(dropped_values.items()):
            dropped.add_metric([metric, label], n)
        yield dropped
        h = self._state.health
        flushes = CounterMetricFamily("apiusage_state_flushes", "State store flushes.", labels=["outcome"])
        for outcome, n in sorted(h.flushes.items()):
            flushes.add_metric([outcome], n)
        yield flushes
        refreshes = CounterMetricFamily(
            "apiusage_state_refreshes", "Reads of the business metrics from the store.", labels=["outcome"]
        )
        for outcome, n in sorted(h.refreshes.items()):
            refreshes.add_metric([outcome], n)
        yield refreshes
        yield GaugeMetricFamily(
            "apiusage_state_last_flush_success_timestamp_seconds",
            "When the last successful flush ended.",
            value=h.last_flush_success,
        )
        yield GaugeMetricFamily(
            "apiusage_state_flush_duration_seconds",
            "Duration of the last successful flush.",
            value=h.last_flush_seconds,
        )
        yield GaugeMetricFamily(
            "apiusage_state_refresh_duration_seconds",
            "Duration of the last metrics refresh.",
            value=h.last_refresh_seconds,
        )
        yield GaugeMetricFamily(
            "apiusage_state_pending_rows",
            "Deduplicated rows waiting for the next flush.",
            value=self._state.activity.pending(),
        )
        yield CounterMetricFamily(
            "apiusage_state_rows_written", "Rows upserted into the store.", value=h.rows_written
        )
        yield GaugeMetricFamily(
            "apiusage_state_up",
            "1 when the last flush reached the store; 0 while counting in memory.",
            value=int(h.up),
        )
        yield CounterMetricFamily(
            "apiusage_state_rows_dropped",
            "Rows not stored: past max_pending_rows while the store was down, "
            "or timestamps beyond max_future_skew.",
            value=self._state.activity.rows_dropped,
        )
        yield GaugeMetricFamily(
            "apiusage_state_report_timestamp_seconds",
            "When the business metrics were last computed (by this replica or, "
            "on a follower, by the one that computes).",
            value=self._state.report.generated_ms / 1000,
        )
        yield GaugeMetricFamily(
            "apiusage_state_refresh_leader",
            "1 when this replica computes the consumer metrics; 0 when it serves "
            "the report another replica published.",
            value=int(h.leader),
        )
        yield GaugeMetricFamily(
            "apiusage_state_refresh_interval_seconds",
            "The configured state.refresh_interval.",
            value=float(self._state.config.refresh_interval),
        )
