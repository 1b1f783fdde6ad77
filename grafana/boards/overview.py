"""The API overview dashboard: traffic, errors and latency per route and plan tier; SLOs."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, heatmap, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as hm

from .alert_links import Alerts
from .kit import (
    CONTRACT,
    SLO_WINDOW,
    Board,
    bargauge_panel,
    base,
    client_error_ratio,
    datasource_variable,
    error_ratio,
    firing_alerts,
    q,
    query_variable,
    service_variable,
    stat_panel,
    sum_rate,
    thresholds,
    timeseries_panel,
    value_map,
)


def overview(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.OVERVIEW
    b = Board(uid, alerts)
    sel = 'service=~"$service", route=~"$route", plan_tier=~"$plan_tier"'
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    b.add(
        timeseries_panel(),
        2,
        CONTRACT,
        "How much traffic does each endpoint get? API requests per second by service, method "
        "and route (weighted by sampling), for the selected services, routes and plan tiers.",
        "reqps",
        12,
        8,
        q(
            f"sum by (service, method, route) (rate(api_requests_total{{{sel}}}[$__rate_interval]))",
            "{{method}} {{route}} ({{service}})",
        ),
    )
    b.add(
        timeseries_panel(max_value=None),
        3,
        CONTRACT,
        "Which endpoints fail? The share of requests answered with a 5xx status, by service and "
        "route; 0 when there are none.",
        "percentunit",
        12,
        8,
        q(error_ratio("service, method, route", sel), "{{method}} {{route}} ({{service}})"),
    )
    b.add(
        timeseries_panel(),
        4,
        CONTRACT,
        "How slow is each endpoint? The 50th, 95th and 99th percentile of server-side request "
        "duration by route, from api_request_duration_seconds. Exemplars (dots) link a slow "
        "bucket to a trace in the trace backend.",
        "s",
        12,
        8,
        *(
            q(
                f"histogram_quantile({p}, sum by (le, service, route) "
                f"(rate(api_request_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
                f"p{int(p * 100)} {{{{route}}}} ({{{{service}}}})",
                ref=ref,
                exemplar=True,
            )
            for ref, p in (("A", 0.5), ("B", 0.95), ("C", 0.99))
        ),
    )
    b.add(
        timeseries_panel(),
        12,
        "Latency p95 by plan tier",
        "Do paying customers get the latency they pay for? The 95th percentile of request "
        "duration per plan tier. Exemplars link to traces.",
        "s",
        12,
        8,
        q(
            f"histogram_quantile(0.95, sum by (le, plan_tier) "
            f"(rate(api_request_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
            "p95 {{plan_tier}}",
            exemplar=True,
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        11,
        CONTRACT,
        "Which plan tiers drive the traffic? Requests per second per plan tier, stacked.",
        "reqps",
        8,
        8,
        q(f"sum by (plan_tier) (rate(api_requests_total{{{sel}}}[$__rate_interval]))", "{{plan_tier}}"),
    )
    b.add(
        timeseries_panel(max_value=None),
        16,
        "Error ratio (5xx) by plan tier",
        "Do server errors hit some plans more than others? The share of requests answered with a "
        "5xx status, per plan tier.",
        "percentunit",
        8,
        8,
        q(error_ratio("plan_tier", sel), "{{plan_tier}}"),
    )
    b.add(
        timeseries_panel(),
        5,
        CONTRACT,
        "Is traffic unusually low or high? Total requests per second now, and at the same time "
        "one week earlier.",
        "reqps",
        8,
        8,
        q(f"sum(rate(api_requests_total{{{sel}}}[$__rate_interval]))", "now"),
        q(f"sum(rate(api_requests_total{{{sel}}}[$__rate_interval] offset 1w))", "one week earlier", ref="B"),
    )
    b.add(
        heatmap.Panel()
        .calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
        )
        .y_axis(heatmap.YAxisConfig().unit("s").axis_placement(common.AxisPlacement.LEFT))
        .cell_values(heatmap.CellValues().unit("reqps"))
        .exemplars_color("rgba(255,0,255,0.7)")
        .show_legend()
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE)),
        13,
        "Latency distribution",
        "Where do request durations fall, and did a latency spike hit everyone or a few? The "
        "distribution of request duration over time (requests per second per bucket). Exemplars "
        "link individual slow requests to their traces.",
        "s",
        8,
        8,
        q(
            f"sum by (le) (rate(api_request_duration_seconds_bucket{{{sel}}}[$__rate_interval]))",
            "{{le}}",
            heatmap_format=True,
            exemplar=True,
        ),
    )
    b.add(
        bargauge_panel("mean"),
        14,
        "Top endpoints by traffic",
        "Which endpoints are used most? The ten busiest routes, by mean requests per second over "
        "the time range.",
        "reqps",
        8,
        8,
        q(
            f"topk(10, {sum_rate('service, method, route', 'api_requests_total', sel)})",
            "{{method}} {{route}} ({{service}})",
        ),
    )
    b.add(
        bargauge_panel("mean", max_value=1),
        6,
        CONTRACT,
        "Where do clients struggle? The ten routes with the highest share of 4xx answers "
        "(authentication, validation, not found), mean over the time range: client friction, "
        "documentation or SDK problems.",
        "percentunit",
        8,
        8,
        q(
            f"topk(10, {error_ratio('service, method, route', sel, codes='4..')})",
            "{{method}} {{route}} ({{service}})",
        ),
    )

    # SLO objectives and burn rates come from the recording rules `apiusage rules` generates
    # from prometheus/slo.yaml (alert_rules/slo.rules.yml), so the panels show exactly what
    # the burn-rate alerts evaluate, with each service's own objective.
    objective = f"apiusage_service:slo_availability:objective{{{svc}}}"
    budget_30d = f"{error_ratio('service', svc, window=SLO_WINDOW)} / on (service) (1 - {objective})"

    def burn_lines() -> timeseries.Panel:
        steps = thresholds((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red"))
        return (
            timeseries_panel()
            .thresholds(steps)
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
            )
        )

    b.add(
        burn_lines(),
        7,
        CONTRACT,
        "How fast is the availability error budget being spent? The 5xx ratio divided by the "
        "budget (1 − the service's availability objective in prometheus/slo.yaml), over the "
        "alert windows: 1 spends the 30-day budget exactly in 30 days, 6 in 5 days (ticket), "
        "14.4 in 2 days (page). Per route where the SLO file sets route objectives.",
        "short",
        12,
        8,
        q(f"apiusage_service:slo_errors:burnrate1h{{{svc}}}", "{{service}} 1h"),
        q(f"apiusage_service:slo_errors:burnrate6h{{{svc}}}", "{{service}} 6h", ref="B"),
        q(
            f'apiusage_route:slo_errors:burnrate1h{{{svc}, route=~"$route"}}',
            "{{method}} {{route}} 1h",
            ref="C",
        ),
        q(f"{error_ratio('service', svc)} / on (service) (1 - {objective})", "{{service}} now", ref="D"),
    )
    b.add(
        burn_lines(),
        8,
        CONTRACT,
        "How fast is the latency error budget being spent? The share of requests slower than the "
        "service's latency threshold, divided by its budget (1 − latency objective), over the "
        "alert windows; above 1 the latency SLO will be missed.",
        "short",
        12,
        8,
        q(f"apiusage_service:slo_latency:burnrate1h{{{svc}}}", "{{service}} 1h"),
        q(f"apiusage_service:slo_latency:burnrate6h{{{svc}}}", "{{service}} 6h", ref="B"),
        q(
            f'apiusage_route:slo_latency:burnrate1h{{{svc}, route=~"$route"}}',
            "{{method}} {{route}} 1h",
            ref="C",
        ),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("Met", "green"), "0": ("Violated", "red")})])
        .thresholds(thresholds((None, "red"), (1, "green"))),
        15,
        "SLO status",
        "Are the SLOs met? Availability: the share of non-5xx requests over 30 days against the "
        "service's objective. Latency: the latency budget burn rate over 3 days at most 1.",
        "bool",
        12,
        6,
        q(
            f"(1 - {error_ratio('service', svc, window=SLO_WINDOW)}) >= bool on (service) {objective}",
            "{{service}} availability",
        ),
        q(f"apiusage_service:slo_latency:burnrate3d{{{svc}}} <= bool 1", "{{service}} latency", ref="B"),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .thresholds(thresholds((None, "red"), (0.25, "orange"), (0.5, "green")))
        .min(-1)
        .max(1),
        9,
        CONTRACT,
        "How much of the availability error budget is left? 1 − (5xx ratio over 30 days ÷ the "
        "budget, 1 − the service's objective). 100 % untouched, 0 % spent, negative overspent.",
        "percentunit",
        12,
        6,
        q(f"1 - {budget_30d}", "{{service}}"),
    )
    b.add(
        timeseries_panel(max_value=None),
        10,
        CONTRACT,
        "Does a client SDK version fail more than others? Share of 4xx and 5xx answers per client "
        "and version (from X-Client-Name/X-Client-Version or the User-Agent).",
        "percentunit",
        24,
        8,
        q(client_error_ratio(svc, "5xx"), "5xx {{client_name}} {{client_version}}"),
        q(client_error_ratio(svc, "4xx"), "4xx {{client_name}} {{client_version}}", ref="B"),
    )

    variables = [
        datasource_variable(),
        service_variable(),
        query_variable(
            "route",
            "Route",
            'label_values(api_requests_total{service=~"$service"}, route)',
            "Route template (http.route)",
        ),
        query_variable(
            "plan_tier",
            "Plan tier",
            'label_values(api_requests_total{service=~"$service"}, plan_tier)',
            "The consumer's plan tier",
        ),
    ]
    return base(
        "Traffic, errors and latency of the API per route and plan tier; SLOs and error budget.",
        "now-6h",
        b,
        variables,
    )
