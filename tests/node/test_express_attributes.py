"""A real Express service under the OpenTelemetry Node SDK exports to a running processor.

What docs/attributes.md says for Node: an attribute set on `trace.getActiveSpan()` in an Express
handler lands on Express's INTERNAL span and never reaches the processor; the RPC metadata span and
the HTTP instrumentation's `applyCustomAttributesOnSpan` are the SERVER span. The SDK also exports
its metrics to the same base endpoint, which the processor now answers (passed through).

Needs Node.js 20.6+ and `npm ci` in tests/node (scripts/node-deps.sh, run by `make test`).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.components import missing
from tests.support.polling import read_until
from tests.support.processor import RunningProcessor, matching, running_processor, sample, wait_for

pytestmark = [pytest.mark.live, pytest.mark.slow]  # Node.js and npm packages

HERE = Path(__file__).parent


def node() -> str:
    """The node binary, once tests/node's packages are installed (else skip; fail under CI)."""
    found = shutil.which("node")
    if found is None:
        missing("node (Debian package nodejs: run make test)")
    if not (HERE / "node_modules" / "@opentelemetry" / "sdk-node").is_dir():
        missing("tests/node/node_modules (run bash scripts/node-deps.sh)")
    return found


def plan_tiers(m, route: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, v in matching(m, "api_requests_total", route=route).items():
        tier = dict(labels)["plan_tier"]
        out[tier] = out.get(tier, 0) + v
    return out


def run_app(
    running: RunningProcessor, requests: tuple[tuple[str, int], ...], wait=None, **env: str
) -> tuple[str, float]:
    """Run the Express app against `running` with the SDK configured by `env`; send `requests`
    (path, times); call `wait()` before stopping the app; then wait until every span it
    exported is derived. Returns the app's stderr and the spans received."""
    app = subprocess.Popen(
        [node(), "--require", "./tracing.js", "app.js"],
        cwd=HERE,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "OTEL_SERVICE_NAME": "orders-api",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_NODE_RESOURCE_DETECTORS": "env",
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert app.stdout is not None
        line = app.stdout.readline()  # the app prints its port once it listens
        assert line.startswith("listening "), f"the Express app did not start: {line!r}"
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        for path, times in requests:
            for _ in range(times):
                with urllib.request.urlopen(base + path, timeout=5) as response:
                    assert response.status == 200
        if wait is not None:
            wait()
        app.send_signal(signal.SIGTERM)  # the SDK flushes its spans (and metrics) on the way out
        _, stderr = app.communicate(timeout=20)
        assert app.returncode == 0, stderr
    finally:
        if app.poll() is None:
            app.kill()
            app.communicate()

    # Every span was exported before the app exited: wait until all received are derived
    # (the SERVER spans, and Express's INTERNAL ones, ignored as not_server).
    def derived(m) -> bool:
        received = sample(m, "apiusage_spans_received_total", transport="http") or 0
        return bool(received) and sample(m, "apiusage_spans_processed_total") == received

    m = read_until(running.scrape, derived, 10)
    received = sample(m, "apiusage_spans_received_total", transport="http") or 0
    assert derived(m), f"{received} spans received, not all processed"
    return stderr, received


def outcomes(m) -> dict[str, float]:
    return {dict(labels)["outcome"]: v for labels, v in matching(m, "apiusage_export_requests_total").items()}


def test_only_the_server_span_reaches_the_processor_and_sdk_metrics_are_answered() -> None:
    with running_processor() as running:
        run_app(
            running,
            (("/v1/active/1", 1), ("/v1/rpc/2", 2), ("/v1/hook/3", 3)),
            # The periodic reader exports every 500 ms: its requests are answered, and counted.
            wait=lambda: wait_for(
                running,
                "apiusage_export_requests_total",
                2,
                transport="http",
                outcome="metrics_not_forwarded",
            ),
            OTEL_EXPORTER_OTLP_ENDPOINT=running.http_endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
            OTEL_LOGS_EXPORTER="none",
        )
        m = running.scrape()
    assert sum(matching(m, "api_requests_total").values()) == 6
    assert plan_tiers(m, "/v1/active/:id") == {"unknown": 1}  # set on Express's span: lost
    assert plan_tiers(m, "/v1/rpc/:id") == {"rpc-metadata": 2}
    assert plan_tiers(m, "/v1/hook/:id") == {"request-hook": 3}
    assert set(outcomes(m)) == {"success", "metrics_not_forwarded"}  # nothing refused


def test_with_metrics_and_logs_exporters_off_the_node_sdk_sends_traces_only() -> None:
    with running_processor() as running:
        run_app(
            running,
            (("/v1/rpc/1", 2),),
            wait=lambda: time.sleep(1.5),  # three metric intervals
            OTEL_EXPORTER_OTLP_ENDPOINT=running.http_endpoint,
            OTEL_METRICS_EXPORTER="none",
            OTEL_LOGS_EXPORTER="none",
        )
        m = running.scrape()
    assert plan_tiers(m, "/v1/rpc/:id") == {"rpc-metadata": 2}
    assert set(outcomes(m)) == {"success"}
