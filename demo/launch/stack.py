"""Prometheus and Alertmanager for the demo: configuration written for the run, and an alert sink.

Prometheus scrapes the demo's processor on the port it actually uses and loads the
bundled rule files (``alert_rules/*.yml``), copied with every ``runbook_url`` pointed
at the demo processor's ``/runbooks/`` so the links in alerts open. Alertmanager
runs the bundled ``prometheus/alertmanager.yml`` (routing, grouping, inhibition,
templates) when there is one, with every receiver replaced by a webhook to a sink the
demo runs itself: nothing leaves the machine, and the demo can show what was notified.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from .ports import HOST

__all__ = [
    "AlertSink",
    "StackFiles",
    "bundled",
    "write_alertmanager_config",
    "write_prometheus_config",
    "write_rules",
]

SCRAPE_INTERVAL = "5s"
# Receivers that could send something somewhere; the demo replaces them all with its sink.
_INTEGRATIONS = (
    "email_configs",
    "pagerduty_configs",
    "slack_configs",
    "webhook_configs",
    "opsgenie_configs",
    "victorops_configs",
    "pushover_configs",
    "wechat_configs",
    "sns_configs",
    "telegram_configs",
    "discord_configs",
    "webex_configs",
    "msteams_configs",
)
_RUNBOOK = re.compile(r"^https?://[^/]+(?:/.*)?/runbooks/(?P<name>[^/]+)$")


@dataclass(frozen=True)
class StackFiles:
    """The bundled Prometheus side of the repository (or the installed package)."""

    rules: list[Path]
    alertmanager: Path | None
    job: str = "apiusage"


def packaged(package: str) -> Path:
    """The folder of a data package (`apiusage.alert_rules`, `apiusage.prometheus`): the
    repository's folder in a checkout, the installed copy otherwise."""
    return Path(str(importlib.resources.files(package)))


def bundled(rules_dir: Path | None = None) -> StackFiles:
    """The packaged rule files (or those of `rules_dir`) and Alertmanager config, if present."""
    folder = rules_dir or packaged("apiusage.alert_rules")
    rules = sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    am = packaged("apiusage.prometheus") / "alertmanager.yml"
    job = "apiusage"
    slo = packaged("apiusage.prometheus") / "slo.yaml"
    if slo.is_file():  # the job name the generated rules select on (`up{job=...}`)
        try:
            data = yaml.safe_load(slo.read_text(encoding="utf-8")) or {}
            job = str(data.get("job") or job) if isinstance(data, dict) else job
        except (OSError, yaml.YAMLError):
            pass
    return StackFiles(rules, am if am.is_file() else None, job)


def _rewrite_runbooks(node: Any, base: str) -> int:
    count = 0
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "runbook_url" and isinstance(value, str) and (m := _RUNBOOK.match(value)):
                node[key] = base + m.group("name")
                count += 1
            else:
                count += _rewrite_runbooks(value, base)
    elif isinstance(node, list):
        count += sum(_rewrite_runbooks(item, base) for item in node)
    return count


def write_rules(files: list[Path], out: Path, runbook_base: str) -> tuple[list[Path], int]:
    """Copies of the rule files with runbook links on the demo processor; (paths, alerts)."""
    out.mkdir(parents=True, exist_ok=True)
    written, alerts = [], 0
    for path in files:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        _rewrite_runbooks(data, runbook_base)
        for group in data.get("groups") or []:
            alerts += sum(1 for rule in group.get("rules") or [] if "alert" in rule)
        target = out / path.name
        target.write_text(
            f"# Copy of {path} for apiusage demo: runbook_url points at the demo.\n"
            + yaml.safe_dump(data, sort_keys=False, width=4096),
            encoding="utf-8",
        )
        written.append(target)
    return written, alerts


def write_prometheus_config(
    path: Path, *, job: str, metrics_port: int, rules_glob: str | None, alertmanager_port: int | None
) -> None:
    config: dict[str, Any] = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": "4s", "evaluation_interval": "15s"},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"{HOST}:{metrics_port}"]}]}],
    }
    if rules_glob:
        config["rule_files"] = [rules_glob]
    if alertmanager_port:
        config["alerting"] = {
            "alertmanagers": [{"static_configs": [{"targets": [f"{HOST}:{alertmanager_port}"]}]}]
        }
    path.write_text(
        "# Written by apiusage demo for this run.\n" + yaml.safe_dump(config, sort_keys=False),
        encoding="utf-8",
    )


def write_alertmanager_config(path: Path, bundled_config: Path | None, sink_url: str) -> str:
    """The bundled routing with every receiver sent to the demo's sink; what was used, in words."""
    sink = {"webhook_configs": [{"url": sink_url, "send_resolved": True}]}
    data: dict[str, Any] | None = None
    if bundled_config is not None:
        try:
            loaded = yaml.safe_load(bundled_config.read_text(encoding="utf-8"))
            data = loaded if isinstance(loaded, dict) and loaded.get("route") else None
        except (OSError, yaml.YAMLError):
            data = None
    if data is None:
        data = {
            "route": {
                "receiver": "demo",
                "group_by": ["alertname", "service"],
                "group_wait": "10s",
                "group_interval": "1m",
                "repeat_interval": "4h",
            },
            "receivers": [{"name": "demo"}],
        }
        how = "a minimal routing (no prometheus/alertmanager.yml)"
    else:
        how = f"the routing of {bundled_config}"
    for receiver in data.get("receivers") or []:
        for key in _INTEGRATIONS:
            receiver.pop(key, None)
        receiver.update(sink)
    templates = []
    for pattern in data.get("templates") or []:  # relative to the bundled file's folder
        p = Path(pattern)
        templates.append(str(p if p.is_absolute() or bundled_config is None else bundled_config.parent / p))
    if templates:
        data["templates"] = templates
    path.write_text(
        "# Written by apiusage demo for this run: every receiver posts to the demo.\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return how


@dataclass
class _Received:
    notifications: int = 0
    alerts: dict[str, str] = field(default_factory=dict)  # alertname -> status
    runbooks: dict[str, str] = field(default_factory=dict)  # alertname -> runbook_url


class AlertSink:
    """A webhook receiver on loopback: Alertmanager's notifications end here."""

    def __init__(self) -> None:
        self.received = _Received()
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = min(int(self.headers.get("Content-Length") or 0), 1 << 20)
                try:
                    sink._record(json.loads(self.rfile.read(length) or b"{}"))
                    status = 200
                except ValueError:
                    status = 400
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-alert-sink", daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self._server.server_address[1]}/alerts"

    def _record(self, payload: dict) -> None:
        with self._lock:
            self.received.notifications += 1
            for alert in payload.get("alerts") or []:
                name = (alert.get("labels") or {}).get("alertname", "?")
                self.received.alerts[name] = alert.get("status", "?")
                if url := (alert.get("annotations") or {}).get("runbook_url"):
                    self.received.runbooks[name] = url

    def snapshot(self) -> _Received:
        with self._lock:
            return _Received(
                self.received.notifications, dict(self.received.alerts), dict(self.received.runbooks)
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
