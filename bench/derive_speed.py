"""Derivation speed: `Deriver.derive` per span, on freshly scanned spans of realistic diversity.

Builds BATCHES distinct ExportTraceServiceRequests of 512 SERVER spans (about 100k spans in all:
3,000 consumers, 100 routes, 6 User-Agents, a quarter of the spans without a client name so the
User-Agent fallback runs), scans every batch afresh just before timing it (so no string arrives
with its hash cached, as in the processor) and times, with time.process_time:

* ``Deriver.derive`` alone,
* ``Deriver.derive`` followed by ``RequestMetrics.consume`` (the first sink).

Prints the median and the best of ``--rounds`` passes in µs per span.  ``--deriver PATH`` (repeatable)
adds another revision of ``processor/derive/requests.py`` (e.g. ``git show REV:processor/derive/requests.py
> /tmp/old.py``), loaded into the same package; the variants' passes alternate in one process, so a
busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import platform
import random
import statistics
import time

from apiusage.demo.otlp import ExportTraceServiceRequest, add_resource, add_span
from apiusage.processor.config import LimitsConfig, UsageConfig
from apiusage.processor.derive import requests as current
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import span_field_sources
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.telemetry import PipelineStats

BATCHES = 200
SPANS = 512
CONSUMERS = 3000
ROUTES = [
    f"/v{1 + i % 3}/{name}{suffix}"
    for i, (name, suffix) in enumerate(
        (f"res{r:02d}", s) for r in range(25) for s in ("", "/{id}", "/{id}/items", "/search")
    )
]
AGENTS = [
    "python-httpx/0.27.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
    "acme-sdk-go/2.3.1 (linux; amd64)",
    "curl/8.5.0",
    "okhttp/4.12.0",
    "acme-sdk-py/3.1.0 python/3.11",
]
PLANS = ["free", "pro", "enterprise"]
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def build_batch(rng: random.Random, now_ns: int) -> bytes:
    req = ExportTraceServiceRequest()
    resource = {"service.name": f"svc-{rng.randrange(4)}", "service.version": "1.4.2"}
    scope = add_resource(req, resource, scope="opentelemetry.instrumentation.fastapi")
    for _ in range(SPANS):
        trace_id, span_id = rng.randbytes(16), rng.randbytes(8)  # in this order: same batches
        route = rng.choice(ROUTES)
        method = rng.choice(("GET", "GET", "GET", "POST", "PUT", "DELETE"))
        start_ns = now_ns - rng.randrange(10**9, 30 * 10**9)
        end_ns = start_ns + rng.randrange(10**5, 10**9)
        attributes: dict[str, str | int] = {
            "http.request.method": method,
            "http.route": route,
            "http.response.status_code": rng.choice((200, 200, 200, 201, 204, 404, 429, 500)),
            "url.path": route.replace("{id}", str(rng.randrange(10**6))),
            "user_agent.original": rng.choice(AGENTS),
            "server.address": "api.example.com",
            "server.port": 443,
            "apiusage.consumer.id": f"consumer-{rng.randrange(CONSUMERS):05d}",
            "apiusage.consumer.plan_tier": rng.choice(PLANS),
            "apiusage.feature": rng.choice(("orders", "search", "billing", "export")),
            "apiusage.schema_version": 1,
        }
        if rng.random() < 0.75:
            attributes["apiusage.client.name"] = rng.choice(("acme-sdk-go", "acme-sdk-py", "cli"))
            attributes["apiusage.client.version"] = rng.choice(("2.3.1", "2.4.0", "1.9.12", "3.0.0"))
        if rng.random() < 0.5:
            attributes["apiusage.api.version"] = rng.choice(("2024-01-01", "2025-06-01"))
        add_span(
            scope,
            attributes,
            name=f"{method} {route}",
            start_ns=start_ns,
            end_ns=end_ns,
            trace_id=trace_id,
            span_id=span_id,
        )
    return req.SerializeToString()


def load_deriver(path: str, n: int) -> type:
    """The Deriver class of the requests.py revision at path, as a sibling of the installed one."""
    name = f"apiusage.processor.derive._bench_requests_{n}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"not a Python file: {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Deriver


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed passes over every batch")
    parser.add_argument(
        "--deriver",
        action="append",
        default=[],
        metavar="PATH",
        help="also time the Deriver of this requests.py revision",
    )
    args = parser.parse_args()
    rng = random.Random(12)
    now = time.time_ns()
    bodies = [build_batch(rng, now) for _ in range(BATCHES)]
    usage = UsageConfig()
    scanner = FieldScanner(
        span_field_sources(usage), [usage.attributes.service], array_fields=current.ARRAY_FIELD_INDEXES
    )
    variants = [("installed", current.Deriver)]
    variants += [(path, load_deriver(path, n)) for n, path in enumerate(args.deriver)]
    total = BATCHES * SPANS
    # Per variant: every pass's total, and per batch its fastest pass (a busy, shared machine
    # only ever adds time, so the sum of per-batch minima is the steadiest figure).
    totals: dict[tuple[str, bool], list[float]] = {}
    best: dict[tuple[str, bool], list[float]] = {}
    # One RequestMetrics per variant, warmed by an untimed pass: in a running processor the
    # series exist already; creating ~30,000 of them would swamp the figure.
    metrics_of = {name: RequestMetrics(LimitsConfig(), BUCKETS, PipelineStats()) for name, _ in variants}
    for round_ in range(args.rounds + 1):
        for name, deriver_class in variants:
            for with_metrics in (False, True):
                deriver = deriver_class(usage, PipelineStats())  # afresh: its memo warms in the pass
                metrics = metrics_of[name] if with_metrics else None
                gc.collect()
                per_batch = []
                for body in bodies:
                    # Scanned afresh, untimed, one batch alive at a time as in the worker: no
                    # string arrives with its hash cached, and the garbage collector sees what
                    # it sees in the processor.
                    resources, spans = scanner.scan(body)
                    start = time.process_time()
                    requests = deriver.derive(resources, spans)
                    if metrics is not None:
                        metrics.consume(requests)
                    per_batch.append(time.process_time() - start)
                if round_:
                    key = (name, with_metrics)
                    totals.setdefault(key, []).append(sum(per_batch) * 1e6 / total)
                    best[key] = [min(a, b) for a, b in zip(best.get(key, per_batch), per_batch, strict=True)]
    print(
        f"python {platform.python_version()}, scanner {scanner.implementation}; "
        f"{BATCHES} batches x {SPANS} spans, {CONSUMERS} consumers, {len(ROUTES)} routes, "
        f"{len(AGENTS)} UAs; {args.rounds} passes each, alternating"
    )
    for key, t in totals.items():
        name, with_metrics = key
        what = "derive + RequestMetrics.consume" if with_metrics else "derive"
        print(
            f"{what:32s} best per batch {sum(best[key]) * 1e6 / total:6.3f}  "
            f"median pass {statistics.median(t):6.3f} us/span  {name}"
        )


if __name__ == "__main__":
    main()
