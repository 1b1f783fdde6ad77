"""What the demo writes for Prometheus and Alertmanager, checked by their own tools; ports; the alert sink."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from apiusage.demo.launch.ports import PORTS, PortError, claim
from apiusage.demo.launch.stack import (
    AlertSink,
    bundled,
    write_alertmanager_config,
    write_prometheus_config,
    write_rules,
)

from tests.support.components import missing

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[2]
BASE = "http://127.0.0.1:19464/runbooks/"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} (Debian packages prometheus and prometheus-alertmanager: run make test)")
    return path


def alerts_of(path: Path) -> list[dict]:
    data = yaml.safe_load(path.read_text())
    return [r for g in data["groups"] for r in g["rules"] if "alert" in r]


def test_rules_are_the_bundled_ones_with_runbooks_on_the_demo_processor(tmp_path):
    files = bundled()
    assert files.rules, "alert_rules/ holds the bundled rule files"
    written, count = write_rules(files.rules, tmp_path, BASE)
    assert [p.name for p in written] == [p.name for p in files.rules]
    assert count == sum(len(alerts_of(p)) for p in files.rules) > 0
    for original, copy in zip(files.rules, written, strict=True):
        before, after = alerts_of(original), alerts_of(copy)
        for a, b in zip(before, after, strict=True):
            assert b["annotations"]["runbook_url"] == BASE + a["alert"]
            assert {k: v for k, v in a.items() if k != "annotations"} == {
                k: v for k, v in b.items() if k != "annotations"
            }
            assert {k: v for k, v in a["annotations"].items() if k != "runbook_url"} == {
                k: v for k, v in b["annotations"].items() if k != "runbook_url"
            }
    result = subprocess.run(
        [tool("promtool"), "check", "rules", *map(str, written)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_config_scrapes_the_demo_and_loads_the_rules(tmp_path):
    files = bundled()
    write_rules(files.rules, tmp_path / "rules", BASE)
    config = tmp_path / "prometheus.yml"
    write_prometheus_config(
        config,
        job=files.job,
        metrics_port=19464,
        rules_glob=str(tmp_path / "rules" / "*.yml"),
        alertmanager_port=19093,
    )
    data = yaml.safe_load(config.read_text())
    assert data["scrape_configs"] == [
        {"job_name": "apiusage", "static_configs": [{"targets": ["127.0.0.1:19464"]}]}
    ]
    assert data["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == ["127.0.0.1:19093"]
    result = subprocess.run(
        [tool("promtool"), "check", "config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_keeps_the_bundled_routing_and_sends_everything_to_the_demo(tmp_path):
    bundled_config = tmp_path / "bundle" / "alertmanager.yml"
    bundled_config.parent.mkdir()
    source = ROOT / "prometheus" / "alertmanager.yml"
    if source.exists():
        if (source.parent / "templates").exists():
            shutil.copytree(source.parent / "templates", bundled_config.parent / "templates")
        text = source.read_text()
    else:  # the rules engineer's file is not there yet: a stand-in with the same shape
        text = "route: {receiver: pages, routes: [{matchers: ['severity=\"critical\"'], receiver: pages}]}\n"
    data = yaml.safe_load(text)
    # Whatever the bundle sends elsewhere must not leave the demo.
    data["receivers"] = (data.get("receivers") or []) + [
        {
            "name": "chat",
            "slack_configs": [{"api_url": "https://hooks.slack.invalid/x", "channel": "#x"}],
            "email_configs": [{"to": "x@example.invalid", "smarthost": "smtp.invalid:25", "from": "a@b.c"}],
        }
    ]
    bundled_config.write_text(yaml.safe_dump(data))
    out = tmp_path / "alertmanager.yml"
    how = write_alertmanager_config(out, bundled_config, "http://127.0.0.1:18080/alerts")
    assert how == f"the routing of {bundled_config}"
    written = yaml.safe_load(out.read_text())
    assert written["route"] == data["route"]
    assert written.get("inhibit_rules") == data.get("inhibit_rules")
    for receiver in written["receivers"]:
        assert set(receiver) == {"name", "webhook_configs"}, receiver
        sink = {"url": "http://127.0.0.1:18080/alerts", "send_resolved": True}
        assert receiver["webhook_configs"] == [sink]
    for template in written.get("templates", []):
        assert Path(template).is_absolute()
    result = subprocess.run(
        [tool("amtool"), "check-config", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_without_a_bundled_config_gets_a_minimal_valid_one(tmp_path):
    out = tmp_path / "alertmanager.yml"
    how = write_alertmanager_config(out, None, "http://127.0.0.1:18080/alerts")
    assert "minimal" in how
    result = subprocess.run(
        [tool("amtool"), "check-config", str(out)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_sink_records_what_alertmanager_posts():
    sink = AlertSink()
    sink.start()
    try:
        payload = {
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "ApiErrorBudgetBurnFast"},
                    "annotations": {"runbook_url": BASE + "ApiErrorBudgetBurnFast"},
                }
            ]
        }
        request = urllib.request.Request(
            sink.url,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
        got = sink.snapshot()
        assert got.notifications == 1
        assert got.alerts == {"ApiErrorBudgetBurnFast": "firing"}
        assert got.runbooks == {"ApiErrorBudgetBurnFast": BASE + "ApiErrorBudgetBurnFast"}
        assert sink.url.startswith("http://127.0.0.1:")
    finally:
        sink.stop()


def test_ports_zero_picks_distinct_free_ones_and_a_taken_one_is_named():
    ports = claim({p.name: 0 for p in PORTS})
    assert len(set(ports.values())) == len(PORTS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        with pytest.raises(
            PortError,
            match=rf"port {taken} for Alertmanager is already in use.*"
            r"--alertmanager-port PORT",
        ):
            claim({**{p.name: 0 for p in PORTS}, "alertmanager_port": taken})
        # A component that will not run does not need its port.
        assert "alertmanager_port" not in claim(
            {**{p.name: 0 for p in PORTS}, "alertmanager_port": taken}, skip={"alertmanager_port"}
        )
    with pytest.raises(PortError, match="not a port number"):
        claim({**{p.name: 0 for p in PORTS}, "api_port": 70000})
