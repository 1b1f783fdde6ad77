"""prometheus/alertmanager.yml, its notification template, and prometheus/prometheus.yml."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support.prometheus import amtool, promtool

pytestmark = pytest.mark.live

PROM = Path(__file__).resolve().parents[2] / "prometheus"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, cwd=PROM)


def test_amtool_check_config() -> None:
    result = run(amtool(), "check-config", "alertmanager.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 inhibit rules" in result.stdout and "1 templates" in result.stdout


@pytest.mark.parametrize(
    "severity, receiver",
    [
        ("critical", "apiusage-pages"),
        ("warning", "apiusage-tickets"),
        ("info", "apiusage-info"),
        ("none", "apiusage-tickets"),
    ],
)
def test_routes_by_severity(severity: str, receiver: str) -> None:
    result = run(
        amtool(),
        "config",
        "routes",
        "test",
        "--config.file=alertmanager.yml",
        f"--verify.receivers={receiver}",
        "alertname=ApiTrafficDrop",
        "service=orders-api",
        f"severity={severity}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_template_puts_summary_runbook_and_dashboard_in_the_message(tmp_path: Path) -> None:
    alert = {
        "status": "firing",
        "labels": {"alertname": "ApiTrafficDrop", "service": "orders-api", "severity": "warning"},
        "annotations": {
            "summary": "An API receives less traffic.",
            "description": "orders-api received 1 requests/s.",
            "runbook_url": "http://localhost:9464/runbooks/ApiTrafficDrop",
            "dashboard_url": "http://localhost:3000/d/apiusage-overview/api-overview"
            "?viewPanel=5&var-service=orders-api",
        },
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    data = {
        "status": "firing",
        "receiver": "apiusage-tickets",
        "groupLabels": {},
        "commonLabels": alert["labels"],
        "commonAnnotations": {},
        "externalURL": "http://am",
        "alerts": [alert],
    }
    (tmp_path / "data.json").write_text(json.dumps(data))
    result = run(
        amtool(),
        "template",
        "render",
        "--template.glob=templates/*.tmpl",
        '--template.text={{ template "apiusage.title" . }}\n{{ template "apiusage.text" . }}',
        f"--template.data={tmp_path / 'data.json'}",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "[FIRING:1] ApiTrafficDrop (orders-api)\n"
        "[WARNING] An API receives less traffic.\n"
        "orders-api received 1 requests/s.\n"
        "Runbook: http://localhost:9464/runbooks/ApiTrafficDrop\n"
        "Dashboard: http://localhost:3000/d/apiusage-overview/api-overview?viewPanel=5&var-service=orders-api"
    )


def test_prometheus_config_loads_the_rules() -> None:
    result = run(promtool(), "check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 rule files found" in result.stdout
