"""Processor throughput: spans per CPU-second of the processor process, over real loopback OTLP.

Starts `apiusage serve`, drives it with h2load (nghttp2-client) sending one
pre-serialized 512-span ExportTraceServiceRequest over and over, as OTLP/gRPC
(HTTP/2, pre-framed) and as OTLP/HTTP (HTTP/1.1), and reads the processor's
user+system CPU time from /proc, so the load tool's share of the cores does not
blur the figure.  In the same run it measures the decode-only ceiling:
protobuf's ParseFromString of the same batch, in this process.

    .venv/bin/python bench/processor_throughput.py [--requests 2000] [--clients 4] [--transport http]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apiusage.demo.otlp import ExportTraceServiceRequest, add_resource, add_span  # noqa: E402
from google.protobuf import __version__ as protobuf_version  # noqa: E402

from tests.support.processor import sample, start_processor  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SPANS_PER_BATCH = 512


def build_batch(n: int = SPANS_PER_BATCH) -> bytes:
    """512 SERVER spans with 15 attributes each, like a FastAPI service under apiusage."""
    req = ExportTraceServiceRequest()
    resource = {"service.name": "orders-api", "service.version": "1.4.2", "telemetry.sdk.language": "python"}
    scope = add_resource(req, resource, scope="opentelemetry.instrumentation.fastapi")
    routes = ["/v1/orders", "/v1/orders/{order_id}", "/v2/orders", "/v1/customers/{id}"]
    plans = ["free", "pro", "enterprise"]
    for i in range(n):
        trace_id, span_id, parent_span_id = os.urandom(16), os.urandom(8), os.urandom(8)
        start_ns = time.time_ns() - 30_000_000
        attributes = {
            "http.request.method": "GET",
            "http.route": routes[i % 4],
            "http.response.status_code": 200 if i % 20 else 500,
            "url.path": f"/v1/orders/{i}",
            "url.scheme": "https",
            "server.address": "api.example.com",
            "server.port": 443,
            "user_agent.original": "orders-sdk/1.2.3 (python 3.11)",
            "network.protocol.version": "1.1",
            "apiusage.consumer.id": f"c{i % 97:04d}",
            "apiusage.consumer.plan_tier": plans[i % 3],
            "apiusage.client.name": "orders-sdk",
            "apiusage.client.version": f"1.{i % 4}.0",
            "apiusage.feature": "orders",
            "apiusage.schema_version": 1,
        }
        span = add_span(
            scope,
            attributes,
            name=f"GET {routes[i % 4]}",
            start_ns=start_ns,
            end_ns=start_ns + (i % 50 + 1) * 1_000_000,
            trace_id=trace_id,
            span_id=span_id,
        )
        span.parent_span_id = parent_span_id
    return req.SerializeToString()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def decode_ceiling(body: bytes, seconds: float = 2.0) -> float:
    start = time.process_time()
    n = 0
    while time.process_time() - start < seconds:
        ExportTraceServiceRequest.FromString(body)
        n += 1
    return n * SPANS_PER_BATCH / (time.process_time() - start)


def scanner_ceiling(body: bytes, seconds: float = 2.0) -> tuple[float, str]:
    from apiusage.processor.config import UsageConfig
    from apiusage.processor.derive.requests import ARRAY_FIELD_INDEXES, span_field_sources
    from apiusage.processor.receivers.fields import FieldScanner

    scanner = FieldScanner(
        span_field_sources(UsageConfig()), [("service.name",)], array_fields=ARRAY_FIELD_INDEXES
    )
    start = time.process_time()
    n = 0
    while time.process_time() - start < seconds:
        scanner.scan(body)
        n += 1
    return n * SPANS_PER_BATCH / (time.process_time() - start), scanner.implementation


def run_h2load(args: list[str]) -> str:
    result = subprocess.run(["h2load", *args], capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"h2load failed: {result.stderr or result.stdout}")
    return result.stdout


def drive(transport: str, body: bytes, requests: int, clients: int, workdir: Path, state: bool) -> dict:
    config = {"processors": {"queue": {"max_spans": 1_000_000}}, "state": {"enabled": state}}
    with start_processor(workdir, config) as running:
        pid = running.process.pid
        if transport == "grpc":
            payload = workdir / "body.grpc"
            payload.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
            url = f"http://{running.grpc_endpoint}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            extra = ["-H", "content-type: application/grpc", "-H", "te: trailers", "-m", "4"]
        else:
            payload = workdir / "body.pb"
            payload.write_bytes(body)
            url = f"{running.http_endpoint}/v1/traces"
            extra = ["--h1", "-H", "content-type: application/x-protobuf"]
        cpu0, wall0 = cpu_seconds(pid), time.monotonic()
        out = run_h2load(["-n", str(requests), "-c", str(clients), "-d", str(payload), *extra, url])
        expected = requests * SPANS_PER_BATCH
        while True:  # wait for the queue to drain
            m = running.scrape()
            if (
                sample(m, "apiusage_spans_processed_total") or 0
            ) >= expected or time.monotonic() - wall0 > 600:
                break
            time.sleep(0.05)
        cpu1, wall1 = cpu_seconds(pid), time.monotonic()
        processed = sample(m, "apiusage_spans_processed_total") or 0
        rejected = sum(v for (n, _), v in m.items() if n == "apiusage_spans_rejected_total")
        ok_line = next((ln for ln in out.splitlines() if ln.startswith("requests:")), "")
        status_line = next((ln for ln in out.splitlines() if ln.startswith("status codes:")), "")
    return {
        "transport": transport,
        "spans": processed,
        "rejected": rejected,
        "cpu": cpu1 - cpu0,
        "wall": wall1 - wall0,
        "h2load": f"{ok_line} | {status_line}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000, help="export requests per transport")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--state", choices=["on", "off"], default="on", help="consumer state store (SQLite) on or off"
    )
    parser.add_argument("--transport", choices=["grpc", "http", "both"], default="both")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client (or: make bench)")
    body = build_batch()
    print(
        f"python {platform.python_version()}, protobuf {protobuf_version}, "
        f"{os.cpu_count()} cores; batch {SPANS_PER_BATCH} spans, {len(body)} bytes; "
        f"state store {args.state}"
    )
    ceiling = decode_ceiling(body)
    scan, impl = scanner_ceiling(body)
    print(f"decode-only ceiling (protobuf ParseFromString): {ceiling:,.0f} spans/CPU-s")
    print(f"scanner alone ({impl}):                      {scan:,.0f} spans/CPU-s")
    for transport in ("grpc", "http") if args.transport == "both" else (args.transport,):
        with tempfile.TemporaryDirectory() as tmp:
            r = drive(transport, body, args.requests, args.clients, Path(tmp), args.state == "on")
        per_cpu = r["spans"] / r["cpu"] if r["cpu"] else float("nan")
        print(
            f"{transport:>4}: {r['spans']:,.0f} spans processed, {r['rejected']:,.0f} rejected, "
            f"{r['cpu']:.2f} CPU-s, {r['wall']:.2f} s wall → {per_cpu:,.0f} spans/CPU-s "
            f"({per_cpu / ceiling:.0%} of decode-only), {r['spans'] / r['wall']:,.0f} spans/s wall"
        )
        print(f"      h2load {r['h2load']}")


if __name__ == "__main__":
    main()
