"""OTLP scan (decode) speed: spans per CPU-second.

Builds one realistic ExportTraceServiceRequest (512 SERVER spans, 16 attributes
each, as the FastAPI instrumentation plus apiusage's own attributes produce) and
measures, with time.process_time:

* protobuf ``ExportTraceServiceRequest.ParseFromString`` alone (no field access),
* ``PyScanner.scan`` (protobuf parse + reading the wanted fields from Python),
* the C ``Scanner.scan`` (9 wanted span keys, 2 resource keys),
* the C ``Scanner.scan`` with the processor's default attribute groups (as
  ``FieldScanner`` uses it: 13 span fields from 22 keys, 1 resource key),
* the same with a span bound (``max_spans=100_000``, as the receivers use it),
  when the build has one,
* the same reading feature-flag span events too (``event_names``, as the processor
  builds it; this batch has none, so the figure is the cost of asking), when the
  build can.

Usage: .venv/bin/python bench/scan_speed.py [--seconds 2] [--rounds 5] [--cscan PATH]

``--cscan PATH`` times another build of the extension (a ``.so`` built from another
revision of ``_cscan.c``) instead of the installed one, to compare builds: run both
alternately in the same session.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import random
import time
from collections.abc import Callable

import google.protobuf
from apiusage.demo.otlp import key_value
from apiusage.processor.config import UsageConfig
from apiusage.processor.derive.flags import EVALUATION_EVENT_NAMES
from apiusage.processor.derive.requests import FLAG_EVENT_KEYS, span_field_sources
from apiusage.processor.receivers import scan
from google.protobuf.internal import api_implementation
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

SPANS = 512
SPAN_KEYS = [
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "apiusage.consumer.id",
    "apiusage.consumer.plan_tier",
    "apiusage.client.name",
    "apiusage.client.version",
    "apiusage.feature",
    "apiusage.schema_version",
]
RESOURCE_KEYS = ["service.name", "deployment.environment.name"]

ROUTES = ["/v1/orders", "/v1/orders/{order_id}", "/v1/customers/{customer_id}", "/v1/search"]
AGENTS = [
    "python-httpx/0.27.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "acme-sdk-go/2.3.1 (linux; amd64)",
]


def build_request(rng: random.Random) -> bytes:
    spans = []
    t0 = 1_718_000_000_000_000_000
    for i in range(SPANS):
        route = rng.choice(ROUTES)
        path = route.replace("{order_id}", str(rng.randrange(10**6))).replace(
            "{customer_id}", f"c-{rng.randrange(10**4)}"
        )
        method = rng.choice(["GET", "GET", "GET", "POST", "DELETE"])
        status = rng.choice([200, 200, 200, 201, 404, 429, 500])
        consumer = rng.randrange(2000)
        start = t0 + i * 1_000_000 + rng.randrange(1000)
        spans.append(
            Span(
                trace_id=rng.randbytes(16),
                span_id=rng.randbytes(8),
                name=f"{method} {route}",
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=start,
                end_time_unix_nano=start + rng.randrange(200_000, 90_000_000),
                flags=0x301,
                status=Status(code=Status.STATUS_CODE_ERROR if status >= 500 else 0),
                attributes=[
                    key_value("http.request.method", method),
                    key_value("http.route", route),
                    key_value("http.response.status_code", status),
                    key_value("url.path", path),
                    key_value("url.scheme", "https"),
                    key_value("user_agent.original", rng.choice(AGENTS)),
                    key_value("server.address", "api.example.com"),
                    key_value("server.port", 443),
                    key_value("network.protocol.version", "1.1"),
                    key_value("client.address", f"10.0.{rng.randrange(256)}.{rng.randrange(256)}"),
                    key_value("apiusage.consumer.id", f"consumer-{consumer:05d}"),
                    key_value("apiusage.consumer.plan_tier", rng.choice(["free", "pro", "enterprise"])),
                    key_value("apiusage.client.name", rng.choice(["acme-sdk-go", "acme-sdk-py", "curl"])),
                    key_value("apiusage.client.version", rng.choice(["2.3.1", "2.4.0", "1.9.12"])),
                    key_value("apiusage.feature", rng.choice(["orders", "search", "customers"])),
                    key_value("apiusage.schema_version", 1),
                ],
            )
        )
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        key_value("service.name", "orders-api"),
                        key_value("service.version", "2024.06.1"),
                        key_value("deployment.environment.name", "production"),
                        key_value("telemetry.sdk.language", "python"),
                        key_value("telemetry.sdk.name", "opentelemetry"),
                        key_value("telemetry.sdk.version", "1.25.0"),
                    ]
                ),
                scope_spans=[
                    ScopeSpans(
                        scope=InstrumentationScope(
                            name="opentelemetry.instrumentation.fastapi", version="0.46b0"
                        ),
                        spans=spans,
                    )
                ],
            )
        ]
    )
    return request.SerializeToString()


def spans_per_cpu_second(fn: Callable[[], object], seconds: float, rounds: int) -> float:
    """Best of `rounds` runs of about `seconds` CPU time each."""
    fn()
    best = 0.0
    for _ in range(rounds):
        calls = 0
        start = time.process_time()
        while True:
            fn()
            calls += 1
            elapsed = time.process_time() - start
            if elapsed >= seconds:
                break
        best = max(best, calls * SPANS / elapsed)
    return best


def load_build(path: str) -> type:
    """The Scanner class of the extension built at path."""
    spec = importlib.util.spec_from_file_location("apiusage.processor.receivers._cscan", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"not an extension module: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module._set_error_class(scan.ScanError, scan.TooManySpans)
    except TypeError:  # a build from before max_spans takes one class
        module._set_error_class(scan.ScanError)
    return module.Scanner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="CPU seconds per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per variant (best kept)")
    parser.add_argument("--cscan", metavar="PATH", help="time this build of the C extension instead")
    args = parser.parse_args()
    c_scanner = load_build(args.cscan) if args.cscan else scan.CScanner

    data = build_request(random.Random(42))
    py = scan.PyScanner(SPAN_KEYS, RESOURCE_KEYS)
    variants: list[tuple[str, Callable[[], object]]] = [
        ("protobuf ParseFromString only", lambda: ExportTraceServiceRequest().ParseFromString(data)),
        ("PyScanner.scan", lambda: py.scan(data)),
    ]
    if c_scanner is not None:
        c = c_scanner(SPAN_KEYS, RESOURCE_KEYS)
        assert c.scan(data) == py.scan(data), "C and Python scanners disagree"
        variants.append(("C Scanner.scan", lambda: c.scan(data)))
        groups = [tuple(g) for g in span_field_sources(UsageConfig())]
        grouped = c_scanner(groups, [("service.name",)])
        assert grouped.scan(data) == scan.PyScanner(groups, [("service.name",)]).scan(data)
        variants.append(("C Scanner.scan, default groups", lambda: grouped.scan(data)))
        try:
            bounded = c_scanner(groups, [("service.name",)], max_spans=100_000)
        except TypeError:
            print("this C build has no max_spans")
        else:
            assert bounded.scan(data) == grouped.scan(data)
            variants.append(("C default groups, max_spans", lambda: bounded.scan(data)))
            try:
                flagged = c_scanner(
                    groups,
                    [("service.name",)],
                    max_spans=100_000,
                    event_names=EVALUATION_EVENT_NAMES,
                    event_keys=FLAG_EVENT_KEYS,
                )
            except TypeError:
                print("this C build reads no span events")
            else:
                assert [s[:-1] for s in flagged.scan(data)[1]] == bounded.scan(data)[1]
                variants.append(("C ... max_spans, event_names", lambda: flagged.scan(data)))
    else:
        print(f"C scanner not available: {scan.C_IMPORT_ERROR}")

    print(
        f"python {platform.python_version()}, protobuf {google.protobuf.__version__}"
        f" ({api_implementation.Type()}), Scanner = {scan.IMPLEMENTATION}"
        + (f", C build {args.cscan}" if args.cscan else "")
    )
    print(
        f"batch: {SPANS} spans, {len(data)} bytes, {len(SPAN_KEYS)} span keys, "
        f"{len(RESOURCE_KEYS)} resource keys; best of {args.rounds} x {args.seconds:g} CPU-s"
    )
    for name, fn in variants:
        rate = spans_per_cpu_second(fn, args.seconds, args.rounds)
        print(f"{name:32s} {rate:>13,.0f} spans/CPU-s  {1e6 / rate:7.3f} us/span")


if __name__ == "__main__":
    main()
