"""The HTML usage report from canned Prometheus answers: sections, charts, numbers, coverage, failures.

The report against a real Prometheus (the demo's) is tested in tests/demo/test_demo_run.py, its
Design section against a real Prometheus holding known series in test_report_design.py.
"""

from __future__ import annotations

import math
import re
import socket
import subprocess

import pytest
from apiusage.report import build
from apiusage.report.build import (
    PrometheusClient,
    PrometheusError,
    Report,
    build_report,
    render_html,
)
from apiusage.report.charts import bar_chart, heatmap, line_chart
from report_support import check_renders, check_structure, has_data, parse_report

from tests.support.processor import apiusage_command

NOW = 1_795_600_000.0
WEEK = 7 * 86400
TIERS = {"enterprise": 4, "pro": 10, "free": 26}
RUNBOOK = "http://127.0.0.1:9464/runbooks/ApiErrorBudgetBurnFast"


class FakePrometheus(PrometheusClient):
    """Answers the report's queries from canned series; records what was asked."""

    def __init__(self, data_start: float | None = None, fail: str | None = None) -> None:
        super().__init__("http://prometheus.invalid:9090")
        self.data_start = data_start
        self.fail = fail
        self.first_step_after = 3.0  # when the report's steps first see data, after data_start
        self.sparse_since: float | None = None
        self.ranges: list[tuple[str, float, float, float]] = []
        self.instant: list[str] = []

    def _maybe_fail(self, expr: str) -> None:
        if self.fail and self.fail in expr:
            raise PrometheusError(f"Prometheus refused {expr!r}: boom")

    def check(self) -> None:
        pass

    def targets(self) -> list[dict]:
        return [{"scrapeInterval": "15s"}, {"scrapeInterval": "1m"}]

    def alerts(self) -> list[dict]:
        return [
            {
                "state": "firing",
                "labels": {
                    "alertname": "ApiErrorBudgetBurnFast",
                    "severity": "critical",
                    "service": "orders-api",
                },
                "annotations": {
                    "summary": "An API is burning its error budget fast.",
                    "runbook_url": RUNBOOK,
                },
            },
            {
                "state": "pending",
                "labels": {"alertname": "ApiTrafficDrop", "severity": "warning"},
                "annotations": {},
            },
        ]

    def query_range(self, expr, start, end, step):
        self._maybe_fail(expr)
        self.ranges.append((expr, start, end, step))
        first = max(start, self.data_start or start)
        points = [first + i * step for i in range(int((end - first) // step) + 1)]
        if "plan_tier" in expr:
            return [
                ({"plan_tier": t}, [(p, n + math.sin(p / 3600)) for p in points]) for t, n in TIERS.items()
            ]
        return [({"service": "orders-api"}, [(p, 20 + 5 * math.sin(p / 7200)) for p in points])]

    def query(self, expr, at):
        self._maybe_fail(expr)
        self.instant.append(expr)
        if expr.startswith("min_over_time(timestamp(count(api_requests_total"):
            start = self.data_start if self.data_start is not None else at - 30 * 86400
            return [({}, start + self.first_step_after)]
        if expr.startswith("count(last_over_time(api_requests_total"):
            # Samples before `at`: a history sampled sparsely from `sparse_since` on, or data_start.
            since = self.sparse_since if self.sparse_since is not None else self.data_start
            return [({}, 1.0)] if since is None or since < at else []
        if "api_active_consumers" in expr:
            if expr.startswith("sum("):
                return [({}, 40.0)]
            return [
                ({"plan_tier": t, "window": w}, float(n - k))
                for t, n in TIERS.items()
                for k, w in enumerate(("30d", "7d", "1d"))
            ]
        if "api_new_consumers_total" in expr:
            return [({"plan_tier": "free"}, 2.19), ({"plan_tier": "pro"}, 0.97)]
        if "api_feature_consumers" in expr:
            return [({"feature": f}, float(n)) for f, n in (("orders", 30), ("exports", 12))]
        if "api_client_version_consumers" in expr:
            return [
                ({"client_name": "shop-sdk-js", "client_version": "4.0.0"}, 11.0),
                ({"client_name": "shop-sdk-js", "client_version": "3.2.0"}, 4.0),
            ]
        if "api_cohort_retention_ratio" in expr:
            weeks = ["2026-10-19", "2026-10-26", "2026-11-02"]
            return [
                ({"cohort_week": w, "weeks_since": str(s)}, 1.0 if s == 0 else 0.8 / s)
                for i, w in enumerate(weeks)
                for s in range(len(weeks) - i)
            ]
        if "api_time_to_first_success_seconds_bucket" in expr:
            return [
                ({"plan_tier": "free"}, 2400.0),
                ({"plan_tier": "pro"}, 600.0),
                ({"plan_tier": "enterprise"}, float("nan")),
            ]
        if "api_consumers_at_risk" in expr:
            return (
                [({}, 5.0)]
                if expr.startswith("sum(")
                else [({"plan_tier": "free"}, 3.0), ({"plan_tier": "pro"}, 2.0)]
            )
        if "api_deprecated_endpoint_consumers" in expr:
            if expr.startswith("sum("):
                return [({}, 9.0)]
            return [
                ({"service": "orders-api", "method": "DELETE", "route": "/v1/orders/{order_id}"}, 9.0),
                ({"service": "orders-api", "method": "GET", "route": "/v1/legacy/export"}, 0.0),
            ]
        if "api_endpoint_sunset_timestamp_seconds" in expr:
            return [
                (
                    {"service": "orders-api", "method": "DELETE", "route": "/v1/orders/{order_id}"},
                    at + 30 * 86400,
                )
            ]
        if "api_migrated_consumers" in expr:
            return [({"service": "orders-api", "method": "DELETE", "route": "/v1/orders/{order_id}"}, 4.0)]
        if "api_deprecated_requests_total" in expr:
            return [({"method": "DELETE", "route": "/v1/orders/{order_id}"}, 1234.4)]
        if "api_requests_total" in expr:
            if 'status_code=~"5.."' in expr:
                return [({}, 120.0)]
            if 'status_code=~"4.."' in expr:
                return [
                    ({"method": "GET", "route": "/v2/orders/{order_id}"}, 18.2),
                    ({"method": "POST", "route": "/v2/orders"}, 0.3),
                ]
            if expr.startswith("topk"):
                return [
                    ({"method": "GET", "route": "/v2/orders"}, 781.6),
                    ({"method": "GET", "route": "/v1/orders"}, 188.2),
                ]
            if "by (plan_tier)" in expr:
                return [({"plan_tier": t}, n * 100.4) for t, n in TIERS.items()]
            return [({}, 4000.0)]
        return []


def report(client: FakePrometheus, range_seconds: int = WEEK) -> tuple[Report, str]:
    sections = build_report(client, range_seconds, NOW)
    return sections, render_html(sections, client.base_url, range_seconds, NOW)


def test_every_section_with_its_charts_tables_and_key_figures():
    sections, page = report(FakePrometheus())
    parsed = check_structure(page)
    for section, svgs in parsed.sections.items():
        # The canned answers have no API design families: test_report_design.py has them, live.
        assert all(has_data(svg) for svg in svgs) or section == "design", section
    glance = dict(sections.glance)
    assert glance == {
        "Requests in the period": "4,000",
        "Active consumers, last 7 days": "40",
        "Consumers on deprecated endpoints (30 days)": "9",
        "Consumers at risk": "5",
        "Share of requests answered 5xx": "3.00%",
        "Alerts firing now": "1",
    }
    assert "The last 7 days up to 2026-11-25 09:46 UTC" in page
    tables = parsed.tables
    # Counts are whole numbers, however increase() extrapolated them.
    assert ["free", "2"] in tables["adoption"] and ["pro", "1"] in tables["adoption"]
    assert [
        "Plan tier",
        "Active consumers, last 1d",
        "Active consumers, last 7d",
        "Active consumers, last 30d",
    ] in tables["adoption"]
    assert ["free", "24", "25", "26"] in tables["adoption"]
    assert ["DELETE /v1/orders/{order_id}", "orders-api", "9", "4", "30"] in tables["deprecations"]
    assert [
        "ApiErrorBudgetBurnFast",
        "critical",
        "orders-api",
        "An API is burning its error budget fast.",
        RUNBOOK,
    ] in tables["firing-alerts"]
    assert f'<a href="{RUNBOOK}">' in page  # the runbook opens from the report
    friction = parsed.sections["reliability"][2]
    assert "18" in friction and "POST /v2/orders" not in friction  # rounded; zero bars dropped
    heat = parsed.sections["adoption"][3]
    assert heat.count("<rect x=") == 6 and "80.0%" in heat and "40.0%" in heat


def test_charts_start_where_prometheus_data_starts():
    client = FakePrometheus(data_start=NOW - 600)
    sections, page = report(client)
    assert "Prometheus holds API metrics only since 2026-11-25 09:36 UTC" in sections.coverage
    assert sections.coverage in page
    for expr, start, end, step in client.ranges:
        assert NOW - 610 <= start <= NOW - 595 and end == NOW
        assert step == 5
        # $__rate_interval: max(step + scrape interval, 4 scrape intervals), longest target: 1m.
        if "rate(" in expr:
            assert "[240s]" in expr, expr
    # Totals still cover the period asked for.
    assert any("[10080m]" in e for e in client.instant)


def test_a_sparse_history_before_the_first_step_with_data_is_not_a_young_prometheus():
    # The demo's backfill: samples 6 h apart, so the report's 5-minute steps first see one 6 h
    # after the period starts; the sample before the start still says Prometheus holds it. The
    # report once said "holds API metrics only since" the second sample.
    client = FakePrometheus(data_start=NOW - WEEK + 6 * 3600)
    client.sparse_since = NOW - WEEK - 60
    sections, page = report(client, range_seconds=WEEK)
    assert sections.coverage == ""
    assert "only since" not in page
    assert {start for _, start, _, _ in client.ranges} == {NOW - WEEK}


def test_whole_period_when_prometheus_holds_it():
    client = FakePrometheus()
    sections, page = report(client, range_seconds=WEEK)
    assert sections.coverage == ""
    assert "only since" not in page
    assert {start for _, start, _, _ in client.ranges} == {NOW - WEEK}
    assert {step for _, _, _, step in client.ranges} == {WEEK // 120}
    assert all(f"[{WEEK // 120 + 60}s]" in e for e, *_ in client.ranges if "rate(" in e)


@pytest.mark.parametrize(
    ("family", "title"),
    [
        ("api_cohort_retention_ratio", "Adoption"),
        ("api_release_first_seen_timestamp_seconds", "Releases"),
        ("ALERTS", "Releases"),
        ("api_experiment_p_value", "Experiments"),
    ],
)
def test_a_section_whose_queries_fail_says_so_and_the_rest_is_built(family, title):
    sections, page = report(FakePrometheus(fail=family))
    titles = [s.title for s in sections]
    assert titles == list(build.SECTIONS)
    failed = sections[titles.index(title)]
    assert failed.question == "" and "could not be built" in "".join(failed.blocks)
    assert "boom" in page
    assert all(s.question for s in sections if s.title != title)


def test_the_service_filter_is_a_promql_string_in_every_query():
    client = FakePrometheus()
    build_report(client, WEEK, NOW, 'orders"} or vector(1) #\\')
    queries = client.instant + [e for e, *_ in client.ranges]
    assert len(queries) > 50
    for expr in queries:  # a quote in the name once ended the matcher and broke every query
        assert 'service="orders\\"} or vector(1) #\\\\"' in expr, expr


@pytest.mark.parametrize(
    "seconds, text",
    [
        (3600, "1 hour"),
        (43200, "12 hours"),
        (WEEK, "7 days"),
        (86400, "1 day"),
        (5400, "90 minutes"),
        (1209600, "14 days"),
        (161, "2.7 minutes"),  # once "2.68333 minutes"
        (131_400, "36.5 hours"),
        (59.6, "60 seconds"),
    ],
)
def test_period_in_words(seconds, text):
    assert build._duration_text(seconds) == text


@pytest.mark.parametrize(
    "text, seconds", [("15s", 15), ("1m", 60), ("1m30s", 90), ("2h", 7200), ("", 0), ("fast", 0), ("10", 0)]
)
def test_scrape_interval_parsing(text, seconds):
    assert build._seconds(text) == seconds


def test_charts_are_standalone_svg_with_readable_units():
    line = line_chart([("a", [(NOW, 0.5), (NOW + 300, 0.25)])], unit="seconds")
    assert "500 ms" in line and ">09:46:40<" in line  # a five-minute span is labelled to the second
    assert re.search(r">\d\d:\d\d:\d\d<", line)
    bars = bar_chart([("free", 2400.0)], unit="seconds")
    assert "40.0 min" in bars
    assert "no data" in heatmap([], [], {}) and "no data" in line_chart([]) and "no data" in bar_chart([])


@pytest.mark.live
def test_report_renders_in_headless_chromium(tmp_path):
    _, page = report(FakePrometheus(data_start=NOW - 3 * 86400))
    path = tmp_path / "report.html"
    path.write_text(page, encoding="utf-8")
    rendered = check_renders(path, tmp_path)
    assert rendered.images == 16


def test_cli_says_where_prometheus_was_looked_for(tmp_path):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "r.html"
    result = subprocess.run(
        [*apiusage_command(), "report", "--prometheus", f"http://127.0.0.1:{port}", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert f"cannot reach Prometheus at http://127.0.0.1:{port}" in result.stderr
    assert "--prometheus" in result.stderr
    assert not out.exists()


def test_parse_report_reads_tables_and_charts():
    page = parse_report(
        '<section id="x"><table><tr><th>a</th></tr><tr><td>b <a href="u">c</a></td></tr></table></section>'
    )
    assert page.tables == {"x": [["a"], ["b c"]]} and page.sections == {"x": []}
