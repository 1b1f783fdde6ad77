"""OTLP/HTTP under flood: requests accepted and derived per second, 600 KB bodies from N clients.

Starts `apiusage serve` from the current checkout (queue unbounded, so nothing is refused),
lets ``--clients`` threads post one 4,000-span protobuf body (636 KB) as fast as they can
for ``--seconds``, then reports the requests accepted per second, how many were derived by
the time the flood stopped, and how long the backlog took to drain.

Usage (from a checkout): .venv/bin/python bench/http_flood.py [--seconds 6] [--clients 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, os.getcwd())  # the checkout's tests.support, so its own processor runs

from tests.support.otlp import request_with_spans  # noqa: E402
from tests.support.processor import sample, start_processor  # noqa: E402

SPANS = 4000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--clients", type=int, default=6)
    args = parser.parse_args()
    body = request_with_spans(SPANS).SerializeToString()
    config = {"processors": {"queue": {"max_spans": 50_000_000}}}
    with tempfile.TemporaryDirectory() as tmp, start_processor(Path(tmp), config) as running:
        url = f"{running.http_endpoint}/v1/traces"
        counts = {"ok": 0, "other": 0}
        lock = threading.Lock()
        stop = threading.Event()

        def push() -> None:
            while not stop.is_set():
                req = urllib.request.Request(
                    url, data=body, headers={"Content-Type": "application/x-protobuf"}
                )
                try:
                    with urllib.request.urlopen(req, timeout=30) as response:
                        response.read()
                        key = "ok"
                except urllib.error.HTTPError:
                    key = "other"
                with lock:
                    counts[key] += 1

        threads = [threading.Thread(target=push) for _ in range(args.clients)]
        start = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(args.seconds)
        stop.set()
        for t in threads:
            t.join(30)
        elapsed = time.monotonic() - start
        derived = (sample(running.scrape(), "apiusage_spans_processed_total") or 0) / SPANS
        drain_start = time.monotonic()
        running.wait_processed(counts["ok"] * SPANS, timeout=120)
        drained = time.monotonic() - drain_start
    print(
        f"{os.getcwd()}: {len(body)} B bodies, {args.clients} clients, {elapsed:.1f} s: {counts}; "
        f"{counts['ok'] / elapsed:.1f} req/s accepted, {derived / elapsed:.1f} req/s derived "
        f"during the flood, backlog drained in {drained:.1f} s"
    )


if __name__ == "__main__":
    main()
