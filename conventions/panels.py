"""The dashboard panel contract: what alert rules link to and the dashboards must contain.

Every alert's `dashboard_url` points at one of these panels
(`<grafana>/d/<uid>/<slug>?viewPanel=<id>&var-<label>=...`); grafana/build.py takes the
dashboards' uids, titles and these panels' titles from here, the rule generator
(apiusage.rules) its uids, slugs and panel ids, and the tests hold the JSON to the metric each
panel plots.  Panel ids are stable: never renumber, only add.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DASHBOARDS", "PANELS", "Dashboard", "Panel", "dashboard", "panel", "linked"]


@dataclass(frozen=True)
class Dashboard:
    uid: str
    slug: str  # Grafana's URL slug of the title; also the JSON file's name
    title: str
    variables: tuple[str, ...]  # template variables an alert link may fill

    @property
    def file(self) -> str:
        return f"{self.slug}.json"


@dataclass(frozen=True)
class Panel:
    dashboard: str  # uid
    id: int
    title: str
    metric: str  # a metric the panel plots (recording rules expanded)
    key: str | None = None  # the name an alert rule refers to the panel by, when one does


OVERVIEW, ADOPTION, DEPRECATIONS, PIPELINE, DESIGN = (
    "apiusage-overview",
    "apiusage-adoption",
    "apiusage-deprecations",
    "apiusage-pipeline",
    "apiusage-design",
)
RELEASES = "apiusage-releases"
EXPERIMENTS = "apiusage-experiments"

DASHBOARDS: tuple[Dashboard, ...] = (
    Dashboard(OVERVIEW, "api-overview", "API overview", ("datasource", "service", "route", "plan_tier")),
    Dashboard(
        ADOPTION, "adoption-and-consumers", "Adoption and consumers", ("datasource", "service", "plan_tier")
    ),
    Dashboard(
        DEPRECATIONS, "deprecations-and-migrations", "Deprecations and migrations", ("datasource", "service")
    ),
    Dashboard(PIPELINE, "pipeline-health", "Pipeline health", ("datasource",)),
    Dashboard(DESIGN, "api-design", "API design", ("datasource", "service", "route")),
    Dashboard(RELEASES, "releases", "Releases", ("datasource", "service")),
    Dashboard(EXPERIMENTS, "experiments", "Experiments", ("datasource", "service", "experiment")),
)

_REQ, _DUR = "api_requests_total", "api_request_duration_seconds_bucket"

PANELS: tuple[Panel, ...] = (
    Panel(OVERVIEW, 2, "Requests per second by route", _REQ),
    Panel(OVERVIEW, 3, "Error ratio (5xx) by route", _REQ),
    Panel(OVERVIEW, 4, "Latency quantiles by route", _DUR),
    Panel(OVERVIEW, 5, "Traffic against the same time last week", _REQ, "traffic_vs_last_week"),
    Panel(OVERVIEW, 6, "Top endpoints by 4xx ratio", _REQ, "top_4xx"),
    Panel(OVERVIEW, 7, "Error budget burn rate (5xx)", _REQ, "error_burn"),
    Panel(OVERVIEW, 8, "Latency SLO burn rate", _DUR, "latency_burn"),
    Panel(OVERVIEW, 9, "Error budget remaining", _REQ),
    Panel(OVERVIEW, 10, "Error ratio by client version", "api_client_requests_total", "client_versions"),
    Panel(OVERVIEW, 11, "Requests by plan tier", _REQ),
    Panel(ADOPTION, 2, "Active consumers by plan tier", "api_active_consumers", "active_consumers"),
    Panel(ADOPTION, 3, "New consumers", "api_new_consumers_total"),
    Panel(ADOPTION, 4, "Time to first success", "api_time_to_first_success_seconds_bucket", "ttfs"),
    Panel(ADOPTION, 5, "Feature adoption", "api_feature_adoption_ratio"),
    Panel(ADOPTION, 6, "Endpoint consumers", "api_endpoint_consumers"),
    Panel(ADOPTION, 7, "Client version spread", "api_client_version_consumers"),
    Panel(ADOPTION, 8, "Cohort retention", "api_cohort_retention_ratio"),
    Panel(ADOPTION, 9, "Consumers at risk", "api_consumers_at_risk", "at_risk"),
    Panel(ADOPTION, 10, "Active consumers forecast", "api_active_consumers"),
    Panel(
        DEPRECATIONS,
        2,
        "Consumers on deprecated endpoints",
        "api_deprecated_endpoint_consumers",
        "deprecated_consumers",
    ),
    Panel(DEPRECATIONS, 3, "Traffic to deprecated endpoints", "api_deprecated_requests_total"),
    Panel(DEPRECATIONS, 4, "Days to sunset", "api_endpoint_sunset_timestamp_seconds"),
    Panel(DEPRECATIONS, 5, "Migration progress", "api_migrated_consumers"),
    Panel(DEPRECATIONS, 6, "Unused catalog endpoints", "api_unused_endpoints"),
    Panel(
        DEPRECATIONS, 7, "Deprecated endpoint consumers by client version", "api_deprecated_requests_total"
    ),
    Panel(PIPELINE, 2, "Processor up", "up", "up"),
    Panel(PIPELINE, 3, "Spans received and rejected", "apiusage_spans_rejected_total", "rejected"),
    Panel(PIPELINE, 4, "Queue fill", "apiusage_queue_spans", "queue"),
    Panel(PIPELINE, 5, "Data-quality issues by check", "apiusage_data_quality_issues_total", "data_quality"),
    Panel(PIPELINE, 6, "Label overflow", "apiusage_label_overflow_total", "overflow"),
    Panel(PIPELINE, 7, "State store flushes", "apiusage_state_flushes_total", "flushes"),
    Panel(PIPELINE, 8, "Spans received per service", _REQ, "per_service"),
    Panel(PIPELINE, 9, "Processing latency", "apiusage_processing_latency_seconds_bucket"),
    Panel(PIPELINE, 13, "Consumer metrics age", "apiusage_state_report_timestamp_seconds", "report_age"),
    Panel(PIPELINE, 17, "Memory limiter refusals", "apiusage_memory_limiter_refusals_total", "memory"),
    Panel(PIPELINE, 18, "Resident memory and limit", "process_resident_memory_bytes"),
    Panel(PIPELINE, 19, "Consumer metrics refresh", "apiusage_state_refresh_duration_seconds", "refresh"),
    Panel(PIPELINE, 20, "Consumer metrics computed by", "apiusage_state_refresh_leader"),
    Panel(
        DESIGN,
        2,
        "Validation errors per request by endpoint",
        "api_validation_errors_total",
        "validation_errors",
    ),
    Panel(DESIGN, 3, "Validation errors by field", "api_validation_errors_total"),
    Panel(
        DESIGN,
        4,
        "4xx ratio by client library and endpoint",
        "api_client_endpoint_requests_total",
        "client_libraries",
    ),
    Panel(
        DESIGN,
        5,
        "Mean response size against last week",
        "api_response_body_size_bytes_sum",
        "response_sizes",
    ),
    Panel(DESIGN, 6, "Request body size percentiles", "api_request_body_size_bytes_bucket"),
    Panel(DESIGN, 7, "Response body size percentiles", "api_response_body_size_bytes_bucket"),
    Panel(DESIGN, 8, "Parameters in use", "api_parameter_requests_total"),
    Panel(DESIGN, 9, "Consumers per parameter", "api_parameter_consumers"),
    Panel(DESIGN, 10, "Unused parameters", "api_unused_parameters"),
    Panel(DESIGN, 11, "Requests by region", "api_region_requests_total"),
    Panel(DESIGN, 12, "Latency by client region", "api_region_request_duration_seconds_bucket"),
    Panel(DESIGN, 13, "Feedback by score", "api_feedback_total"),
    Panel(DESIGN, 14, "Feedback next to usage", "api_feedback_total"),
    Panel(DESIGN, 15, "Consumers giving feedback", "api_feedback_consumers"),
    Panel(DESIGN, 16, "Errors by error type", "api_errors_total"),
    # Releases (issue 16): per service.version, with deploy annotations from the release markers.
    Panel(RELEASES, 2, "Requests per second by release", "api_release_requests_total"),
    Panel(RELEASES, 3, "Error ratio (5xx) by release", "api_release_requests_total", "release_regression"),
    Panel(RELEASES, 4, "Latency p95 by release", "api_release_request_duration_seconds_bucket"),
    Panel(RELEASES, 5, "Releases by first sight", "api_release_first_seen_timestamp_seconds"),
    Panel(RELEASES, 6, "Error ratio by release and endpoint", "api_release_requests_total"),
    # Experiments (issue 16): per variant; the checks come from the processor's state refresh.
    Panel(EXPERIMENTS, 2, "Requests per second by variant", "api_experiment_requests_total"),
    Panel(EXPERIMENTS, 3, "Error ratio (5xx) by variant", "api_experiment_requests_total"),
    Panel(EXPERIMENTS, 4, "Client error ratio (4xx) by variant", "api_experiment_requests_total"),
    Panel(EXPERIMENTS, 5, "Latency p95 by variant", "api_experiment_request_duration_seconds_bucket"),
    Panel(EXPERIMENTS, 6, "Consumers by assigned variant", "api_experiment_consumers"),
    Panel(
        EXPERIMENTS, 7, "Sample ratio check", "api_experiment_sample_ratio_p_value", "experiment_sample_ratio"
    ),
    Panel(EXPERIMENTS, 8, "Guardrails", "api_experiment_guardrail_failed", "experiment_guardrail"),
    Panel(EXPERIMENTS, 9, "Metric p-values (Holm-adjusted)", "api_experiment_p_value"),
    Panel(EXPERIMENTS, 10, "Contaminated consumers", "api_experiment_contaminated_consumers"),
)


def dashboard(uid: str) -> Dashboard:
    """The contract's dashboard with this uid; KeyError naming it when there is none."""
    for d in DASHBOARDS:
        if d.uid == uid:
            return d
    raise KeyError(f"no dashboard {uid!r} in the panel contract (apiusage.conventions.panels)")


def panel(uid: str, panel_id: int) -> Panel | None:
    """The contract's panel `panel_id` of dashboard `uid`, or None when it is not in the contract."""
    return next((p for p in PANELS if p.dashboard == uid and p.id == panel_id), None)


def linked(key: str) -> Panel:
    """The panel an alert rule refers to by `key`; KeyError naming it when there is none."""
    for p in PANELS:
        if p.key == key:
            return p
    raise KeyError(f"no panel with key {key!r} in the panel contract (apiusage.conventions.panels)")
