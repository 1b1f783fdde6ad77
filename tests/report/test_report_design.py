"""The report's Design section against a real Prometheus holding known series: three hours of
the API design families (tests/grafana/design_series.py) and of api_requests_total, backfilled
with `promtool tsdb create-blocks-from openmetrics`, so every number on the page is exact.
Requests: GET /v2/orders 2/s, POST /v2/orders 1/s, GET /v2/search 0.5/s."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apiusage.report.build import PrometheusClient, build_report, render_html
from report_support import check_renders, check_structure, has_data

from tests.grafana import design_series as series
from tests.grafana.live_support import prometheus_server

pytestmark = [pytest.mark.slow, pytest.mark.live]

STEP = 15
HOUR = 3600
# A field name that is markup: the page must show it as text (3.6 errors an hour, shown as 4).
HOSTILE = '"><script>alert(1)</script>'


def _client(name: str, method: str, route: str, status_class: str, rate: float) -> series.Counter:
    labels = {"service": series.SERVICE, "client_name": name, "method": method, "route": route}
    return series.Counter(
        "api_client_endpoint_requests_total", {**labels, "status_class": status_class}, rate
    )


# Clients that do not stand out although their 4xx share is high: no library (unknown), and a
# library with 72 requests in the hour (the guard is 100).
QUIET_CLIENTS = (
    _client("unknown", "GET", "/v2/search", "2xx", 0.2),
    _client("unknown", "GET", "/v2/search", "4xx", 0.2),
    _client("orders-sdk-py", "GET", "/v2/search", "2xx", 0.5),
    _client("orders-sdk-js", "GET", "/v2/invoices/{invoice_id}", "2xx", 0.01),
    _client("orders-sdk-js", "GET", "/v2/invoices/{invoice_id}", "4xx", 0.01),
    _client("orders-sdk-py", "GET", "/v2/invoices/{invoice_id}", "2xx", 1.0),
)
EXTRA = (
    *series.REQUESTS,
    *QUIET_CLIENTS,
    series.Counter(
        "api_validation_errors_total",
        {
            "service": series.SERVICE,
            "method": "POST",
            "route": "/v2/orders",
            "location": "body",
            "field": HOSTILE,
            "error_type": "missing",
        },
        0.001,
    ),
)


@pytest.fixture(scope="module")
def design_report(tmp_path_factory) -> tuple[str, dict[str, list[list[str]]], Path]:
    tmp = tmp_path_factory.mktemp("design-report")
    now = float(int(time.time()) // STEP * STEP - 10 * STEP)
    series.backfill(tmp / "prometheus" / "data", now - 3 * HOUR, now, STEP, EXTRA)
    with prometheus_server(tmp / "prometheus", {"global": {"scrape_interval": "15s"}}) as prom:
        client = PrometheusClient(prom.base_url)
        sections = build_report(client, HOUR, now)
        page = render_html(sections, prom.base_url, HOUR, now)
    path = tmp / "design-report.html"
    path.write_text(page, encoding="utf-8")
    return page, check_structure(page).tables, path


def test_design_section_numbers_are_exact(design_report):
    page, tables, _ = design_report
    design = tables["design"]

    assert design[0] == [
        "Endpoint",
        "Parameter",
        "Requests in the period",
        "Share of the endpoint's requests",
        "Consumers (30 days)",
    ]
    # Shares of the endpoint's requests: 0.6/s of 2/s, 0.5/s of 1/s, ...
    assert rows_after(design, "Consumers (30 days)") == [
        ["GET /v2/orders", "query.limit", "2,160", "30.0%", "8"],
        ["POST /v2/orders", "body.items", "1,800", "50.0%", "9"],
        ["GET /v2/orders", "query.status", "900", "12.5%", "3"],
        ["POST /v2/orders", "body.coupon", "180", "5.0%", "2"],
    ]
    # An endpoint whose declared parameters are all used (GET /v2/search: 0) is not listed.
    assert rows_after(design, "Declared parameters nobody sent in 30 days") == [
        ["GET /v2/orders", "orders-api", "2"],
        ["POST /v2/orders", "orders-api", "1"],
    ]
    # histogram_quantile over the size buckets (256, 1024, 4096, 16384, 65536, ...):
    # POST bodies are 40 % 200 B, 40 % 800 B, 20 % 3000 B: p50 = 256 + 0.25 x 768 = 448 B.
    assert rows_after(design, "Response p90") == [
        ["GET /v2/orders", "orders-api", "-", "-", "2.9 KiB", "40.0 KiB"],
        ["POST /v2/orders", "orders-api", "448 B", "2.5 KiB", "640 B", "947 B"],
    ]
    assert rows_after(design, "Per 100 requests") == [
        ["POST /v2/orders", "body.items.quantity", "int_parsing", "720", "20.0"],
        ["GET /v2/orders", "query.limit", "less_than_equal", "360", "5.0"],
        ["POST /v2/orders", "body.items", "missing", "180", "5.0"],
        ["POST /v2/orders", f"body.{HOSTILE}", "missing", "4", "0.1"],
    ]
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # orders-sdk-js: 20 % 4xx on POST /v2/orders, the py and go SDKs 2 %; on GET all are at 1 %.
    assert rows_after(design, "Requests in the period", header_first="Client library") == [
        ["orders-sdk-js", "POST /v2/orders", "orders-api", "20.0%", "2.0%", "3,600"]
    ]
    assert rows_after(design, "Served from") == [
        ["DE", "7,200", "5.0%", "175 ms", "eu-west-1"],
        ["US", "3,600", "5.0%", "375 ms", "us-east-1"],
        ["BR", "900", "20.0%", "900 ms", "us-east-1"],
    ]
    # Mean score of /v2/orders: (2 x 72 + 4 x 216) / 288 = 3.5; its requests: GET and POST.
    assert rows_after(design, "Requests in the period", header_first="Route") == [
        ["/v2/orders", "orders-api", "288", "3.5", "25.0%", "10,800"],
        ["(the whole API)", "orders-api", "36", "5.0", "0.0%", "-"],
    ]
    assert "6 consumers gave feedback in the last 30 days." in page


HEADERS = {"Endpoint", "Client library", "Client region", "Route"}


def rows_after(rows: list[list[str]], last_header: str, header_first: str | None = None) -> list[list[str]]:
    """The body rows of the table whose header row ends with `last_header` (and starts with
    `header_first`, when given)."""
    start = next(
        i
        for i, row in enumerate(rows)
        if row and row[-1] == last_header and (header_first is None or row[0] == header_first)
    )
    out = []
    for row in rows[start + 1 :]:
        if row[0] in HEADERS:  # the next table's header row
            break
        out.append(row)
    return out


def test_design_charts_have_data_and_render_in_chromium(design_report, tmp_path):
    page, _, path = design_report
    charts = check_structure(page).sections["design"]
    assert len(charts) == 3 and all(has_data(svg) for svg in charts)
    assert "POST /v2/orders body.items.quantity int_parsing" in charts[0]
    assert ">DE<" in charts[1] and ">score 4<" in charts[2]
    check_renders(path, tmp_path)
