"""The report's Releases section against a real Prometheus holding release_history.py's history
(the one `apiusage release-notes` is tested with), the ALERTS series ApiReleaseRegression would
have left for 1.5.0, and a release whose service and version are markup and control characters."""

from __future__ import annotations

import time

import pytest
from apiusage.report.build import PrometheusClient, build_report, render_html
from apiusage.report.sections_releases import MAX_RELEASES, releases_section
from release_history import (
    BILLING_2,
    DAY,
    END,
    HOUR,
    SERVICE,
    START,
    T0,
    T1,
    Gauge,
    backfilled_prometheus,
    history,
)
from report_support import check_structure, has_data, parse_report

pytestmark = pytest.mark.slow

HOSTILE_SERVICE = '"><script>alert(1)</script>'
HOSTILE_VERSION = "9.9\x1b[31m<b>"
ALERT = {
    "alertname": "ApiReleaseRegression",
    "alertstate": "firing",
    "severity": "warning",
    **SERVICE,
    "version": "1.5.0",
    "previous_version": "1.4.2",
    "method": "POST",
    "route": "/v2/orders",
    "signal": "error_ratio",
}


def _series() -> list:
    return [
        *history(),
        # What Prometheus writes while the alert fires: from 15 minutes after the rule matched.
        Gauge("ALERTS", ALERT, 1, T1 + HOUR),
        # Pending is no firing: not named.
        Gauge("ALERTS", {**ALERT, "alertstate": "pending", "version": "1.4.2"}, 1, T0 + HOUR),
        Gauge(
            "api_release_first_seen_timestamp_seconds",
            {"service": HOSTILE_SERVICE, "version": HOSTILE_VERSION},
            END - 3 * HOUR,
            END - 3 * HOUR,
        ),
    ]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    with backfilled_prometheus(tmp_path_factory.mktemp("reportsec-releases"), _series()) as url:
        sections = build_report(PrometheusClient(url), 7 * DAY, END)
        return render_html(sections, url, 7 * DAY, END)


def _block(html_page: str, heading: str) -> str:
    """The HTML of one release's block: from its heading to the next one (or the section's end)."""
    section = html_page.split('<section id="releases">')[1].split("</section>")[0]
    start = section.index(f"<h3>{heading}</h3>")
    end = section.find("<h3>", start + 1)
    return section[start : end if end > 0 else len(section)]


def _rows(block: str) -> list[list[str]]:
    return parse_report(f'<section id="x">{block}</section>').tables["x"]


def _notes(block: str) -> list[str]:
    import html

    return [html.unescape(n.split("</p>")[0]) for n in block.split('<p class="note">')[1:]]


def _when(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def test_every_release_of_the_period_newest_first(page):
    tables = check_structure(page).tables["releases"]
    escaped_service = "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"
    assert "<script>" not in page and escaped_service in page
    assert tables[:7] == [
        ["Service", "Release", "First seen", "Release before", "ApiReleaseRegression fired on"],
        [HOSTILE_SERVICE, "9.9\\x1b[31m<b>", _when(END - 3 * HOUR), "-", "-"],
        ["billing-api", "2.0.0", _when(BILLING_2), "1.9.0", "-"],
        ["orders-api", "1.5.0", _when(T1), "1.4.2", "5xx ratio on POST /v2/orders"],
        ["orders-api", "1.4.2", _when(T0), "1.3.0", "-"],
        ["billing-api", "1.9.0", _when(START), "-", "-"],
        ["orders-api", "1.3.0", _when(START), "-", "-"],
    ]


def test_a_release_against_the_day_before_it_as_release_notes_counts(page):
    block = _block(page, "orders-api 1.5.0")
    # The same figures as `apiusage release-notes --service orders-api --version 1.5.0`.
    assert _rows(block) == [
        ["", "1.4.2 (before)", "1.5.0 (after)", "Change"],
        ["Requests", "146,966", "146,966", "+0.0%"],
        ["Requests per hour", "6,124", "6,124", "+0.0%"],
        ["Error ratio (5xx)", "0.88%", "3.56%", "+2.67 pp"],
        ["4xx ratio", "1.18%", "1.18%", "+0.00 pp"],
        ["p95 latency", "175 ms", "458 ms", "+161.9%"],
    ]
    assert _notes(block) == [
        f"First seen {_when(T1)}, after 1.4.2. 1.5.0 from {_when(T1)} to {_when(END)}, against 1.4.2 from "
        f"{_when(T0)} to {_when(T1)}.",
        # GET /v2/search moved to 50 % 5xx but with 86 requests: guarded, not named.
        "Endpoints that changed the most: POST /v2/orders (5xx ratio 1.00% → 10.00%, p95 175 ms → 458 ms); "
        "GET /v2/orders/{order_id} (p95 24 ms → 49 ms).",
        "ApiReleaseRegression fired for 1.5.0 in the period: 5xx ratio on POST /v2/orders.",
        "The client mix and the deprecated endpoints still called: "
        "apiusage release-notes --service orders-api --version 1.5.0",
    ]


def test_a_release_against_one_with_too_little_traffic(page):
    block = _block(page, "orders-api 1.4.2")
    # 1.3.0 lived 2 hours before 1.4.2: its window is those 2 hours, 1.4.2's the day after.
    assert _rows(block) == [
        ["", "1.3.0 (before)", "1.4.2 (after)", "Change"],
        ["Requests", "36", "146,966", "-"],
        ["Requests per hour", "18", "6,124", "+33920.0%"],
        ["Error ratio (5xx)", "-", "0.88%", "-"],
        ["4xx ratio", "-", "1.18%", "-"],
        ["p95 latency", "-", "175 ms", "-"],
    ]
    assert _notes(block)[1] == (
        "1.3.0 served 36 requests in its window, fewer than 100: too little traffic for its ratios and p95 "
        "to mean anything."
    )
    assert not any(n.startswith("Endpoints that changed") for n in _notes(block))


def test_a_young_release_and_a_first_release(page):
    block = _block(page, "billing-api 2.0.0")
    assert _notes(block)[1] == (
        "2.0.0 has been seen for 22 hours (before it was replaced or until now), not a full day: "
        "each window is that long."
    )
    assert _rows(block)[1] == ["Requests", "0", "0", "-"]
    first = _block(page, "orders-api 1.3.0")
    assert _notes(first)[0] == (
        f"First seen {_when(START)}: the first release of orders-api Prometheus knows, so nothing to "
        f"compare it with. Its figures from {_when(START)} to {_when(T0)}:"
    )
    assert _rows(first) == [
        ["", "1.3.0"],
        ["Requests", "36"],
        ["Requests per hour", "18"],
        ["Error ratio (5xx)", "-"],
        ["4xx ratio", "-"],
        ["p95 latency", "-"],
    ]


def test_hostile_label_values_are_text(page):
    heading = "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt; 9.9\\x1b[31m&lt;b&gt;"
    block = _block(page, heading)
    assert "\x1b" not in page
    assert _notes(block)[0] == (
        "First seen "
        + _when(END - 3 * HOUR)
        + ": the first release of "
        + HOSTILE_SERVICE
        + " Prometheus knows, so nothing to compare it with. Its figures from "
        + f"{_when(END - 3 * HOUR)} to {_when(END)}:"
    )


def test_the_releases_chart_draws_requests_by_release(page):
    charts = check_structure(page).sections["releases"]
    assert len(charts) == 1 and has_data(charts[0])
    assert "orders-api 1.5.0" in charts[0] and "orders-api 1.4.2" in charts[0]


class _Crowd(PrometheusClient):
    """100,000 releases first seen in the period, each with a firing alert, and 100,000 lines to
    draw. (Release notes of 100,000 endpoints each: test_release_notes.py.)"""

    N = 100_000

    def __init__(self) -> None:
        super().__init__("http://prometheus.invalid")

    def targets(self) -> list[dict]:
        return []

    def query_range(self, expr, start, end, step):
        return [({"service": f"s{i}", "version": "1"}, [(start, 1.0), (end, 2.0)]) for i in range(self.N)]

    def query(self, expr: str, at: float) -> list[tuple[dict, float]]:
        if "first_seen" in expr:
            return [
                ({"service": f"s{i % 1000}<", "version": f"v{i}\n"}, END - 3 * DAY + i) for i in range(self.N)
            ]
        if "ALERTS" in expr:
            return [
                ({"service": f"s{i % 1000}<", "version": f"v{i}\n", "signal": "x"}, 1.0)
                for i in range(self.N)
            ]
        if "histogram_quantile" in expr:
            return [({}, 0.1)]
        if "api_release_requests_total" in expr or "_count" in expr:
            return [({"method": "GET", "route": f"/r/{i}", "status_class": "2xx"}, 200.0) for i in range(100)]
        raise AssertionError(expr)


def test_100000_releases_make_a_bounded_section():
    from apiusage.report.build import _Report

    started = time.monotonic()
    section = releases_section(_Report(_Crowd(), 7 * DAY, END, None))
    assert time.monotonic() - started < 60
    text = "".join(section.blocks)
    assert text.count("<h3>") == MAX_RELEASES
    assert len(text) < 200_000, len(text)
    assert "And 99980 more releases in the period." in text
    assert "\n" not in text.split("</figure>", 1)[1]
