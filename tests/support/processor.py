"""Start a real processor for a test: in-process (`running_processor`) or as `apiusage serve`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.support.polling import read_until

LOOPBACK_CONFIG: dict[str, Any] = {
    "receivers": {
        "otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}}
    },
    "exporters": {"prometheus": {"endpoint": "127.0.0.1:0"}},
}


def merge(base: dict, extra: dict | None) -> dict:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


Samples = dict[tuple[str, frozenset], float]


def parse_metrics(text: str) -> Samples:
    """Every sample as {(sample name, frozenset of label items): value}."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, frozenset(s.labels.items())] = s.value
    return out


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def matching(samples: Samples, name: str, **labels: str) -> dict[frozenset, float]:
    """All samples of `name` whose labels include `labels`."""
    want = set(labels.items())
    return {lb: v for (n, lb), v in samples.items() if n == name and want <= lb}


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 5) -> tuple[int, bytes, dict]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


@dataclass
class RunningProcessor:
    grpc_endpoint: str
    http_endpoint: str  # base URL, e.g. http://127.0.0.1:4318
    metrics_url: str
    process: subprocess.Popen | None = None
    processor: Any = None

    def scrape(self) -> Samples:
        status, body, _ = get(self.metrics_url)
        assert status == 200, body
        return parse_metrics(body.decode())

    def wait_processed(self, spans: int, timeout: float = 10) -> Samples:
        """Scrape until `apiusage_spans_processed_total` reaches `spans` (and fail past it)."""

        def processed(samples: Samples) -> float:
            return sample(samples, "apiusage_spans_processed_total") or 0

        samples = read_until(self.scrape, lambda m: processed(m) >= spans, timeout)
        assert processed(samples) == spans, f"processed {processed(samples)} spans, expected {spans}"
        return samples


def wait_for(
    running: RunningProcessor, name: str, value: float, timeout: float = 15, **labels: str
) -> Samples:
    """Scrape until sample `name{labels}` equals `value`; returns the last scrape."""
    m = read_until(running.scrape, lambda m: sample(m, name, **labels) == value, timeout, interval=0.1)
    got = sample(m, name, **labels)
    assert got == value, f"{name}{labels} = {got}, expected {value}"
    return m


def _endpoints(urls: dict[str, str]) -> tuple[str, str, str]:
    return (urls.get("otlp-grpc", ""), urls.get("otlp-http", "").removesuffix("/v1/traces"), urls["metrics"])


def _with_sqlite(extra_config: dict | None, path: str) -> dict:
    """Loopback ports, and SQLite state in a test folder unless the test chose PostgreSQL."""
    if ((extra_config or {}).get("state") or {}).get("postgres"):
        return LOOPBACK_CONFIG
    return merge(LOOPBACK_CONFIG, {"state": {"sqlite": {"path": path}}})


@contextlib.contextmanager
def running_processor(extra_config: dict | None = None) -> Iterator[RunningProcessor]:
    """An in-process Processor on loopback ports chosen by the OS."""
    from apiusage.processor.app import Processor
    from apiusage.processor.config import parse_config

    with tempfile.TemporaryDirectory(prefix="apiusage-state-") as tmp:
        base = _with_sqlite(extra_config, f"{tmp}/state.db")
        processor = Processor(parse_config(merge(base, extra_config)))
        processor.start()
        try:
            yield RunningProcessor(*_endpoints(processor.urls()), processor=processor)
        finally:
            processor.stop()


_URL_LINE = re.compile(r"^\s+(otlp-grpc|otlp-http|metrics)\s+(\S+)$")


def apiusage_command() -> list[str]:
    exe = Path(sys.executable).with_name("apiusage")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "apiusage.cli"]


def experiments_report(config: Path, *args: str) -> list[str]:
    """`apiusage experiments report --config CONFIG ARGS...` as a subprocess: its lines (it must
    succeed)."""
    run = subprocess.run(
        [*apiusage_command(), "experiments", "report", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.splitlines()


@contextlib.contextmanager
def start_processor(
    tmp_path: Path, extra_config: dict | None = None, env: dict[str, str] | None = None
) -> Iterator[RunningProcessor]:
    """`apiusage serve` as a subprocess, on loopback ports chosen by the OS."""
    config = tmp_path / "apiusage.yaml"
    base = _with_sqlite(extra_config, str(tmp_path / "state.db"))
    config.write_text(yaml.safe_dump(merge(base, extra_config)))
    process = subprocess.Popen(
        [*apiusage_command(), "serve", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    urls: dict[str, str] = {}
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 20
        while "metrics" not in urls and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if m := _URL_LINE.match(line):
                urls[m.group(1)] = m.group(2)
        if "metrics" not in urls:
            process.kill()
            raise AssertionError(f"apiusage serve did not start: {process.stderr.read()}")
        yield RunningProcessor(*_endpoints(urls), process=process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for stream in (process.stdout, process.stderr):
            if stream:
                stream.close()
