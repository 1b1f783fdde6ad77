"""A webhook receiver for Alertmanager that prints each notification: the demo's pager.

    python -m apiusage.demo.alertlog --port 5001

prometheus/alertmanager.yml sends every severity to ``http://localhost:5001/alerts/<severity>``;
in docker-compose.yml this runs in the Alertmanager container's network namespace, so
``docker compose logs alert-log`` shows what would have paged, with each alert's summary,
runbook and dashboard links.  It listens on loopback only and reads at most 1 MiB per
request.
"""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


def format_notification(path: str, payload: dict) -> list[str]:
    """One line per alert of an Alertmanager webhook payload (version 4)."""
    lines = []
    for alert in payload.get("alerts") or []:
        labels, annotations = alert.get("labels") or {}, alert.get("annotations") or {}
        scope = " ".join(
            f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("alertname", "severity", "category")
        )
        lines.append(
            f"{path} {alert.get('status', payload.get('status', '?')).upper()} "
            f"{labels.get('alertname', '?')} [{labels.get('severity', '?')}] {scope} | "
            f"{annotations.get('summary', '')} | runbook: {annotations.get('runbook_url', '-')} "
            f"| dashboard: {annotations.get('dashboard_url', '-')}"
        )
    return lines


class Handler(BaseHTTPRequestHandler):
    server_version = "apiusage-alertlog"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self.send_error(413 if length > MAX_BODY else 411)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self.send_error(400, "not JSON")
            return
        for line in format_notification(self.path, payload if isinstance(payload, dict) else {}):
            print(line, flush=True)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:  # noqa: N802
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's signature)
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m apiusage.demo.alertlog", description="Print Alertmanager webhook notifications."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5001)
    args = parser.parse_args(argv)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"alertlog: listening on http://{args.host}:{args.port}/alerts/<severity>", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
