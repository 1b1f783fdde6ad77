"""The alert catalog: every alert the bundle ships, once, and its rule document.

Each alert has its expression, `for`, severity, static summary, templated description, and the
dashboard panel that shows the problem (a key of PANELS, from the panel contract in
apiusage.conventions.panels).  Why each threshold, guard and `for` is what it is:
`runbooks/<AlertName>.md`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from apiusage.conventions import panels as contract

from .objectives import PAGE, TICKET, burn_expr
from .promql import ROUTE, dedent, num, quote
from .slo import SloFile

__all__ = [
    "PANELS",
    "SLUGS",
    "Alert",
    "alerts",
    "api_alerts",
    "design_alerts",
    "experiment_alerts",
    "pipeline_alerts",
    "product_alerts",
    "rule",
    "slo_alerts",
]

# The panel contract as the rules use it: uid -> slug, and alert panel key -> (uid, panel id).
SLUGS = {d.uid: d.slug for d in contract.DASHBOARDS}
PANELS = {p.key: (p.dashboard, p.id) for p in contract.PANELS if p.key}


@dataclass(frozen=True)
class Alert:
    name: str
    severity: str  # critical | warning | info
    category: str  # api | product | pipeline
    expr: str
    for_: str
    summary: str  # static, one sentence ending with a period
    description: str  # templated
    panel: str  # key of PANELS
    variables: tuple[str, ...] = ()  # dashboard variables filled from the alert's labels


def dashboard_url(slo: SloFile, panel: str, variables: tuple[str, ...]) -> str:
    """The alert's link to its panel (KeyError naming an unknown panel key)."""
    target = contract.linked(panel)
    slug = contract.dashboard(target.dashboard).slug
    url = f"{slo.links.grafana_url.rstrip('/')}/d/{target.dashboard}/{slug}?viewPanel={target.id}"
    for v in variables:  # "route?": only when the alert has the label (route-level SLOs)
        if v.endswith("?"):
            v = v[:-1]
            url += f"{{{{ with $labels.{v} }}}}&var-{v}={{{{ . | urlquery }}}}{{{{ end }}}}"
        else:
            url += f"&var-{v}={{{{ $labels.{v} | urlquery }}}}"
    return url


def rule(slo: SloFile, a: Alert) -> dict[str, Any]:
    return {
        "alert": a.name,
        "expr": a.expr,
        "for": a.for_,
        "labels": {"severity": a.severity, "category": a.category},
        "annotations": {
            "summary": a.summary,
            "description": a.description,
            "runbook_url": slo.links.runbook_base_url + a.name,
            "dashboard_url": dashboard_url(slo, a.panel, a.variables),
        },
    }


_WHERE = "{{ $labels.service }}{{ with $labels.route }} {{ $labels.method }} {{ . }}{{ end }}"


def slo_alerts(slo: SloFile) -> list[Alert]:
    v = ("service", "route?")
    return [
        Alert(
            "ApiErrorBudgetBurnFast",
            "critical",
            "api",
            burn_expr(slo, "errors", PAGE),
            "2m",
            "An API is burning its 30-day error budget fast (5xx).",
            f"{_WHERE} answers 5xx {{{{ $value | humanize }}}} times faster than its "
            "availability objective allows (14.4x over 1h or 6x over 6h): at this pace "
            "the 30-day error budget is gone within days.",
            "error_burn",
            v,
        ),
        Alert(
            "ApiErrorBudgetBurnSlow",
            "warning",
            "api",
            burn_expr(slo, "errors", TICKET),
            "15m",
            "An API is steadily burning its 30-day error budget (5xx).",
            f"{_WHERE} answers 5xx {{{{ $value | humanize }}}} times faster than its "
            "availability objective allows (3x over 1d or 1x over 3d): the 30-day error "
            "budget will not last the month.",
            "error_burn",
            v,
        ),
        Alert(
            "ApiLatencyBudgetBurnFast",
            "critical",
            "api",
            burn_expr(slo, "latency", PAGE),
            "2m",
            "An API is burning its 30-day latency budget fast.",
            f"{_WHERE} answers too slowly {{{{ $value | humanize }}}} times more often than "
            "its latency objective allows (14.4x over 1h or 6x over 6h).",
            "latency_burn",
            v,
        ),
        Alert(
            "ApiLatencyBudgetBurnSlow",
            "warning",
            "api",
            burn_expr(slo, "latency", TICKET),
            "15m",
            "An API is steadily burning its 30-day latency budget.",
            f"{_WHERE} answers too slowly {{{{ $value | humanize }}}} times more often than "
            "its latency objective allows (3x over 1d or 1x over 3d).",
            "latency_burn",
            v,
        ),
    ]


# ApiReleaseRegression (runbooks/ApiReleaseRegression.md says why these values): the newest
# release is worse than the one before when its figure passes both the factor and the floor.
RELEASE_ERROR_FACTOR = 1.5  # x the previous release's 5xx ratio on the same route
RELEASE_ERROR_POINTS = 0.01  # and at least 1 point above it
RELEASE_ERROR_Z = 3.0  # and unlikely by chance: the two-proportion z over 3 (one-sided p < 0.0014)
RELEASE_LATENCY_FACTOR = 1.5  # x the previous release's p95 on the same service
RELEASE_LATENCY_SECONDS = 0.05  # and at least 50 ms above it


def _worse(previous: str, factor: float, floor: float) -> str:
    """max(factor x previous, previous + floor), series by series."""
    return f"({num(factor)} * {previous} > {previous} + {num(floor)} or {previous} + {num(floor)})"


def release_regression() -> Alert:
    rank0 = "on (service, version) (apiusage_release:api_release_rank == 0)"
    errors = "apiusage_release_route:api_release_requests_5xx:ratio"
    z = "apiusage_release_route:api_release_requests_5xx:z_previous"
    p95 = "apiusage_release:api_release_request_duration_seconds:p95"
    return Alert(
        "ApiReleaseRegression",
        "warning",
        "api",
        dedent(f"""
            label_replace(
              (
                ({errors}_rate1h and {rank0})
                > on ({ROUTE}) group_left (previous_version)
                {_worse(f"{errors}_previous", RELEASE_ERROR_FACTOR, RELEASE_ERROR_POINTS)}
              )
              and {z} > {num(RELEASE_ERROR_Z)},
              "signal", "error_ratio", "", ""
            )
            or
            label_replace(
              ({p95}_rate1h and {rank0})
              > on (service) group_left (previous_version)
              {_worse(f"{p95}_previous", RELEASE_LATENCY_FACTOR, RELEASE_LATENCY_SECONDS)},
              "signal", "latency_p95", "", ""
            )
        """),
        "15m",
        "The newest release of a service is worse than the one before it.",
        "{{ $labels.service }} {{ $labels.version }}{{ with $labels.route }} on {{ $labels.method }} "
        '{{ . }}{{ end }}: {{ if eq $labels.signal "latency_p95" }}p95 latency '
        "{{ $value | humanizeDuration }} over the last hour, well above the last figure of the "
        "release before it, {{ $labels.previous_version }}{{ else }}5xx ratio "
        "{{ $value | humanizePercentage }} over the last hour, well above the release before it, "
        "{{ $labels.previous_version }}, over its last 7 days{{ end }}.",
        "release_regression",
        ("service",),
    )


def api_alerts() -> list[Alert]:
    last_week = "sum by (service) (rate(api_requests_total[1h] offset 7d))"
    known = (
        "sum by (service, client_name, client_version) (rate(api_client_requests_total[1d] offset 7d)) > 0"
    )
    return [
        Alert(
            "ApiClientErrorsRising",
            "warning",
            "api",
            dedent(f"""
            apiusage_route:api_requests_4xx:ratio_rate1h > 0.1
            and
            apiusage_route:api_requests_4xx:ratio_rate1h
              > 2 * (
                (sum by ({ROUTE}) (rate(api_requests_total{{status_code=~"4.."}}[1d] offset 1h))
                  or sum by ({ROUTE}) (rate(api_requests_total[1d] offset 1h)) * 0)
                / sum by ({ROUTE}) (rate(api_requests_total[1d] offset 1h))
              )
            and
            apiusage_route:api_requests:rate1h * 3600 >= 100
        """),
            "15m",
            "Clients get many more 4xx answers from an endpoint than the day before.",
            "{{ $value | humanizePercentage }} of the requests to {{ $labels.method }} "
            "{{ $labels.route }} on {{ $labels.service }} got a 4xx answer in the last hour, "
            "more than twice the share of the day before.",
            "top_4xx",
            ("service", "route"),
        ),
        Alert(
            "ApiTrafficDrop",
            "warning",
            "api",
            dedent(f"""
            apiusage_service:api_requests:rate1h < 0.5 * {last_week}
            and on (service)
            {last_week} * 3600 >= 600
        """),
            "30m",
            "An API receives less than half of its traffic of the same hour last week.",
            "{{ $labels.service }} received {{ $value | humanize }} requests/s over the last "
            "hour, less than half of the same hour last week.",
            "traffic_vs_last_week",
            ("service",),
        ),
        Alert(
            "ApiTrafficSurge",
            "info",
            "api",
            dedent(f"""
            apiusage_service:api_requests:rate1h > 3 * {last_week}
            and on (service)
            {last_week} * 3600 >= 600
        """),
            "30m",
            "An API receives more than three times its traffic of the same hour last week.",
            "{{ $labels.service }} received {{ $value | humanize }} requests/s over the last "
            "hour, more than three times the same hour last week.",
            "traffic_vs_last_week",
            ("service",),
        ),
        Alert(
            "ApiClientVersionErrorRegression",
            "warning",
            "api",
            dedent(f"""
            (
              apiusage_client_version:api_client_requests_errors:ratio_rate1h{{client_version!~"unknown|__other__"}}
              unless on (service, client_name, client_version)
              {known}
            )
            > on (service, client_name) group_left ()
            (
              2 * (
                apiusage_client_version:api_client_requests_errors:ratio_rate1h
                and on (service, client_name, client_version)
                topk by (service, client_name) (1,
                  apiusage_client_version:api_client_requests:rate1h{{client_version!~"unknown|__other__"}}
                  and on (service, client_name, client_version)
                  {known}
                )
              ) + 0.02
            )
            and on (service, client_name, client_version)
            apiusage_client_version:api_client_requests:rate1h * 3600 >= 100
        """),
            "15m",
            "A new client version fails much more often than the version it replaces.",
            "{{ $labels.client_name }} {{ $labels.client_version }}, first seen within the "
            "last 7 days, got an error answer (4xx or 5xx) from {{ $labels.service }} for "
            "{{ $value | humanizePercentage }} of its requests in the last hour: more than "
            "twice the ratio of the busiest older version, plus 2 points.",
            "client_versions",
            ("service",),
        ),
        release_regression(),
    ]


# API design alerts: the thresholds and guards, named once (runbooks/ApiValidationErrorsRising.md,
# ApiClientLibraryErrorOutlier.md and ApiResponseSizeGrowing.md say why these values).
VALIDATION_RISE = 2  # x the endpoint's own ratio over the week before
VALIDATION_FLOOR = 0.05  # validation errors per request
LIBRARY_FACTOR = 3  # x the other client libraries' 4xx ratio on the same endpoint
LIBRARY_FLOOR = 0.05  # 4xx ratio
SIZE_GROWTH = 1.5  # x the mean response size of the same day last week
SIZE_FLOOR = 1024  # bytes: a mean under 1 KiB growing is nobody's problem
MIN_REQUESTS_1H = 100  # requests in the last hour (validation errors; each side of a library comparison)
MIN_RESPONSES_1D = 1000  # responses in the day now and in the same day a week ago


def design_alerts() -> list[Alert]:
    """Alerts on the API's design rather than its health: where clients get the contract wrong,
    which client library misuses an endpoint, which responses grow."""
    ce = "apiusage_client_endpoint:api_client_endpoint_requests"
    # The other clients of the endpoint: the endpoint's total minus this client's own.
    others_4xx = f"sum by ({ROUTE}) ({ce}_4xx:rate1h) - on ({ROUTE}) group_right () {ce}_4xx:rate1h"
    others = f"sum by ({ROUTE}) ({ce}:rate1h) - on ({ROUTE}) group_right () {ce}:rate1h"
    size = "api_response_body_size_bytes"
    count_1d = f"sum by ({ROUTE}) (increase({size}_count[1d]{{offset}}))"
    return [
        Alert(
            "ApiValidationErrorsRising",
            "warning",
            "api",
            dedent(f"""
            apiusage_route:api_validation_errors:ratio_rate1h > {VALIDATION_FLOOR}
            and
            apiusage_route:api_validation_errors:ratio_rate1h
              > {VALIDATION_RISE} * (
                (sum_over_time(apiusage_route:api_validation_errors:rate1h[7d] offset 1h)
                  or sum_over_time(apiusage_route:api_requests:rate1h[7d] offset 1h) * 0)
                / sum_over_time(apiusage_route:api_requests:rate1h[7d] offset 1h)
              )
            and
            apiusage_route:api_requests:rate1h * 3600 >= {MIN_REQUESTS_1H}
        """),
            "30m",
            "Clients send an endpoint many more invalid requests than in the week before.",
            "Requests to {{ $labels.method }} {{ $labels.route }} on {{ $labels.service }} failed "
            'validation with {{ printf "%.2f" $value }} errors each on average in the last hour, '
            f"more than {VALIDATION_RISE} times the ratio of the week before.",
            "validation_errors",
            ("service", "route"),
        ),
        Alert(
            "ApiClientLibraryErrorOutlier",
            "warning",
            "api",
            dedent(f"""
            {ce}_4xx:ratio_rate1h{{client_name!~"unknown|__other__"}} > {LIBRARY_FLOOR}
            and
            {ce}_4xx:ratio_rate1h
              > {LIBRARY_FACTOR} * (
                ({others_4xx})
                /
                ({others})
              )
            and
            {ce}:rate1h * 3600 >= {MIN_REQUESTS_1H}
            and
            ({others}) * 3600 >= {MIN_REQUESTS_1H}
        """),
            "30m",
            "One client library gets many more 4xx answers on an endpoint than the others.",
            "{{ $labels.client_name }} got a 4xx answer for {{ $value | humanizePercentage }} of "
            "its requests to {{ $labels.method }} {{ $labels.route }} on {{ $labels.service }} in "
            f"the last hour, more than {LIBRARY_FACTOR} times the share of the other clients of "
            "that endpoint.",
            "client_libraries",
            ("service", "route"),
        ),
        Alert(
            "ApiResponseSizeGrowing",
            "info",
            "api",
            dedent(f"""
            apiusage_route:{size}:mean_rate1d >= {SIZE_FLOOR}
            and
            apiusage_route:{size}:mean_rate1d
              > {SIZE_GROWTH} * (
                sum by ({ROUTE}) (rate({size}_sum[1d] offset 7d))
                / sum by ({ROUTE}) (rate({size}_count[1d] offset 7d))
              )
            and
            {count_1d.format(offset="")} >= {MIN_RESPONSES_1D}
            and
            {count_1d.format(offset=" offset 7d")} >= {MIN_RESPONSES_1D}
        """),
            "1h",
            "An endpoint's responses are much larger than in the same day last week.",
            "The responses of {{ $labels.method }} {{ $labels.route }} on {{ $labels.service }} "
            'averaged {{ printf "%.0f" $value }} bytes over the last day, more than '
            f"{SIZE_GROWTH} times their mean size in the same day last week.",
            "response_sizes",
            ("service", "route"),
        ),
    ]


# Experiment checks (runbooks/ApiExperimentGuardrailFailed.md and ApiExperimentSampleRatioMismatch.md
# say why): the processor's state refresh computes them with `apiusage experiments report`'s code
# (experiments/checks.py); the rules only gate them on the experiment running. The gauges are the
# same on every replica: `max by`, so two replicas make one alert.
_EXPERIMENT = "service, experiment"
_TREATMENT = "service, experiment, variant, metric"
_RUNNING = f"on ({_EXPERIMENT}) max by ({_EXPERIMENT}) (api_experiment_running) == 1"
_P = '{{ printf "%.2g" $value }}'


def experiment_alerts() -> list[Alert]:
    return [
        Alert(
            "ApiExperimentGuardrailFailed",
            "warning",
            "product",
            dedent(f"""
            max by ({_TREATMENT}) (api_experiment_p_value)
            and on ({_TREATMENT})
            max by ({_TREATMENT}) (api_experiment_guardrail_failed) == 1
            and {_RUNNING}
        """),
            "1h",
            "A running experiment's treatment is significantly worse than its control on a guardrail.",
            "{{ $labels.variant }} of experiment {{ $labels.experiment }} on {{ $labels.service }} is "
            f"significantly worse than the control on its {{{{ $labels.metric }}}} guardrail (p = {_P}): "
            "pause the flag or roll the treatment back.",
            "experiment_guardrail",
            ("service", "experiment"),
        ),
        Alert(
            "ApiExperimentSampleRatioMismatch",
            "warning",
            "product",
            dedent(f"""
            max by ({_EXPERIMENT}) (api_experiment_sample_ratio_p_value)
            and on ({_EXPERIMENT})
            max by ({_EXPERIMENT}) (api_experiment_sample_ratio_mismatch) == 1
            and {_RUNNING}
        """),
            "30m",
            "A running experiment assigns consumers off its planned split.",
            "Experiment {{ $labels.experiment }} on {{ $labels.service }} has consumers per variant "
            f"that do not match its planned split (chi-square p = {_P}, below 0.001): its verdict is "
            "blocked until the assignment is fixed.",
            "experiment_sample_ratio",
            ("service", "experiment"),
        ),
    ]


def product_alerts() -> list[Alert]:
    dep = 'max by (service, method, route) (api_deprecated_endpoint_consumers{{window="{w}"}}{o})'
    active = 'max by (service, plan_tier) (api_active_consumers{{window="1d"}}{offset})'
    risk = "max by (service, plan_tier) (api_consumers_at_risk{offset})"
    p50 = "apiusage_plan:api_time_to_first_success_seconds:p50_7d"
    return [
        Alert(
            "ApiDeprecatedEndpointNearSunset",
            "warning",
            "product",
            dedent(f"""
            {dep.format(w="7d", o="")} > 0
            and on (service, method, route)
            max by (service, method, route) (api_endpoint_sunset_timestamp_seconds) - time() < 30 * 86400
        """),
            "1h",
            "Consumers still call a deprecated endpoint less than 30 days before its sunset.",
            "{{ $value }} consumers called {{ $labels.method }} {{ $labels.route }} of "
            "{{ $labels.service }} in the last 7 days, and its sunset is less than 30 days "
            "away or already past.",
            "deprecated_consumers",
            ("service",),
        ),
        Alert(
            "ApiDeprecatedEndpointAdopted",
            "info",
            "product",
            dedent(f"""
            {dep.format(w="30d", o="")}
              - {dep.format(w="30d", o=" offset 1d")}
            >= 1
        """),
            "30m",
            "New consumers started calling a deprecated endpoint.",
            "{{ $value }} more consumers called the deprecated {{ $labels.method }} "
            "{{ $labels.route }} of {{ $labels.service }} in the last 30 days than a day "
            "earlier: someone new is adopting it.",
            "deprecated_consumers",
            ("service",),
        ),
        Alert(
            "ApiActiveConsumersDrop",
            "warning",
            "product",
            dedent(f"""
            {active.format(offset="")}
              < 0.75 * {active.format(offset=" offset 7d")}
            and on (service, plan_tier)
            {active.format(offset=" offset 7d")} >= 20
        """),
            "3h",
            "Fewer consumers of a plan tier were active than at the same time last week.",
            "Only {{ $value }} {{ $labels.plan_tier }} consumers of {{ $labels.service }} were "
            "active in the last 24 hours, at least 25% fewer than at the same time last week.",
            "active_consumers",
            ("service", "plan_tier"),
        ),
        Alert(
            "ApiConsumersAtRiskRising",
            "info",
            "product",
            dedent(f"""
            {risk.format(offset="")} >= 5
            and on (service, plan_tier)
            {risk.format(offset="")} > 1.5 * {risk.format(offset=" offset 7d")}
        """),
            "2h",
            "More consumers are at risk of churning than a week ago.",
            "{{ $value }} {{ $labels.plan_tier }} consumers of {{ $labels.service }} made less "
            "than half their usual calls in the last 7 days, over 1.5 times as many as a week "
            "ago.",
            "at_risk",
            ("service", "plan_tier"),
        ),
        Alert(
            "ApiOnboardingSlower",
            "info",
            "product",
            dedent(f"""
            {p50} >= 60
            and on (service, plan_tier)
            {p50}
              > 2 * histogram_quantile(0.5, sum by (service, plan_tier, le) (
                max without (instance) (
                  increase(api_time_to_first_success_seconds_bucket[7d] offset 7d))))
            and on (service, plan_tier)
            apiusage_plan:api_first_successes:increase7d >= 10
        """),
            "1h",
            "New consumers take twice as long to their first successful call as last week.",
            "The median time to first success of new {{ $labels.plan_tier }} consumers of "
            "{{ $labels.service }} was {{ $value | humanizeDuration }} over the last 7 days, "
            "more than twice that of the week before.",
            "ttfs",
            ("service", "plan_tier"),
        ),
    ] + experiment_alerts()


def pipeline_alerts(slo: SloFile) -> list[Alert]:
    job = quote(slo.job)
    return [
        Alert(
            "ApiUsageProcessorDown",
            "critical",
            "pipeline",
            f"up{{job={job}}} == 0 or absent(up{{job={job}}})",
            "5m",
            "Prometheus cannot scrape the apiusage processor.",
            "{{ with $labels.instance }}The apiusage processor at {{ . }} does not answer "
            "scrapes{{ else }}Prometheus has no target for job {{ $labels.job }}{{ end }}: "
            "no usage metrics are being collected.",
            "up",
        ),
        Alert(
            "ApiUsageSpansRejected",
            "warning",
            "pipeline",
            dedent("""
            sum by (instance, reason) (rate(apiusage_spans_rejected_total{reason!="shutting_down"}[5m]))
            / on (instance) group_left ()
            sum by (instance) (rate(apiusage_spans_received_total[5m]))
            > 0.01
        """),
            "10m",
            "The processor rejects spans that services send it.",
            "{{ $labels.instance }} rejected {{ $value | humanizePercentage }} of the spans it "
            "received over the last 5 minutes (reason {{ $labels.reason }}).",
            "rejected",
        ),
        Alert(
            "ApiUsageQueueNearFull",
            "warning",
            "pipeline",
            "apiusage_queue_spans / apiusage_queue_capacity_spans > 0.8",
            "5m",
            "The processor's span queue is more than 80% full.",
            "The span queue of {{ $labels.instance }} is {{ $value | humanizePercentage }} "
            "full; when it is full, exports are refused.",
            "queue",
        ),
        Alert(
            "ApiUsageMemoryLimitRefusing",
            "warning",
            "pipeline",
            "sum by (instance) (rate(apiusage_memory_limiter_refusals_total[5m])) > 0",
            "10m",
            "The processor refuses data to stay under its memory limit.",
            "{{ $labels.instance }} has refused {{ $value | humanize }} export requests/s for 10 "
            "minutes because its memory is near processors.memory_limiter.limit_mib; senders "
            "retry, and spans are delayed or lost when their retries run out.",
            "memory",
        ),
        Alert(
            "ApiUsageDataQualityIssuesRising",
            "info",
            "pipeline",
            dedent("""
            apiusage_check:apiusage_data_quality_issues:ratio_rate1h > 0.05
            unless on (check)
            (
              sum by (check) (rate(apiusage_data_quality_issues_total[1h] offset 1d))
              / ignoring (check) group_left ()
              sum (rate(apiusage_spans_processed_total[1h] offset 1d))
            ) * 2 >= on (check) apiusage_check:apiusage_data_quality_issues:ratio_rate1h
            and on ()
            sum (rate(apiusage_spans_processed_total[1h])) * 3600 >= 1000
            and on ()
            sum (rate(apiusage_spans_processed_total[1h] offset 1d)) > 0
        """),
            "30m",
            "More spans fail a data-quality check than the day before.",
            "{{ $value | humanizePercentage }} of the spans processed in the last hour failed "
            "the {{ $labels.check }} check, more than twice the share of the same hour "
            "yesterday.",
            "data_quality",
        ),
        Alert(
            "ApiUsageLabelOverflow",
            "info",
            "pipeline",
            "sum by (metric, label) (rate(apiusage_label_overflow_total[15m])) > 0",
            "30m",
            "A metric label has hit its limit and new values are folded into __other__.",
            "{{ $labels.metric }}: new values of the {{ $labels.label }} label have been "
            "folded into __other__ for 30 minutes ({{ $value | humanize }} observations/s).",
            "overflow",
        ),
        Alert(
            "ApiUsageStateFlushFailing",
            "warning",
            "pipeline",
            dedent("""
            sum by (instance) (increase(apiusage_state_flushes_total{outcome="failure"}[10m])) > 0
            unless on (instance)
            sum by (instance) (increase(apiusage_state_flushes_total{outcome="success"}[10m])) > 0
        """),
            "5m",
            "The processor cannot write consumer activity to its state store.",
            "{{ $labels.instance }} has failed every state store flush for 15 minutes "
            "({{ $value | humanize }} failures in the last 10 minutes); activity piles up in "
            "memory and consumer metrics are going stale.",
            "flushes",
        ),
        # Followers show the leader's report age plus up to one interval, so a replica whose
        # leader stopped computing (or that nobody leads) fires here too.
        Alert(
            "ApiUsageConsumerMetricsStale",
            "warning",
            "pipeline",
            dedent("""
            time() - apiusage_state_report_timestamp_seconds
            > clamp_min(10 * apiusage_state_refresh_interval_seconds, 600)
        """),
            "5m",
            "The consumer metrics a processor exposes have not been recomputed for a while.",
            "The consumer metrics of {{ $labels.instance }} were computed {{ $value | "
            "humanizeDuration }} ago (more than 10 refresh intervals and 10 minutes): the refresh "
            "is stuck, failing or far too slow, or no replica holds the refresh lease.",
            "report_age",
        ),
        Alert(
            "ApiUsageStateRefreshSlow",
            "info",
            "pipeline",
            "apiusage_state_refresh_duration_seconds > apiusage_state_refresh_interval_seconds",
            "15m",
            "Consumer metric refreshes take longer than the refresh interval.",
            "Refreshes of the consumer metrics on {{ $labels.instance }} have taken longer than "
            "state.refresh_interval for 15 minutes (the last one {{ $value | humanizeDuration }}): "
            "the values are updated less often than configured.",
            "refresh",
        ),
        Alert(
            "ApiUsageServiceSilent",
            "warning",
            "pipeline",
            dedent("""
            avg_over_time(apiusage_service:api_requests:rate5m[6h]) * 60 >= 10
            unless on (service)
            apiusage_service:api_requests:rate5m > 0
        """),
            "10m",
            "A service that was sending requests has sent none for 15 minutes.",
            "No requests from {{ $labels.service }} have reached the processor for 15 minutes, "
            "though it averaged at least 10 requests a minute over the last 6 hours.",
            "per_service",
        ),
    ]


def alerts(slo: SloFile) -> list[Alert]:
    """Every alert, in file order."""
    return slo_alerts(slo) + api_alerts() + design_alerts() + product_alerts() + pipeline_alerts(slo)
