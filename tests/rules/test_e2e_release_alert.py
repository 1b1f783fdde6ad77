"""End to end for releases: requests of 1.4.2 then 1.5.0 → processor (release families and the
state's release markers) → real Prometheus (the shipped rules, shortened) → Alertmanager → webhook.

The requests go in as derived ApiRequests with their service.version (span decoding of the
resource attribute is tested with the deriver); everything after that is the shipped path.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from apiusage.processor.derive.requests import ApiRequest

from tests.support.alerting import Webhook, alertmanager_config, prometheus_config, shortened_rules
from tests.support.polling import wait_until
from tests.support.processor import running_processor
from tests.support.prometheus import start_alertmanager, start_prometheus

pytestmark = [pytest.mark.slow, pytest.mark.live]


def requests(service: str, version: str, n: int, errors: int) -> list[ApiRequest]:
    now = time.time_ns()
    return [
        ApiRequest(
            service,
            "GET",
            "/v1/orders",
            "503" if i < errors else "200",
            "pro",
            "false",
            "sdk",
            "1.0",
            None,
            None,
            None,
            0.01,
            1.0,
            now,
            bytes(16),
            bytes(8),
            service_version=version,
        )  # fmt: skip
        for i in range(n)
    ]


def query(prometheus: str, expr: str) -> list[dict]:
    url = f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())["data"]["result"]


def test_a_worse_release_fires_and_an_equal_one_does_not(tmp_path: Path) -> None:
    webhook = Webhook()
    try:
        with (
            running_processor() as proc,
            start_alertmanager(tmp_path, alertmanager_config(webhook.url)) as am,
        ):
            # 10 % 5xx within the objective: no error-budget page, which would inhibit
            # the release ticket for the same service (prometheus/alertmanager.yml).
            hostport, rule_files = shortened_rules(tmp_path, proc.metrics_url, {"availability": 80})
            p = proc.processor
            with start_prometheus(tmp_path, prometheus_config(hostport, am), rule_files=rule_files) as prom:

                def feed(version: str, orders_errors: int) -> None:
                    p.request_metrics.consume(requests("orders", version, 200, orders_errors))
                    p.request_metrics.consume(requests("billing", version, 200, 2))
                    p.activity.consume(requests("orders", version, 1, 0) + requests("billing", version, 1, 0))

                # 1.4.2: 0 % 5xx on orders, 1 % on billing, until its figures are recorded.
                feed("1.4.2", 0)
                assert p.state.flush()
                p.state.refresh()
                previous = 'apiusage_release_route:api_release_requests_5xx:ratio_rate1h{version="1.4.2"}'

                def recorded() -> bool:
                    feed("1.4.2", 0)
                    return len(query(prom, previous)) == 2

                wait_until(recorded, 40, "1.4.2's guarded 5xx ratios in Prometheus", interval=0.5)
                # 1.5.0 takes all the traffic: 10 % 5xx on orders, the same 1 % on billing.
                time.sleep(0.01)  # first seen strictly later
                feed("1.5.0", 20)
                assert p.state.flush()
                p.state.refresh()

                def fired() -> dict | None:
                    feed("1.5.0", 20)
                    # The markers reach /metrics at a refresh: each round makes one (a periodic
                    # one may be under way, or the first may have raced the flush).
                    p.state.flush()
                    p.state.refresh()
                    return webhook.alert("ApiReleaseRegression")

                def state_of_prometheus() -> str:
                    shown = {
                        name: query(prom, f"apiusage_release{name}")
                        for name in (
                            ":api_release_rank",
                            "_route:api_release_requests_5xx:ratio_previous",
                            "_route:api_release_requests_5xx:ratio_rate1h",
                        )
                    }
                    with urllib.request.urlopen(f"{prom}/api/v1/rules?type=alert", timeout=5) as response:
                        groups = json.loads(response.read())["data"]["groups"]
                    rule = [r for g in groups for r in g["rules"] if r["name"] == "ApiReleaseRegression"]
                    return f"ApiReleaseRegression at the webhook; Prometheus has {shown}, the rule {rule}"

                alert = wait_until(
                    fired,
                    60,
                    state_of_prometheus,
                    interval=0.5,
                )
                ranks = {
                    (r["metric"]["service"], r["metric"]["version"]): r["value"][1]
                    for r in query(prom, "apiusage_release:api_release_rank")
                }
                billing = query(prom, 'ALERTS{alertname="ApiReleaseRegression", service="billing"}')
    finally:
        webhook.close()
    assert ranks == {
        ("orders", "1.5.0"): "0",
        ("orders", "1.4.2"): "1",
        ("billing", "1.5.0"): "0",
        ("billing", "1.4.2"): "1",
    }
    assert alert["labels"] == {
        "alertname": "ApiReleaseRegression",
        "severity": "warning",
        "category": "api",
        "service": "orders",
        "version": "1.5.0",
        "previous_version": "1.4.2",
        "method": "GET",
        "route": "/v1/orders",
        "signal": "error_ratio",
    }
    assert alert["annotations"]["description"] == (
        "orders 1.5.0 on GET /v1/orders: 5xx ratio 10% over the last hour, well above the release "
        "before it, 1.4.2, over its last 7 days."
    )
    assert alert["annotations"]["dashboard_url"] == (
        "http://grafana.example:3000/d/apiusage-releases/releases?viewPanel=3&var-service=orders"
    )
    assert billing == []  # the same 1 % on both releases
