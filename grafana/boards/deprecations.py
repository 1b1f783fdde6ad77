"""The deprecations dashboard: who still calls deprecated endpoints, sunsets, migration."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import common

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
    q,
    service_variable,
    stat_panel,
    sum_rate,
    thresholds,
    timeseries_panel,
    value_table,
)


def deprecations(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.DEPRECATIONS
    b = Board(uid, alerts)
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    b.add(
        timeseries_panel(),
        2,
        CONTRACT,
        "Who still depends on a deprecated endpoint? Distinct consumers of each deprecated "
        "endpoint in the window ($window).",
        "short",
        12,
        8,
        q(
            f'{REPLICAS} (api_deprecated_endpoint_consumers{{{svc}, window="$window"}})',
            "{{method}} {{route}}",
        ),
    )
    b.add(
        timeseries_panel(),
        3,
        CONTRACT,
        "How much traffic still goes to deprecated endpoints? Requests per second per deprecated endpoint.",
        "reqps",
        12,
        8,
        q(sum_rate("service, method, route", "api_deprecated_requests_total", svc), "{{method}} {{route}}"),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .decimals(0)
        .thresholds(thresholds((None, "red"), (30, "orange"), (90, "green"))),
        4,
        CONTRACT,
        "How long until each deprecated endpoint stops working? Days until its sunset date "
        "from the catalog; red within 30 days.",
        "d",
        12,
        6,
        q(
            f"({REPLICAS} (api_endpoint_sunset_timestamp_seconds{{{svc}}}) - time()) / 86400",
            "{{method}} {{route}}",
        ),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .decimals(0)
        .thresholds(thresholds((None, "green"), (1, "orange"))),
        6,
        CONTRACT,
        "What could be removed? Endpoints of the catalog with no request in the last 30 days, per service.",
        "short",
        12,
        6,
        q(f"{REPLICAS} (api_unused_endpoints{{{svc}}})", "{{service}}"),
    )
    b.add(
        bargauge_panel(max_value=1).thresholds(thresholds((None, "red"), (0.5, "orange"), (0.9, "green"))),
        5,
        CONTRACT,
        "How far along is the migration to the replacements? Of the consumers of each "
        "deprecated endpoint in the window ($window), the share that also called its catalog "
        "replacement since.",
        "percentunit",
        12,
        8,
        q(
            f'{REPLICAS} (api_migrated_consumers{{{svc}, window="$window"}}) '
            f'/ {REPLICAS} (api_deprecated_endpoint_consumers{{{svc}, window="$window"}} > 0)',
            "{{method}} {{route}}",
        ),
    )
    b.add(
        timeseries_panel(),
        7,
        CONTRACT,
        "Which client versions still call deprecated endpoints, so which SDK upgrade to push? "
        "Requests per second to deprecated endpoints per client and version.",
        "reqps",
        12,
        8,
        q(
            sum_rate("route, client_name, client_version", "api_deprecated_requests_total", svc),
            "{{route}}: {{client_name}} {{client_version}}",
        ),
    )
    b.add(
        timeseries_panel(max_value=None),
        8,
        "Share of traffic on deprecated endpoints",
        "What share of all requests still goes to deprecated endpoints?",
        "percentunit",
        12,
        8,
        q(
            f'(sum by (service) (rate(api_requests_total{{{svc}, deprecated="true"}}[$__rate_interval])) '
            f"or sum by (service) (rate(api_requests_total{{{svc}}}[$__rate_interval])) * 0) "
            f"/ sum by (service) (rate(api_requests_total{{{svc}}}[$__rate_interval]))",
            "{{service}}",
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        9,
        "Deprecated traffic by plan tier",
        "Which plans would a sunset hurt? Requests per second to deprecated endpoints per plan tier.",
        "reqps",
        12,
        8,
        q(sum_rate("plan_tier", "api_deprecated_requests_total", svc), "{{plan_tier}}"),
    )
    b.add(
        value_table("days since last call").decimals(1),
        10,
        "Days since the last call",
        "When was each catalog endpoint last called? Days since its last request (endpoints "
        "never called are not listed; the unused count above includes them).",
        "d",
        24,
        7,
        q(
            f"(time() - {REPLICAS} (api_endpoint_last_called_timestamp_seconds{{{svc}}})) / 86400",
            "",
            instant=True,
            table_format=True,
        ),
    )

    variables = [
        datasource_variable(),
        service_variable(),
        custom_variable(
            "window", "Window", ["1d", "7d", "30d"], "30d", "Look-back window of the consumer counts"
        ),
    ]
    return base(
        "Deprecated endpoints: who still calls them, with which clients, how long until sunset, "
        "how far the migration to their replacements has come, and which endpoints nobody uses.",
        "now-7d",
        b,
        variables,
    )
