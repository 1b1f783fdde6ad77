"""The API design dashboard: which parameters and fields are used, payload sizes, validation
errors, client libraries compared on each endpoint, regions, and developer feedback."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard

from .alert_links import Alerts
from .kit import (
    CONTRACT,
    REPLICAS,
    Board,
    bargauge_panel,
    base,
    custom_variable,
    datasource_variable,
    firing_alerts,
    merged_table,
    q,
    query_variable,
    ratio_or_zero,
    service_variable,
    sum_rate,
    timeseries_panel,
    value_table,
)

ROUTE = "service, method, route"
ENDPOINT = "{{method}} {{route}} ({{service}})"
SCORES = ("1", "2", "3", "4", "5")


def mean_score(sel: str, window: str = "$__range") -> str:
    """Mean feedback score per service and route over `window`: each score's rate weighted by
    its value.  Feedback is sparse (a few events an hour), so the table reads the whole range
    shown, not the rate interval, where most instants would have none (0/0)."""
    weighted = " or ".join(f'rate(api_feedback_total{{{sel}, score="{s}"}}[{window}]) * {s}' for s in SCORES)
    return (
        f"sum by (service, route) ({weighted}) / "
        f"sum by (service, route) (rate(api_feedback_total{{{sel}}}[{window}]))"
    )


def design(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.DESIGN
    b = Board(uid, alerts)
    svc = 'service=~"$service"'
    sel = f'{svc}, route=~"$route"'
    requests = sum_rate(ROUTE, "api_requests_total", sel)
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    # Validation errors: where clients get the contract wrong.
    b.add(
        timeseries_panel(),
        2,
        CONTRACT,
        "Which endpoints do clients get wrong? Request validation errors (FastAPI/Starlette "
        "422s, one per invalid field) per request, for the ten endpoints with the most; a "
        "request with several invalid fields counts several times.",
        "short",
        12,
        8,
        q(
            f"topk(10, {ratio_or_zero(sum_rate(ROUTE, 'api_validation_errors_total', sel), requests)})",
            ENDPOINT,
        ),
    )
    b.add(
        bargauge_panel(),
        3,
        CONTRACT,
        "Which fields do clients get wrong, and how? Validation errors per second by location "
        "(body, query, path, header), field and error type (missing, int_parsing, ...), top 20.",
        "cps",
        12,
        8,
        q(
            "topk(20, sum by (method, route, location, field, error_type) "
            f"(rate(api_validation_errors_total{{{sel}}}[$__rate_interval])))",
            "{{method}} {{route}} {{location}}.{{field}} {{error_type}}",
        ),
    )
    # Client libraries side by side on the same endpoint.
    client_by = "service, client_name, method, route"
    b.add(
        timeseries_panel(max_value=1, calcs=["mean", "max"]),
        4,
        CONTRACT,
        "Does one SDK misuse an endpoint the others call fine? Share of 4xx answers per client "
        "library on each endpoint, for the 15 library-endpoint pairs with the highest share.",
        "percentunit",
        24,
        9,
        q(
            "topk(15, "
            + ratio_or_zero(
                sum_rate(client_by, "api_client_endpoint_requests_total", f'{sel}, status_class="4xx"'),
                sum_rate(client_by, "api_client_endpoint_requests_total", sel),
            )
            + ")",
            "{{client_name}}: {{method}} {{route}} ({{service}})",
        ),
    )
    # Payload sizes.
    size = "api_response_body_size_bytes"
    mean_now = f"{sum_rate(ROUTE, size + '_sum', sel)} / {sum_rate(ROUTE, size + '_count', sel)}"
    mean_then = (
        f"sum by ({ROUTE}) (rate({size}_sum{{{sel}}}[$__rate_interval] offset 1w)) / "
        f"sum by ({ROUTE}) (rate({size}_count{{{sel}}}[$__rate_interval] offset 1w))"
    )
    b.add(
        timeseries_panel(),
        5,
        CONTRACT,
        "Are responses getting heavier? Mean response body size per endpoint now, and at the "
        "same time one week earlier ('last week' in the legend).",
        "bytes",
        24,
        8,
        q(mean_now, ENDPOINT),
        q(mean_then, "last week: " + ENDPOINT, ref="B"),
    )
    for panel_id, family, what in (
        (6, "api_request_body_size_bytes", "request"),
        (7, "api_response_body_size_bytes", "response"),
    ):
        b.add(
            timeseries_panel(),
            panel_id,
            CONTRACT,
            f"How big are the {what} bodies? Median, 90th and 99th percentile of the {what} "
            "body size per endpoint (http." + what + ".body.size), from the histogram's buckets.",
            "bytes",
            12,
            8,
            *(
                q(
                    f"histogram_quantile({p}, sum by (le, {ROUTE}) "
                    f"(rate({family}_bucket{{{sel}}}[$__rate_interval])))",
                    f"p{int(p * 100)} {ENDPOINT}",
                    ref=ref,
                )
                for ref, p in (("A", 0.5), ("B", 0.9), ("C", 0.99))
            ),
        )
    # Parameters: what clients send, and what nobody does.
    b.add(
        bargauge_panel(max_value=1),
        8,
        CONTRACT,
        "Which parameters do clients send? Share of the requests to each endpoint that carried "
        "a query parameter or top-level JSON body field (names only, never values), top 20.",
        "percentunit",
        12,
        10,
        q(
            f"topk(20, sum by ({ROUTE}, location, parameter) "
            f"(rate(api_parameter_requests_total{{{sel}}}[$__rate_interval])) "
            f"/ on ({ROUTE}) group_left () {requests})",
            "{{method}} {{route}} {{location}}.{{parameter}}",
        ),
    )
    b.add(
        bargauge_panel(),
        9,
        CONTRACT,
        "How many consumers rely on each parameter? Distinct consumers who sent it in the "
        "window ($window), top 20: a parameter few consumers send is cheap to change.",
        "short",
        12,
        10,
        q(
            f'topk(20, {REPLICAS} (api_parameter_consumers{{{sel}, window="$window"}}))',
            "{{method}} {{route}} {{location}}.{{parameter}}",
        ),
    )
    b.add(
        value_table("unused parameters").show_header(True),
        10,
        CONTRACT,
        "Which declared parameters does nobody use? Per endpoint, the number of parameters and "
        "body fields the OpenAPI catalog declares that no request carried in 30 days; "
        "the admin API and the apiusage CLI list them by name.",
        "short",
        12,
        8,
        q(
            f"{REPLICAS} (api_unused_parameters{{{sel}}}) > 0",
            "",
            instant=True,
            table_format=True,
        ),
    )
    b.add(
        timeseries_panel(),
        16,
        CONTRACT,
        "Which failures does the framework report? Requests per second with an error.type "
        "(5xx answers and exceptions), per endpoint and error type.",
        "reqps",
        12,
        8,
        q(
            f"sum by ({ROUTE}, error_type) (rate(api_errors_total{{{sel}}}[$__rate_interval]))",
            "{{error_type}} " + ENDPOINT,
        ),
    )
    # Regions (client_region from trusted CDN headers, server_region from cloud.region).
    region = "api_region_request_duration_seconds_bucket"
    region_p90 = (
        f"histogram_quantile(0.9, sum by (le, client_region) (rate({region}{{{svc}}}[$__rate_interval])))"
    )
    # The region table reads the whole range shown: at one instant of a quiet API most
    # regions have no request in the rate interval (0/0).
    region_p90_range = region_p90.replace("$__rate_interval", "$__range")
    b.add(
        merged_table(
            {
                "client_region": "client region",
                "Value #A": "requests/s",
                "Value #B": "error share (4xx and 5xx)",
                "Value #C": "p90 latency (s)",
            }
        ),
        11,
        CONTRACT,
        "Where are the consumers, and how is the API for them? Per client region (ISO country "
        "code from the trusted CDN header), over the time range shown: requests per second, "
        "share of 4xx and 5xx answers, and 90th percentile latency.",
        "short",
        12,
        9,
        q(
            sum_rate("client_region", "api_region_requests_total", svc, "$__range"),
            "",
            instant=True,
            table_format=True,
        ),
        q(
            ratio_or_zero(
                sum_rate(
                    "client_region",
                    "api_region_requests_total",
                    f'{svc}, status_class=~"4xx|5xx"',
                    "$__range",
                ),
                sum_rate("client_region", "api_region_requests_total", svc, "$__range"),
            ),
            "",
            ref="B",
            instant=True,
            table_format=True,
        ),
        q(
            region_p90_range,
            "",
            ref="C",
            instant=True,
            table_format=True,
        ),
    )
    b.add(
        timeseries_panel(),
        12,
        CONTRACT,
        "Is the API slower for consumers far away? 90th percentile request duration per client region.",
        "s",
        12,
        9,
        q(
            region_p90,
            "{{client_region}}",
        ),
    )
    b.add(
        bargauge_panel(),
        17,
        "Requests by client and server region",
        "Which server regions serve which consumers? Requests per second per client region and "
        "the server region (cloud.region) that answered.",
        "reqps",
        24,
        8,
        q(
            sum_rate("client_region, server_region", "api_region_requests_total", svc),
            "{{client_region}} → {{server_region}}",
        ),
    )
    # Developer feedback next to usage.
    fb = f'{svc}, route=~"$route|"'  # feedback about the whole API has route=""
    b.add(
        timeseries_panel(bars=True, stack=True),
        13,
        CONTRACT,
        "What do developers tell us? Feedback events per second by score (1 = bad, 5 = good), "
        "stacked, from the service's own feedback endpoint.",
        "cps",
        12,
        8,
        q(f"sum by (score) (rate(api_feedback_total{{{fb}}}[$__rate_interval]))", "score {{score}}"),
    )
    b.add(
        timeseries_panel(),
        15,
        CONTRACT,
        "How many developers give feedback? Distinct consumers who sent feedback in the window ($window).",
        "short",
        12,
        8,
        q(f'{REPLICAS} (api_feedback_consumers{{{svc}, window="$window"}})', "{{service}}"),
    )
    b.add(
        merged_table(
            {
                "Value #A": "mean score",
                "Value #B": "feedback/s",
                "Value #C": "requests/s",
            }
        ),
        14,
        CONTRACT,
        "Is the feedback about the endpoints people use? Per route, over the time range shown: "
        "mean feedback score, feedback events per second, and requests per second (route "
        "empty: feedback about the whole API).",
        "short",
        24,
        9,
        q(mean_score(fb), "", instant=True, table_format=True),
        q(
            sum_rate("service, route", "api_feedback_total", fb, "$__range"),
            "",
            ref="B",
            instant=True,
            table_format=True,
        ),
        q(
            sum_rate("service, route", "api_requests_total", fb, "$__range")
            + " and on (service, route) "
            + sum_rate("service, route", "api_feedback_total", fb, "$__range"),
            "",
            ref="C",
            instant=True,
            table_format=True,
        ),
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
        custom_variable(
            "window", "Window", ["1d", "7d", "30d"], "30d", "Look-back window of the consumer counts"
        ),
    ]
    return base(
        "How the API is used as designed: parameters and body fields in use and unused, payload "
        "sizes, validation errors by field, client libraries compared on each endpoint, regions, "
        "and developer feedback next to usage.",
        "now-24h",
        b,
        variables,
    )
