"""The releases dashboard: traffic, 5xx ratio and p95 per service.version, with deploy annotations
from the release markers of the state store (api_release_first_seen_timestamp_seconds)."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard

from .alert_links import Alerts
from .kit import (
    CONTRACT,
    REPLICAS,
    Board,
    base,
    datasource_variable,
    deploy_markers,
    firing_alerts,
    q,
    service_variable,
    sum_rate,
    timeseries_panel,
    value_table,
)

_BY = "service, version"
_REQ = "api_release_requests_total"
_DUR = "api_release_request_duration_seconds_bucket"


def releases(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.RELEASES
    b = Board(uid, alerts)
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    total = sum_rate(_BY, _REQ, svc)
    errors = sum_rate(_BY, _REQ, f'{svc}, status_class="5xx"')
    b.add(
        timeseries_panel(stack=True),
        2,
        CONTRACT,
        "How far has each release rolled out? Requests per second per service.version; the "
        "orange marks are each version's first sight.",
        "reqps",
        12,
        8,
        q(total, "{{service}} {{version}}"),
    )
    b.add(
        timeseries_panel(max_value=None),
        3,
        CONTRACT,
        "Does the new release fail more than the one before? Share of its requests answered 5xx, "
        "per service.version.",
        "percentunit",
        12,
        8,
        q(
            f"({errors} or {total} * 0) / {total}",
            "{{service}} {{version}}",
        ),
    )
    b.add(
        timeseries_panel(),
        4,
        CONTRACT,
        "Is the new release slower? 95th percentile of the server-side duration per service.version.",
        "s",
        12,
        8,
        q(
            f"histogram_quantile(0.95, sum by ({_BY}, le) (rate({_DUR}{{{svc}}}[$__rate_interval])))",
            "{{service}} {{version}}",
            exemplar=False,
        ),
    )
    b.add(
        value_table("first seen"),
        5,
        CONTRACT,
        "Which releases were deployed when? The newest versions of each service (limits.max_releases) "
        "by the time the processor first saw them.",
        "dateTimeAsIso",
        12,
        8,
        q(
            f"{REPLICAS} (api_release_first_seen_timestamp_seconds{{{svc}}}) * 1000",
            "",
            instant=True,
            table_format=True,
        ),
    )
    b.add(
        value_table("5xx ratio (1h)"),
        6,
        CONTRACT,
        "On which endpoints does a release fail? 5xx ratio over the last hour per release and "
        "endpoint, where the endpoint had at least 100 requests (the regression alert's guard).",
        "percentunit",
        24,
        8,
        q(
            f"apiusage_release_route:api_release_requests_5xx:ratio_rate1h{{{svc}}}",
            "",
            instant=True,
            table_format=True,
        ),
    )

    out = base(
        "Releases (service.version): how far each has rolled out, and whether the newest one "
        "fails more or answers slower than the one before it, with a mark at each release's "
        "first sight.",
        "now-2d",
        b,
        [datasource_variable(), service_variable()],
    )
    return out.annotation(deploy_markers(svc))
