"""Alert delivery for end-to-end tests: a webhook receiver for Alertmanager, and the shipped
Prometheus and Alertmanager configurations pointed at loopback targets with 1-second timing."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

PROM = Path(__file__).resolve().parents[2] / "prometheus"


class Webhook:
    """Alertmanager's webhook receiver: keeps every payload."""

    def __init__(self) -> None:
        self.payloads: list[dict] = []
        payloads = self.payloads

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payloads.append({"path": self.path, **json.loads(body)})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alert(self, name: str) -> dict | None:
        for p in list(self.payloads):
            for a in p["alerts"]:
                if a["labels"]["alertname"] == name and a["status"] == "firing":
                    return {**a, "path": p["path"]}
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def alertmanager_config(webhook: str) -> str:
    config = yaml.safe_load((PROM / "alertmanager.yml").read_text())
    config["templates"] = [str(PROM / "templates" / "*.tmpl")]
    for receiver in config["receivers"]:
        for hook in receiver["webhook_configs"]:
            hook["url"] = webhook + "/" + receiver["name"]
    for route in [config["route"], *config["route"]["routes"]]:
        route.update(group_wait="1s", group_interval="1s")
    return yaml.safe_dump(config)


def prometheus_config(metrics_hostport: str, alertmanager: str) -> str:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["scrape_configs"] = [c for c in config["scrape_configs"] if c["job_name"] == "apiusage"]
    config["scrape_configs"][0]["static_configs"] = [{"targets": [metrics_hostport]}]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [alertmanager.removeprefix("http://")]}
    ]
    return yaml.safe_dump(config)


def shortened_rules(folder: Path, metrics_url: str, defaults: dict | None = None) -> tuple[str, list[Path]]:
    """The shipped rules, generated for a processor at `metrics_url` (runbook links to its
    /runbooks/, dashboards at grafana.example:3000, SLO `defaults`), evaluated every second with
    `for: 1s`, written into `folder`: the processor's host:port and the rule files."""
    from apiusage.rules import generate, parse_slo, shorten_for_tests

    hostport = metrics_url.removeprefix("http://").removesuffix("/metrics")
    links = {"runbook_base_url": f"http://{hostport}/runbooks/", "grafana_url": "http://grafana.example:3000"}
    slo = parse_slo({"links": links, **({"defaults": defaults} if defaults else {})})
    files = []
    for name, doc in shorten_for_tests(generate(slo), interval="1s", for_="1s").items():
        (folder / name).write_text(yaml.safe_dump(doc, sort_keys=False))
        files.append(folder / name)
    return hostport, files
