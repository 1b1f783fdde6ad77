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

from .. import selfmetrics as _T
from ..state.report import TTFS_BUCKETS, ConsumerReport
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
        yield _gauge(
            "api_parameter_consumers",
            "Distinct consumers who sent a query parameter or JSON body field of an endpoint in the window.",
            ("service", "method", "route", "location", "parameter", "window"),
            r.parameter_consumers,
        )
        yield _gauge(
            "api_unused_parameters",
            "Parameters the catalog declares for an endpoint called in 30 days that no request sent in them.",
            ("service", "method", "route"),
            r.unused_parameters,
        )
        yield _gauge(
            "api_feedback_consumers",
            "Distinct consumers who sent developer feedback in the window.",
            ("service", "window"),
            r.feedback_consumers,
        )
        yield _gauge(
            "api_experiment_consumers",
            "Consumers in an experiment by the variant they were first assigned (they stay in it).",
            ("service", "experiment", "variant"),
            r.experiment_consumers,
        )
        yield _gauge(
            "api_experiment_contaminated_consumers",
            "Consumers of an experiment later seen in another variant than the one first assigned.",
            ("service", "experiment"),
            r.experiment_contaminated,
        )
        yield _gauge(
            "api_release_first_seen_timestamp_seconds",
            "When a service.version was first seen (the release marker), as a Unix time; the newest "
            "limits.max_releases per service.",
            ("service", "version"),
            r.release_first_seen,
        )
        yield _gauge(
            "api_release_rank",
            "A release's place by first sight: 0 = the newest of its service, 1 = the one before, ...",
            ("service", "version"),
            r.release_rank,
        )
        yield from self._experiment_checks(r)
        yield from self._health({key: values for key, (values, _) in r.folded.items()})

    def _experiment_checks(self, r: ConsumerReport) -> Iterable[Metric]:
        """The experiment checks (experiments/checks.py), the verdict of `apiusage experiments
        report`; absent, HELP lines included, while no experiment has been checked."""
        if not r.experiment_running:
            return
        experiment, treatment = ("service", "experiment"), ("service", "experiment", "variant", "metric")
        yield _gauge(
            "api_experiment_running",
            "1 while an experiment of the experiments file runs (start <= today < start + planned_days).",
            experiment,
            r.experiment_running,
        )
        yield _gauge(
            "api_experiment_sample_ratio_p_value",
            "Chi-square p-value of an experiment's consumers per variant against its planned split.",
            experiment,
            r.experiment_srm_p_value,
        )
        yield _gauge(
            "api_experiment_sample_ratio_mismatch",
            "1 when an experiment's sample ratio check fails (p < 0.001): its verdict is blocked.",
            experiment,
            r.experiment_srm_mismatch,
        )
        yield _gauge(
            "api_experiment_guardrail_failed",
            "1 when a treatment is significantly worse than the control on a guardrail metric, else 0.",
            treatment,
            r.experiment_guardrail_failed,
        )
        yield _gauge(
            "api_experiment_p_value",
            "A treatment's p-value against the control on a tested metric (Holm-adjusted over treatments).",
            treatment,
            r.experiment_p_value,
        )

    def _health(self, dropped_values: dict[tuple[str, str], int]) -> Iterable[Metric]:
        h = self._state.health
        yield _T.CONSUMER_METRIC_VALUES_DROPPED.filled(dropped_values)
        yield _T.STATE_FLUSHES.filled(h.flushes)
        yield _T.STATE_REFRESHES.filled(h.refreshes)
        yield _T.STATE_LAST_FLUSH_SUCCESS_TIMESTAMP_SECONDS.family(h.last_flush_success)
        yield _T.STATE_FLUSH_DURATION_SECONDS.family(h.last_flush_seconds)
        yield _T.STATE_REFRESH_DURATION_SECONDS.family(h.last_refresh_seconds)
        yield _T.STATE_PENDING_ROWS.family(self._state.activity.pending())
        yield _T.STATE_ROWS_WRITTEN.family(h.rows_written)
        yield _T.STATE_UP.family(int(h.up))
        yield _T.STATE_ROWS_DROPPED.family(self._state.activity.rows_dropped)
        yield _T.STATE_REPORT_TIMESTAMP_SECONDS.family(self._state.report.generated_ms / 1000)
        yield _T.STATE_REFRESH_LEADER.family(int(h.leader))
        yield _T.STATE_REFRESH_INTERVAL_SECONDS.family(float(self._state.config.refresh_interval))
        yield _T.EXPERIMENT_CHECKS.filled(h.experiment_checks)
