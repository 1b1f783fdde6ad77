"""The Node SDK's own OTLP metrics and logs exporters, through the processor to a backend.

Each protocol the Node SDK offers (http/json, http/protobuf, grpc; gzip or not) sends 3 data
points and 3 log records with a service-bound token: what the backend gets decodes to exactly
them, and the same data for another service is refused (the exporter reports a failure).
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.node.test_express_attributes import HERE, node
from tests.processor.exporters.test_forward_signals import AUTH, TOKEN, export_requests, log_bodies
from tests.support.otlp_sink import OtlpSink
from tests.support.processor import running_processor

pytestmark = [pytest.mark.live, pytest.mark.slow]  # Node.js and npm packages

SUCCESS, FAILED = 0, 1  # ExportResultCode


def orders(request) -> dict[str, float]:
    """The `orders` counter per plan (the Node SDK records counters as doubles)."""
    return {
        p.attributes[0].value.string_value: p.as_double
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "orders"
        for p in metric.sum.data_points
    }


def run_signals(endpoint: str, protocol: str, compression: str, service: str) -> list[list]:
    """Run tests/node/signals.js; the result code of each export, in order."""
    done = subprocess.run(
        [node(), "signals.js"],
        cwd=HERE,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PROTOCOL": protocol,
            "ENDPOINT": endpoint,
            "COMPRESSION": compression,
            "SERVICE": service,
            "TOKEN": TOKEN,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("exported "))
    return json.loads(line.removeprefix("exported "))


@pytest.mark.parametrize(
    ("protocol", "compression"),
    [
        ("http/json", "none"),
        ("http/json", "gzip"),
        ("http/protobuf", "gzip"),
        ("grpc", "gzip"),
        ("grpc", "none"),
    ],
)
def test_node_metrics_and_logs_exporters_reach_the_backend_exactly(protocol: str, compression: str) -> None:
    sink = OtlpSink()
    try:
        with running_processor({**AUTH, "exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            transport = "grpc" if protocol == "grpc" else "http"
            endpoint = f"http://{running.grpc_endpoint}" if transport == "grpc" else running.http_endpoint
            own = run_signals(endpoint, protocol, compression, "orders-api")
            other = run_signals(endpoint, protocol, compression, "billing-api")
            # Metrics are exported at the flush and again at shutdown; each log record alone.
            got = sink.wait(5)
            m = running.scrape()
    finally:
        sink.close()
    assert own == [["metrics", SUCCESS]] * 2 + [["logs", SUCCESS]] * 3
    assert other == [["metrics", FAILED]] * 2 + [["logs", FAILED]] * 3
    assert [r.path for r in got] == ["/v1/metrics"] * 2 + ["/v1/logs"] * 3
    want_type = "application/json" if protocol == "http/json" else "application/x-protobuf"
    want_encoding = "gzip" if compression == "gzip" and transport == "http" else None
    assert {(r.content_type, r.content_encoding) for r in got} == {(want_type, want_encoding)}
    for r in got[:2]:
        assert orders(r.message()) == {"free": 2.0, "pro": 5.0}
    # Each record is exported on its own, concurrently: they may arrive in any order.
    assert sorted(b for r in got[2:] for b in log_bodies(r.message())) == [
        f"order {i} placed" for i in range(3)
    ]
    assert export_requests(m, transport) == {
        "metrics_forwarded": 2,
        "logs_forwarded": 3,
        "unauthorized_service": 5,
    }
