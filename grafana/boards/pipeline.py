"""The pipeline health dashboard: the apiusage processor itself."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import common

from .alert_links import Alerts
from .kit import (
    CONTRACT,
    Board,
    base,
    datasource_variable,
    firing_alerts,
    q,
    query_variable,
    stat_panel,
    sum_rate,
    thresholds,
    timeseries_panel,
    value_map,
)


def pipeline(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.PIPELINE
    b = Board(uid, alerts)
    sel = 'job=~"$job", instance=~"$instance"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=False)

    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("Up", "green"), "0": ("Down", "red")})])
        .thresholds(thresholds((None, "red"), (1, "green"))),
        2,
        CONTRACT,
        "Is every processor replica being scraped? Prometheus's up series for the processor's "
        "scrape job, per instance.",
        "none",
        8,
        5,
        q(f"up{{{sel}}}", "{{instance}}"),
    )
    b.add(
        stat_panel(graph=True).thresholds(thresholds((None, "green"), (300, "red"))),
        13,
        CONTRACT,
        "Are the consumer metrics fresh? Seconds since they were last computed (every "
        "state.refresh_interval; on a replica that does not hold the refresh lease, by the one "
        "that does).",
        "s",
        8,
        5,
        q(f"time() - apiusage_state_report_timestamp_seconds{{{sel}}}", "{{instance}}"),
    )
    b.add(
        stat_panel(graph=True).thresholds(thresholds((None, "green"), (1, "red"))),
        14,
        "Processing errors",
        "Did derivation lose spans to an internal error? Spans lost per second (should be 0; see "
        "the processor's log).",
        "cps",
        8,
        5,
        q(f"sum(rate(apiusage_processing_errors_total{{{sel}}}[$__rate_interval]))", "errors"),
    )
    b.add(
        timeseries_panel(),
        3,
        CONTRACT,
        "Is telemetry arriving, and is any refused? Spans received per transport, and spans "
        "rejected per reason (the exporter was told; queue_full means back-pressure).",
        "cps",
        12,
        8,
        q(
            f"sum by (transport) (rate(apiusage_spans_received_total{{{sel}}}[$__rate_interval]))",
            "received {{transport}}",
        ),
        q(
            f"sum by (reason) (rate(apiusage_spans_rejected_total{{{sel}}}[$__rate_interval]))",
            "rejected {{reason}}",
            ref="B",
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        8,
        CONTRACT,
        "Which services send API request spans? Requests derived per second, per service.",
        "reqps",
        12,
        8,
        q(f"sum by (service) (rate(api_requests_total{{{sel}}}[$__rate_interval]))", "{{service}}"),
    )
    b.add(
        timeseries_panel(max_value=1),
        4,
        CONTRACT,
        "Is the processor keeping up? Spans waiting for derivation as a share of the queue "
        "capacity, per instance; at 100 % new exports are refused.",
        "percentunit",
        12,
        8,
        q(f"apiusage_queue_spans{{{sel}}} / apiusage_queue_capacity_spans{{{sel}}}", "{{instance}}"),
    )
    b.add(
        timeseries_panel(),
        9,
        CONTRACT,
        "How long does a batch wait and get processed? Median and 99th percentile of the time "
        "from an export's arrival to the end of its derivation.",
        "s",
        12,
        8,
        *(
            q(
                f"histogram_quantile({p}, sum by (le) "
                f"(rate(apiusage_processing_latency_seconds_bucket{{{sel}}}[$__rate_interval])))",
                f"p{int(p * 100)}",
                ref=ref,
            )
            for ref, p in (("A", 0.5), ("B", 0.99))
        ),
    )
    b.add(
        timeseries_panel(),
        5,
        CONTRACT,
        "Are the services' spans complete and sane? Spans per second with a data-quality "
        "problem, per check (missing route, consumer or status code, clock skew, ...).",
        "cps",
        12,
        8,
        q(sum_rate("check", "apiusage_data_quality_issues_total", sel), "{{check}}"),
    )
    b.add(
        timeseries_panel(),
        6,
        CONTRACT,
        "Did a label hit its cardinality limit? Observations per second folded into __other__, "
        "per metric and label.",
        "cps",
        12,
        8,
        q(
            f"sum by (metric, label) (rate(apiusage_label_overflow_total{{{sel}}}[$__rate_interval]))",
            "{{metric}} {{label}}",
        ),
    )
    b.add(
        timeseries_panel(),
        7,
        CONTRACT,
        "Is consumer state being written? Flushes per second by outcome; any failure keeps rows "
        "in memory until the store accepts them again.",
        "ops",
        12,
        8,
        q(sum_rate("outcome", "apiusage_state_flushes_total", sel), "{{outcome}}"),
    )
    b.add(
        timeseries_panel(),
        15,
        "Pending state rows",
        "How much consumer activity waits for the next flush? Deduplicated rows in memory, per instance.",
        "short",
        12,
        8,
        q(f"apiusage_state_pending_rows{{{sel}}}", "{{instance}}"),
    )
    b.add(
        timeseries_panel(),
        19,
        CONTRACT,
        "Does the consumer-metrics refresh keep up? Duration of the last refresh per instance "
        "(the running one while it is longer; a replica without the refresh lease only loads the "
        "published report), against state.refresh_interval.",
        "s",
        12,
        8,
        q(f"apiusage_state_refresh_duration_seconds{{{sel}}}", "{{instance}}"),
        q(f"max(apiusage_state_refresh_interval_seconds{{{sel}}})", "refresh interval", ref="B"),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("Computes", "green"), "0": ("Serves the published report", "blue")})])
        .thresholds(thresholds((None, "blue"), (1, "green"))),
        20,
        CONTRACT,
        "Which replica computes the consumer metrics? 1 on the replica holding the refresh lease "
        "(PostgreSQL: one per shared store; SQLite: every processor), 0 on those serving what it "
        "published. No replica at 1 on a shared store: nobody computes, and the metrics age.",
        "none",
        12,
        8,
        q(f"apiusage_state_refresh_leader{{{sel}}}", "{{instance}}"),
    )
    b.add(
        timeseries_panel(),
        10,
        "Export requests by outcome",
        "What do OTLP exporters get told? Export requests answered per second, by transport and "
        "outcome (success, partial, invalid, queue_full, ...).",
        "ops",
        12,
        8,
        q(
            f"sum by (transport, outcome) (rate(apiusage_export_requests_total{{{sel}}}[$__rate_interval]))",
            "{{transport}} {{outcome}}",
        ),
    )
    b.add(
        timeseries_panel(),
        11,
        "Spans ignored by reason",
        "How many spans are not API requests? Spans per second skipped because they are not "
        "SERVER spans or carry no HTTP method.",
        "cps",
        12,
        8,
        q(f"sum by (reason) (rate(apiusage_spans_ignored_total{{{sel}}}[$__rate_interval]))", "{{reason}}"),
    )
    b.add(
        timeseries_panel(),
        12,
        "Live series per metric",
        "How many series does each request metric hold? Live series per metric family "
        "(bounded by the label limits and the series TTL).",
        "short",
        12,
        8,
        q(f"sum by (metric) (apiusage_series{{{sel}}})", "{{metric}}"),
    )
    b.add(
        timeseries_panel(),
        17,
        CONTRACT,
        "Is the processor refusing data to protect its memory? Export requests refused per second "
        "by the memory limiter (processors.memory_limiter), per instance; exporters retry them.",
        "ops",
        12,
        8,
        q(
            f"sum by (instance) (rate(apiusage_memory_limiter_refusals_total{{{sel}}}[$__rate_interval]))",
            "{{instance}}",
        ),
    )
    b.add(
        timeseries_panel(),
        18,
        CONTRACT,
        "How close is the processor to its memory ceiling? Resident memory per instance, and the "
        "soft limit above which new data is refused.",
        "bytes",
        12,
        8,
        q(f"process_resident_memory_bytes{{{sel}}}", "RSS {{instance}}"),
        q(f"apiusage_memory_limit_bytes{{{sel}}}", "limit {{instance}}", ref="B"),
    )
    b.add(
        timeseries_panel(),
        16,
        "Traces forwarded to the trace backend",
        "Do traces reach the trace backend, so exemplars open a trace? OTLP requests forwarded "
        "per second by outcome (exporters.otlp), and the forwarding queue.",
        "ops",
        12,
        8,
        q(
            f"sum by (outcome) (rate(apiusage_forwarded_requests_total{{{sel}}}[$__rate_interval]))",
            "{{outcome}}",
        ),
        q(f"sum(apiusage_forward_queue_requests{{{sel}}})", "queued", ref="B"),
    )

    variables = [
        datasource_variable(),
        query_variable(
            "job", "Job", "label_values(apiusage_build_info, job)", "Prometheus scrape job of the processor"
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(apiusage_build_info{job=~"$job"}, instance)',
            "Processor replica",
        ),
    ]
    return base(
        "The apiusage processor itself: spans in and refused, queue, data quality, label limits, "
        "state store and trace forwarding.",
        "now-1h",
        b,
        variables,
    )
