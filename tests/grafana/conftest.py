"""The live stack the panel queries run against: a real `apiusage serve`, fed by the demo
service under zero-code instrumentation and the demo traffic generator, scraped by a real
Prometheus that evaluates the project's rules."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.grafana.grafana_support import alert_rule_files, dashboards, panel
from tests.grafana.live_support import Prometheus, TraceSink, demo_service, prometheus_server
from tests.support.polling import wait_until

SCRAPE = "1s"
# Grafana's $__rate_interval for a 1 s scrape interval and 1 s steps: max(1s + 1s, 4 × 1s).
RATE_INTERVAL = "4s"
TRAFFIC_SECONDS = 14
# A deliberately low limit, so that a short run overflows client_version (the demo has
# about ten client versions) and the label-overflow panel has real data.
CLIENT_VERSION_LIMIT = 4


@dataclass
class LiveStack:
    prometheus: Prometheus
    start: float
    end: float
    trace_ids: set[str]
    traffic: object
    synthetic_alerts: dict[str, str] = field(default_factory=dict)


def fast_rule_copies(folder: Path) -> list[Path]:
    """The project's rule files, evaluated every second instead of every minute."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in alert_rule_files():
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in data.get("groups") or []:
            group["interval"] = SCRAPE
        copy = folder / path.name
        copy.write_text(yaml.safe_dump(data, sort_keys=False))
        out.append(copy)
    return out


def always_firing(folder: Path) -> tuple[Path, dict[str, str]]:
    """ALERTS has series only while an alert fires: one rule per dashboard that always fires,
    named after an alert of that dashboard, so each "Firing alerts" panel has a row."""
    names = {}
    for uid, model in dashboards().items():
        expr = panel(model, 1)["targets"][0]["expr"]
        alertnames = re.search(r'alertname=~"([^"]*)"', expr).group(1)
        if alertnames == "^$":
            continue  # no alert links to this dashboard (yet): its panel lists none
        names[uid] = sorted(alertnames.split("|"))[0]
    rules = [
        {
            "alert": name,
            "expr": "vector(1)",
            "labels": {"severity": "info", "service": "orders-api", "synthetic": "true"},
        }
        for name in sorted(set(names.values()))
    ]
    path = folder / "always-firing.rules.yml"
    path.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "dashboard-test", "interval": SCRAPE, "rules": rules}]}, sort_keys=False
        )
    )
    return path, names


def send_feedback(base_url: str) -> None:
    """One feedback post per score, about the whole API and about POST /v2/orders.

    Feedback is about 1% of the demo's requests, so in a short run most (route, category,
    score) series see a single event, and rate() cannot tell one event from a new series:
    posting the same set before and after the traffic gives every feedback panel a rate.
    """
    import httpx
    from apiusage.demo.app import load_plans

    key = sorted(load_plans())[0]  # a key the demo service accepts
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as client:
        for score in range(1, 6):
            for route in (None, "/v2/orders"):
                body = {"score": score, "category": "errors", "route": route}
                client.post("/v1/feedback", json=body).raise_for_status()


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory) -> LiveStack:
    from apiusage.demo import CATALOG, traffic

    from tests.support.processor import start_processor

    tmp = tmp_path_factory.mktemp("live-dashboards")
    rules = fast_rule_copies(tmp / "rules")
    synthetic, names = always_firing(tmp / "rules")
    with (
        TraceSink() as sink,
        start_processor(
            tmp,
            {
                "state": {"refresh_interval": "1s", "flush_interval": "200ms"},
                "catalog": str(CATALOG),
                "exporters": {"otlp": {"endpoint": sink.endpoint}},
                "processors": {"limits": {"max_label_values": {"client_version": CLIENT_VERSION_LIMIT}}},
            },
        ) as processor,
    ):
        metrics = processor.metrics_url.removeprefix("http://").split("/")[0]
        config = {
            "global": {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE},
            "rule_files": [str(p) for p in [*rules, synthetic]],
            "scrape_configs": [
                {"job_name": "apiusage", "static_configs": [{"targets": [metrics]}]},
            ],
        }
        with (
            prometheus_server(tmp / "prometheus", config) as prom,
            demo_service(
                processor.grpc_endpoint, "dashboard-test-pseudonym-key-0123", tmp / "demo.log"
            ) as demo,
        ):
            start = time.time()
            send_feedback(demo)
            stats = traffic.run(demo, duration=TRAFFIC_SECONDS, rate=60, seed=20261125, burst_every=4)
            send_feedback(demo)
            # Give the spans time to be exported, derived, flushed, recomputed and scraped.
            for probe in (
                'apiusage_forwarded_requests_total{outcome="success"} > 0',
                "api_migrated_consumers",
                "apiusage_label_overflow_total > 0",
                "apiusage_service:slo_latency:burnrate3d",
                'ALERTS{alertstate="firing", synthetic="true"}',
                "rate(api_feedback_total[4s]) > 0",
            ):
                wait_until(
                    lambda p=probe: prom.query(p),
                    45,
                    lambda p=probe: f"Prometheus to have {p} (traffic: {stats.summary()})",
                    interval=0.2,
                    ignore=(OSError,),
                )
            time.sleep(3)
            yield LiveStack(prom, start - 2, time.time(), sink.trace_ids(), stats, names)
