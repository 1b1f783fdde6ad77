"""Clients pushing as fast as they can: the processor's resident memory stays under its ceiling,
the excess is refused retryably, and every accepted span is derived."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support.otlp import request_with_spans
from tests.support.processor import sample, start_processor

HEADROOM_MIB = 40  # ceiling = idle RSS + this, so the flood must be held back to stay under it


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def flood(url: str, body: bytes, seconds: float, pid: int) -> tuple[dict[str, int], float]:
    """Six clients post as fast as they can; returns their outcomes and the peak RSS seen."""
    outcomes = {"ok": 0, "refused": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def push() -> None:
        while not stop.is_set():
            req = urllib.request.Request(url, data=body,
                                         headers={"Content-Type": "application/x-protobuf"})
            try:
                with urllib.request.urlopen(req, timeout=10) as response:
                    response.read()
                    key = "ok"
            except urllib.error.HTTPError as exc:
                assert exc.code == 503 and exc.headers["Retry-After"] == "5"
                key = "refused"
            with lock:
                outcomes[key] += 1

    threads = [threading.Thread(target=push) for _ in range(6)]
    for t in threads:
        t.start()
    peak = 0.0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        peak = max(peak, rss_mib(pid))
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(15)
    return outcomes, peak


def test_rss_stays_under_the_ceiling_under_flood(tmp_path) -> None:
    body = request_with_spans(4000).SerializeToString()
    (tmp_path / "probe").mkdir()
    (tmp_path / "limited").mkdir()
    with start_processor(tmp_path / "probe") as probe:
        time.sleep(0.5)
        idle = rss_mib(probe.process.pid)
    ceiling = int(idle) + HEADROOM_MIB
    config = {"processors": {
        "queue": {"max_spans": 5_000_000},  # so only the memory limiter can hold the flood
        "memory_limiter": {"limit_mib": ceiling, "spike_limit_mib": HEADROOM_MIB // 2,
                           "check_interval": "10ms"}}}
    with start_processor(tmp_path / "limited", config) as running:
        outcomes, peak = flood(f"{running.http_endpoint}/v1/traces", body, 8,
                               running.process.pid)
        m = running.wait_processed(outcomes["ok"] * 4000, timeout=120)
    assert peak < ceiling, f"peak RSS {peak:.0f} MiB over the {ceiling} MiB ceiling"
    assert outcomes["ok"] > 0 and outcomes["refused"] > 0, outcomes
    assert sample(m, "apiusage_memory_limiter_refusals_total") == outcomes["refused"]
    assert sample(m, "apiusage_spans_rejected_total", reason="queue_full") == 0
