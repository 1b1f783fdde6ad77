"""Real components for the live dashboard test: Prometheus (Debian's 2.42, exemplar storage
on), a stand-in trace backend, and the demo service under zero-code instrumentation."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.support.components import free_port, missing
from tests.support.polling import wait_until


def http_json(url: str, timeout: float = 10) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, {"error": body.decode(errors="replace")}


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def api(self, path: str, **params) -> dict:
        """GET /api/v1/<path>; the `data` of a success answer, else AssertionError."""
        query = urllib.parse.urlencode(params, doseq=True)
        status, answer = http_json(f"{self.base_url}/api/v1/{path}?{query}")
        if status != 200 or answer.get("status") != "success":
            raise AssertionError(f"{path} {params}: HTTP {status}: {answer.get('error', answer)}")
        return answer["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql} | ({"time": f"{at:.3f}"} if at is not None else {})
        return self.api("query", **params)["result"]

    def query_range(self, promql: str, start: float, end: float, step: float = 1) -> list[dict]:
        return self.api("query_range", query=promql, start=f"{start:.3f}", end=f"{end:.3f}", step=str(step))[
            "result"
        ]


@contextlib.contextmanager
def prometheus_server(folder: Path, config: dict) -> Iterator[Prometheus]:
    """`prometheus` on a free loopback port with `config`, exemplar storage on."""
    exe = shutil.which("prometheus")
    if exe is None:
        missing("prometheus (Debian package prometheus; scripts/system-deps.sh installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = folder / "prometheus.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                exe,
                f"--config.file={folder / 'prometheus.yml'}",
                f"--storage.tsdb.path={folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--enable-feature=exemplar-storage",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/-/ready", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        wait_until(ready, 30, "prometheus to be ready", interval=0.2, ignore=(OSError,))
        yield Prometheus(base_url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class TraceSink:
    """A stand-in OTLP/HTTP trace backend: keeps every body posted to /v1/traces."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = self.path == "/v1/traces"
                if ok:
                    sink.bodies.append(body)
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def trace_ids(self) -> set[str]:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        out = set()
        for body in list(self.bodies):
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    out.update(span.trace_id.hex() for span in ss.spans)
        return out

    def __enter__(self) -> TraceSink:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def bin_path(name: str) -> str | None:
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else shutil.which(name)


DEMO_RELEASE = "service.version=1.5.0"


@contextlib.contextmanager
def demo_service(otlp_grpc_endpoint: str, key: str, log: Path) -> Iterator[str]:
    """The demo service under `opentelemetry-instrument uvicorn`, exporting to the processor."""
    from apiusage.demo import CATALOG, DESIGN_ENVIRONMENT, PLANS, SERVICE_NAME

    instrument, uvicorn = bin_path("opentelemetry-instrument"), bin_path("uvicorn")
    if instrument is None or uvicorn is None:
        missing("opentelemetry-instrument and uvicorn (the instrumentation and dev extras)")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_", "PYTEST_"))}
    env.update(
        {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            "OTEL_SERVICE_NAME": SERVICE_NAME,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{otlp_grpc_endpoint}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS": "healthz",
            "APIUSAGE_PSEUDONYM_KEY": key,
            "APIUSAGE_PLAN_TIERS": str(PLANS),
            "APIUSAGE_CATALOG": str(CATALOG),
            "OTEL_BLRP_SCHEDULE_DELAY": "200",
            **DESIGN_ENVIRONMENT,
            # The releases dashboard (issue 16): the demo runs as one release of its service.
            "OTEL_RESOURCE_ATTRIBUTES": DESIGN_ENVIRONMENT["OTEL_RESOURCE_ATTRIBUTES"] + "," + DEMO_RELEASE,
        }
    )
    port = free_port()
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                instrument,
                uvicorn,
                "apiusage.demo.app:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"the demo service exited:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as r:
                    return r.status == 200
            except (OSError, urllib.error.HTTPError):
                return False

        wait_until(up, 30, "the demo service to answer /healthz", interval=0.2, ignore=(OSError,))
        yield base_url
    finally:
        process.terminate()  # the BatchSpanProcessor exports what is left at shutdown
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
