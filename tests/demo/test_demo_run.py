"""`apiusage demo` end to end, as a newcomer runs it: one demo for the module, stopped by Ctrl-C last.

Real processes throughout: the processor, the demo API under opentelemetry-instrument,
the traffic generator, Debian's Prometheus and Alertmanager, and Chromium for the report.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_support import Demo, need_monitoring, needs_issue15, start_demo, wait_gone

from tests.report.report_support import SECTION_IDS, check_renders, check_structure, has_data
from tests.support.processor import apiusage_command, get, matching, parse_metrics, sample

pytestmark = [pytest.mark.slow, pytest.mark.live]

TIERS = ("enterprise", "pro", "free")
DEPRECATED = {"method": "DELETE", "route": "/v1/orders/{order_id}"}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Iterator[Demo]:
    need_monitoring()
    folder = tmp_path_factory.mktemp("demo") / "run"
    # --duration bounds the run should a test hang; the last test stops it with SIGINT long before.
    running = start_demo(folder, "--duration", "240", "--summary-every", "2")
    try:
        running.wait_running(timeout=90)
        yield running
    finally:
        if running.process.poll() is None:
            running.interrupt(60)
        running.kill_everything()


def _json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def _scrape(demo: Demo) -> dict:
    status, body, _ = get(demo.urls["metrics"])
    assert status == 200
    return parse_metrics(body.decode())


def _by_tier(samples: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in matching(samples, "api_requests_total").items():
        tier = dict(labels)["plan_tier"]
        out[tier] = out.get(tier, 0) + value
    return out


def test_prints_what_runs_where_and_every_url_answers(demo):
    assert set(demo.urls) == {"demo API", "metrics", "runbooks", "Prometheus", "Alertmanager"}, demo.output
    for name, url in demo.urls.items():
        assert urllib.parse.urlsplit(url).hostname == "127.0.0.1", (name, url)
        status, body, _ = get(url, timeout=10)
        assert status == 200, (name, url, body[:300])
    assert demo.otlp is not None
    for port in demo.otlp:  # OTLP is not browsable: the ports accept connections
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
    status, _, _ = get(demo.urls["metrics"].replace("/metrics", "/v1/traces"))
    assert status == 404  # the metrics port is not the OTLP/HTTP one: the table says which is which
    out = demo.output
    assert "history: 100%" in out and "stored and counted" in out
    assert "orders-api under opentelemetry-instrument" in out


def test_metrics_show_live_traffic_of_every_plan_tier_and_the_history(demo):
    before = _by_tier(_scrape(demo))
    assert set(TIERS) <= set(before), before
    deadline = time.monotonic() + 30
    while True:  # live traffic: every tier's requests keep growing
        samples = _scrape(demo)
        after = _by_tier(samples)
        if all(after[t] > before[t] for t in TIERS) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert all(after[t] > before[t] for t in TIERS), (before, after)
    for tier in TIERS:
        active = matching(samples, "api_active_consumers", plan_tier=tier, window="30d")
        assert sum(active.values()) > 0, tier
    deprecated = matching(samples, "api_deprecated_endpoint_consumers", window="30d", **DEPRECATED)
    assert sum(deprecated.values()) > 0, deprecated
    assert sum(matching(samples, "api_migrated_consumers", window="30d", **DEPRECATED).values()) > 0
    assert sum(matching(samples, "api_deprecated_requests_total", **DEPRECATED).values()) > 0
    # The backfilled weeks: cohorts of several weeks, consumers at risk, onboarding times.
    weeks = {dict(lb)["cohort_week"] for lb in matching(samples, "api_cohort_retention_ratio")}
    assert len(weeks) >= 5, weeks
    assert sum(matching(samples, "api_consumers_at_risk").values()) >= 3
    assert sum(matching(samples, "api_time_to_first_success_seconds_count").values()) >= 10


def test_the_demo_api_reads_the_region_header_and_exports_feedback_logs(demo):
    def cmdline(pid: int) -> list[str]:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            return []

    api = [p for p in demo.children() if "apiusage.demo.app:app" in cmdline(p.pid)]
    assert api, [cmdline(p.pid) for p in demo.children()]
    raw = Path(f"/proc/{api[-1].pid}/environ").read_bytes().split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    assert env["APIUSAGE_REGION_HEADERS"] == "CF-IPCountry"
    # The release (service.version) too: 1.4.2 until --release-after (300 s, after this run) rolls out 1.5.0.
    assert env["OTEL_RESOURCE_ATTRIBUTES"] == "cloud.region=eu-west-1,service.version=1.4.2"
    assert env["OTEL_LOGS_EXPORTER"] == "otlp"


def test_metrics_show_the_design_insights_of_the_live_traffic(demo):
    """Parameters, sizes, validation errors, one SDK's misuse, regions, errors and feedback, growing."""
    needs_issue15("catalog", "derive", "feedback", "instr")
    svc = {"service": "orders-api"}

    def total(samples: dict, name: str, **labels: str) -> float:
        return sum(matching(samples, name, **svc, **labels).values())

    live = {
        "feedback": lambda m: total(m, "api_feedback_total"),
        "regions": lambda m: total(m, "api_region_requests_total", server_region="eu-west-1"),
        "cursor": lambda m: total(m, "api_parameter_requests_total", route="/v2/orders", parameter="cursor"),
        "downloads": lambda m: total(
            m, "api_response_body_size_bytes_count", route="/v2/exports/{export_id}/download"
        ),
    }
    before = _scrape(demo)
    deadline = time.monotonic() + 60
    while True:  # live traffic: each of these keeps growing
        samples = _scrape(demo)
        grown = {k: f(samples) > f(before) for k, f in live.items()}
        if all(grown.values()) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert all(grown.values()), grown
    regions = {dict(lb)["client_region"] for lb in matching(samples, "api_region_requests_total", **svc)}
    assert {"US", "DE", "GB", "JP", "IN"} <= regions, regions
    assert not matching(samples, "api_parameter_requests_total", parameter="include_archived")
    unused = sample(samples, "api_unused_parameters", method="GET", route="/v2/orders", **svc)
    assert unused == 1
    quantity = {
        (dict(lb)["field"], dict(lb)["error_type"])
        for lb in matching(samples, "api_validation_errors_total", route="/v2/orders", location="body", **svc)
    }
    assert ("lines.*.quantity", "int_parsing") in quantity, quantity
    assert total(
        samples, "api_validation_errors_total", route="/v2/exports", field="since", error_type="missing"
    )

    def ratio_4xx(client: str) -> float:
        mine = matching(
            samples,
            "api_client_endpoint_requests_total",
            client_name=client,
            method="POST",
            route="/v2/orders",
        )
        errors = sum(v for lb, v in mine.items() if dict(lb)["status_class"] == "4xx")
        return errors / sum(mine.values())

    assert ratio_4xx("shop-sdk-js") > 5 * ratio_4xx("shop-sdk-python"), (
        ratio_4xx("shop-sdk-js"),
        ratio_4xx("shop-sdk-python"),
    )
    assert total(
        samples, "api_errors_total", route="/v2/invoices/{invoice_id}", error_type="LedgerUnavailable"
    )
    big = matching(
        samples,
        "api_response_body_size_bytes_bucket",
        route="/v2/exports/{export_id}/download",
        le="+Inf",
        **svc,
    )
    sums = matching(
        samples, "api_response_body_size_bytes_sum", route="/v2/exports/{export_id}/download", **svc
    )
    assert sum(sums.values()) / sum(big.values()) > 1 << 20  # several MB per download, on average
    assert sample(samples, "api_feedback_consumers", window="1d", **svc) > 0


def test_live_summary_shows_traffic_consumers_deprecations_and_alerts(demo):
    demo.wait_for(r"requests/s enterprise [\d.]+  pro [\d.]+  free [\d.]+", 20)
    line = demo.wait_for(r"active consumers \(24h\) (\d+): enterprise \d+  pro \d+  free \d+", 20)
    assert int(line.group(1)) > 0
    demo.wait_for(r"\d+ spans/s", 5)
    consumers = demo.wait_for(
        r"deprecated endpoints, consumers \(30d\): "
        r"DELETE /v1/orders/\{order_id\} (\d+) \((\d+) migrated\)",
        20,
    )
    assert int(consumers.group(1)) > 0
    demo.wait_for(r"\| alerts firing: ", 20)
    # The third line: the experiment's variants, and the one release so far (history and live).
    demo.wait_for(
        r"^         \| experiment new-checkout: control \d+ requests \d+ consumers, treatment \d+", 30
    )
    demo.wait_for(r"releases \(share of requests now\): 1\.4\.2 100%$", 20)


def test_prometheus_scrapes_the_demo_and_every_alert_links_a_runbook_that_opens(demo):
    prometheus = demo.urls["Prometheus"].split("/classic")[0].removesuffix("/alerts")
    metrics = demo.urls["metrics"].removesuffix("/metrics")
    deadline = time.monotonic() + 30
    while True:
        targets = _json(f"{prometheus}/api/v1/targets")["data"]["activeTargets"]
        if any(t["health"] == "up" for t in targets) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert [t["scrapeUrl"] for t in targets] == [f"{metrics}/metrics"]
    assert targets[0]["health"] == "up", targets
    groups = _json(f"{prometheus}/api/v1/rules")["data"]["groups"]
    alerts = [r for g in groups for r in g["rules"] if r["type"] == "alerting"]
    assert len(alerts) >= 15, [g["name"] for g in groups]
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        assert url == f"{metrics}/runbooks/{rule['name']}", url
        status, body, _ = get(url)
        assert status == 200 and rule["name"].encode() in body, (url, status)
    assert all(g.get("lastError", "") == "" for g in groups)
    # Alertmanager: the bundled routing, every receiver posting to the demo itself.
    am = demo.urls["Alertmanager"].split("/#")[0].removesuffix("/api/v2/alerts")
    config = _json(f"{am}/api/v2/status")["config"]["original"]
    assert "webhook_configs" in config and "127.0.0.1" in config
    assert "email_configs" not in config and "slack_configs" not in config
    assert _json(f"{am}/api/v2/status")["cluster"]["status"] == "disabled"


def test_prometheus_has_the_history_so_growing_export_sizes_are_pending(demo):
    """The weeks before the demo are in Prometheus (demo/launch/promhistory.py): the downloads
    grew 1.6x on last week, so ApiResponseSizeGrowing is pending from its first evaluation (it
    fires after its `for: 1h`)."""
    assert re.search(r"history for Prometheus: [\d,]+ series read 168 times", demo.output), demo.output
    prometheus = demo.urls["Prometheus"].split("/classic")[0].removesuffix("/alerts")
    # Readings 6 h apart: the last one in the 7 h before that time two weeks ago.
    query = urllib.parse.urlencode(
        {"query": 'count(last_over_time(api_requests_total{service="orders-api"}[7h] offset 14d))'}
    )
    assert _json(f"{prometheus}/api/v1/query?{query}")["data"]["result"], "no series two weeks back"
    rules = [r["name"] for g in _json(f"{prometheus}/api/v1/rules")["data"]["groups"] for r in g["rules"]]
    if "ApiResponseSizeGrowing" not in rules:
        pytest.skip("the API design alert rules are not merged here")
    # The alert reads a recording rule of another group; both groups run every minute, each
    # at its own offset, so its first pending evaluation may come two minutes after Prometheus
    # loaded the rules (90 s was too short on a loaded CI machine).
    deadline = time.monotonic() + 180
    while True:
        alerts = _json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
        growing = [a for a in alerts if a["labels"]["alertname"] == "ApiResponseSizeGrowing"]
        if growing or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [(a["labels"]["route"], a["state"]) for a in growing] == [
        ("/v2/exports/{export_id}/download", "pending")
    ], growing


def test_report_against_the_demos_prometheus_renders_in_chromium(demo, tmp_path):
    prometheus = demo.urls["Prometheus"].split("/classic")[0].removesuffix("/alerts")
    deadline = time.monotonic() + 45
    while True:  # a few scrapes (every 5 s), so rates have samples to work on
        query = urllib.parse.urlencode({"query": "count_over_time(up[1m])"})
        result = _json(f"{prometheus}/api/v1/query?{query}")["data"]["result"]
        if (result and float(result[0]["value"][1]) >= 4) or time.monotonic() > deadline:
            break
        time.sleep(1)
    out = tmp_path / "report.html"
    result = subprocess.run(
        [*apiusage_command(), "report", "--prometheus", prometheus, "-o", str(out), "--range", "7d"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote {out} ({len(SECTION_IDS)} sections)"), result.stdout
    text = out.read_text(encoding="utf-8")
    page = check_structure(text)
    # Prometheus got the history's weeks before it started: the charts cover the whole week.
    assert "Prometheus holds API metrics only since" not in text
    traffic = page.sections["traffic"]
    assert has_data(traffic[0]) and has_data(traffic[1]), "requests per second / top endpoints"
    assert has_data(page.sections["adoption"][3]), "cohort retention heatmap"
    tables = page.tables
    tiers = {row[0] for row in tables["adoption"] if len(row) == 4}
    assert set(TIERS) <= tiers, tables["adoption"]
    deprecated = [r for r in tables["deprecations"] if r[0] == "DELETE /v1/orders/{order_id}"]
    assert deprecated and int(deprecated[0][2]) > 0, tables["deprecations"]
    rendered = check_renders(out, tmp_path)
    assert rendered.images >= 11


def test_ctrl_c_stops_every_child_process(demo):
    tree = demo.children()
    names = {p.name for p in tree}
    assert len(tree) >= 5, tree  # processor, demo API, traffic, Prometheus, Alertmanager
    assert {"prometheus", "prometheus-aler"} & names, names
    status = demo.interrupt(60)
    assert status == 0, (demo.output[-3000:], demo.stderr)
    assert wait_gone(tree, 10) == [], wait_gone(tree, 0)
    assert "apiusage demo: stopped" in demo.output
    assert "did not" not in demo.output.split("apiusage demo: stopped")[-1]
    for port in demo.otlp or ():
        with socket.socket() as s:  # nothing listens any more (connections may linger in TIME_WAIT)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", port))
