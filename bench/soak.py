"""Soak: the processor under a fixed high rate for a bounded time, with 50,000 live series.

Starts `apiusage serve` (SQLite state on), fills it with `--series` distinct
label sets, then has h2load (Debian nghttp2-client) send a pre-serialized
512-span OTLP request at a fixed rate for `--minutes`, over loopback only.
Every 5 s it records the processor's RSS, the time one /metrics scrape takes,
and the spans processed. At the end it reports accepted, rejected and lost
spans (accepted by the receiver but never derived), RSS over time and scrape
latency.

    .venv/bin/python bench/soak.py --minutes 10 --rps 150 --clients 2
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apiusage.demo.otlp import ExportTraceServiceRequest, ScopeSpans, add_resource, add_span  # noqa: E402

from bench.processor_throughput import SPANS_PER_BATCH, build_batch  # noqa: E402
from tests.support.processor import parse_metrics, sample, start_processor  # noqa: E402


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def series_batches(series: int, per_request: int = 500) -> list[bytes]:
    """Spans with `series` distinct (service, route, status) label sets."""
    services, statuses = 50, (200, 201, 400, 404, 500)
    routes = max(1, series // (services * len(statuses)))
    combos = [(s, r, c) for s in range(services) for r in range(routes) for c in statuses][:series]
    now = time.time_ns()
    out = []
    for i in range(0, len(combos), per_request):
        req = ExportTraceServiceRequest()
        by_service: dict[int, ScopeSpans] = {}
        for s, r, c in combos[i : i + per_request]:
            scope = by_service.get(s)
            if scope is None:
                scope = by_service[s] = add_resource(req, {"service.name": f"svc-{s:02d}"})
            attributes = {
                "http.request.method": "GET",
                "http.route": f"/v1/r{r:03d}",
                "http.response.status_code": c,
            }
            add_span(scope, attributes, start_ns=now - 2_000_000, end_ns=now)
        out.append(req.SerializeToString())
    return out


def post(url: str, body: bytes) -> None:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
    with urllib.request.urlopen(req, timeout=30) as response:
        response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rps", type=int, default=150, help="requests per second per client")
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--series", type=int, default=50_000)
    parser.add_argument("--transport", choices=["http", "grpc"], default="http")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        raise SystemExit("h2load not found: apt-get install nghttp2-client (or: make bench)")
    rate = args.rps * args.clients * SPANS_PER_BATCH
    print(
        f"soak: {args.minutes:g} min at {args.rps} req/s x {args.clients} clients = "
        f"{rate:,} spans/s over {args.transport}, {args.series:,} series pre-loaded"
    )
    body = build_batch()
    with (
        tempfile.TemporaryDirectory() as tmp,
        start_processor(
            Path(tmp), {"processors": {"limits": {"max_label_values": {"route": 2000}}}}
        ) as running,
    ):
        pid = running.process.pid
        traces = f"{running.http_endpoint}/v1/traces"
        preload = series_batches(args.series)
        for b in preload:
            post(traces, b)
        preloaded = args.series
        if args.transport == "grpc":
            payload = Path(tmp) / "body.grpc"
            payload.write_bytes(b"\x00" + struct.pack(">I", len(body)) + body)
            url = f"http://{running.grpc_endpoint}/opentelemetry.proto.collector.trace.v1.TraceService/Export"
            extra = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        else:
            payload = Path(tmp) / "body.pb"
            payload.write_bytes(body)
            url, extra = traces, ["--h1", "-H", "content-type: application/x-protobuf"]
        load = subprocess.Popen(
            [
                "h2load",
                "-D",
                str(int(args.minutes * 60)),
                "--rps",
                str(args.rps),
                "-c",
                str(args.clients),
                "-d",
                str(payload),
                *extra,
                url,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        samples = []  # (seconds, rss MiB, scrape seconds, processed, live series)
        start = time.monotonic()
        while load.poll() is None:
            t0 = time.perf_counter()
            with urllib.request.urlopen(running.metrics_url, timeout=30) as response:
                text = response.read().decode()
            scrape = time.perf_counter() - t0
            m = parse_metrics(text)
            live = sum(v for (n, _), v in m.items() if n == "apiusage_series")
            samples.append(
                (
                    time.monotonic() - start,
                    rss_mib(pid),
                    scrape,
                    sample(m, "apiusage_spans_processed_total") or 0,
                    live,
                )
            )
            time.sleep(5)
        out = load.stdout.read()
        codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
        ok, non_ok = (int(codes.group(1)), sum(map(int, codes.groups()[1:]))) if codes else (0, 0)
        errored = re.search(r"(\d+) failed, (\d+) errored", out)
        deadline = time.monotonic() + 120
        while True:  # let the queue drain
            m = running.scrape()
            received = sum(v for (n, _), v in m.items() if n == "apiusage_spans_received_total")
            rejected = sum(v for (n, _), v in m.items() if n == "apiusage_spans_rejected_total")
            accepted = received - rejected  # what the processor answered 200 for
            processed = sample(m, "apiusage_spans_processed_total") or 0
            if processed >= accepted or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        refused = non_ok * SPANS_PER_BATCH
        rss = [s[1] for s in samples]
        scrapes = [s[2] for s in samples]
        print(f"duration            {samples[-1][0] if samples else 0:.0f} s")
        print(
            f"requests            {ok:,} accepted, {non_ok:,} refused (retryable), "
            f"{errored.group(1) if errored else '?'} failed"
        )
        print(
            f"spans               {accepted:,} accepted, {refused:,} refused, "
            f"{rejected:,.0f} rejected by the processor, {accepted - processed:,.0f} lost"
        )
        print(f"throughput          {(processed - preloaded) / max(samples[-1][0], 1):,.0f} spans/s")
        print(f"live series         {max(s[4] for s in samples):,.0f} (max)")
        print(
            f"RSS MiB             start {rss[0]:.0f}, min {min(rss):.0f}, max {max(rss):.0f}, "
            f"end {rss[-1]:.0f}"
        )
        print(
            f"/metrics scrape     median {statistics.median(scrapes) * 1000:.0f} ms, "
            f"max {max(scrapes) * 1000:.0f} ms"
        )
        print(
            "RSS over time (every ~minute): "
            + ", ".join(f"{t / 60:.0f}m={r:.0f}" for t, r, *_ in samples[::12])
        )


if __name__ == "__main__":
    main()
