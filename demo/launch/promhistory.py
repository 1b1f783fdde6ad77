"""The history for Prometheus: what the processor's /metrics said during the backfilled weeks.

Prometheus starts empty, so without this its rates, week-over-week comparisons (response
sizes growing, traffic against last week) and dashboards have only the demo's minutes. Here
the history's spans and feedback events go, in time order, through a second processor of
their own (in this process, on loopback ports, no state store), and its /metrics is read
every ``step`` seconds of history time: each reading is one sample of every request-level
``api_*`` series at that time. They are written as OpenMetrics and turned into TSDB blocks
with ``promtool tsdb create-blocks-from openmetrics`` in Prometheus's data folder, with the
``job`` and ``instance`` labels the live scrape gives, so each backfilled series runs on
into the live one (the live processor got the same history: its counters start where
these end).

Consumer metrics (state store gauges) are not backfilled: they are computed from the store
and already have the weeks.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .backfill import Backfill

__all__ = ["PrometheusHistory", "PrometheusHistoryError", "below", "series_lines", "write_history"]

DEFAULT_SNAPSHOTS = 168  # readings over the whole history: 6 h apart for 42 days (4 a day for rates
# over a day, and none closer than an hour: rates over 1 h a week ago stay empty, not misleading)
_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


class PrometheusHistoryError(Exception):
    """The history could not be written for Prometheus; the message says why."""


@dataclasses.dataclass
class PrometheusHistory:
    snapshots: int
    series: int
    samples: int
    seconds: float


def below(value: str) -> str:
    """A counter's reading, a millionth under it unless it is a whole number.

    Weighted counts are sums of floats: the live processor adds the same history in other
    batches, so in another order, and may end 1e-11 under this reading. Prometheus would take
    that for a counter reset and count the whole history again in the first live rates."""
    v = float(value)
    if not math.isfinite(v) or v == int(v):
        return value
    return repr(max(math.floor(v * 1e6 - 1) / 1e6, 0.0))


def series_lines(exposition: str, extra_labels: str) -> dict[str, str]:
    """{series (name and labels, `extra_labels` first): value} of the request-level `api_*`
    samples of a text exposition (no comments, no `apiusage_*`, no `_created`); values are
    counters' (`below`)."""
    out = {}
    for line in exposition.splitlines():
        if not line.startswith("api_"):
            continue
        m = _SAMPLE.match(line)
        if m is None or m["name"].endswith("_created"):
            continue
        labels = f"{extra_labels},{m['labels']}" if m["labels"] else extra_labels
        out[f"{m['name']}{{{labels}}}"] = below(m["value"])
    return out


def _config(catalog: str, max_past_age: str) -> dict:
    loopback = {"grpc": {"endpoint": "127.0.0.1:0"}, "http": {"endpoint": "127.0.0.1:0"}}
    return {
        "receivers": {"otlp": {"protocols": loopback}},
        "exporters": {"prometheus": {"endpoint": "127.0.0.1:0"}},
        "catalog": catalog,
        "processors": {"usage": {"data_quality": {"max_past_age": max_past_age}}},
        "state": {"enabled": False},
    }


def _post(url: str, body: bytes) -> None:
    from .backfill import _post as post

    post(url, body, lambda: False, 60.0)


def write_history(
    history: Backfill,
    data: Path,
    *,
    job: str,
    instance: str,
    catalog: str,
    promtool: str | None = None,
    snapshots: int = DEFAULT_SNAPSHOTS,
    stop: Callable[[], bool] = lambda: False,
    progress: Callable[[int, int], None] | None = None,
) -> PrometheusHistory:
    """Read the history's series `snapshots` times over its span and write them as TSDB blocks
    into `data` (Prometheus's `--storage.tsdb.path`)."""
    from apiusage.processor.app import Processor
    from apiusage.processor.config import parse_config

    from .backfill import encode, encode_feedback

    promtool = promtool or shutil.which("promtool")
    if promtool is None:
        raise PrometheusHistoryError("promtool is not on the PATH (Debian package prometheus)")
    started = time.monotonic()
    calls, events = history.calls, history.feedback
    if not calls:
        return PrometheusHistory(0, 0, 0, 0.0)
    first, last = calls[0].at, history.now
    count = max(1, min(snapshots, int((last - first) // 60)))  # at most one a minute
    times = [first + (last - first) * (k + 1) / count for k in range(count)]
    extra = f'instance="{instance}",job="{job}"'
    values: dict[str, list[str]] = {}
    processor = Processor(parse_config(_config(catalog, f"{history.days + 2}d")))
    processor.start()
    taken = 0
    try:
        urls = processor.urls()
        traces = urls["otlp-http"]
        traces = traces if traces.endswith("/v1/traces") else f"{traces.rstrip('/')}/v1/traces"
        logs = traces.removesuffix("/v1/traces") + "/v1/logs"
        ci = fi = 0
        for t in times:
            if stop():
                break
            cj = ci
            while cj < len(calls) and calls[cj].at <= t:
                cj += 1
            fj = fi
            while fj < len(events) and events[fj].at <= t:
                fj += 1
            if cj > ci:
                _post(
                    traces,
                    encode(calls[ci:cj], history.pseudonym, now=history.now, upgraded=history.upgraded),
                )
            if fj > fi:
                _post(logs, encode_feedback(events[fi:fj], history.pseudonym))
            ci, fi = cj, fj
            deadline = time.monotonic() + 30
            while processor.queue.depth and time.monotonic() < deadline:
                time.sleep(0.002)
            with urllib.request.urlopen(urls["metrics"], timeout=30) as response:
                text = response.read().decode()
            stamp = f"{t:.3f}"
            for series, value in series_lines(text, extra).items():
                values.setdefault(series, []).append(f"{value} {stamp}")
            taken += 1
            if progress is not None:
                progress(taken, count)
    finally:
        processor.stop()
    if stop():
        return PrometheusHistory(taken, len(values), 0, time.monotonic() - started)
    samples = sum(len(v) for v in values.values())
    with tempfile.TemporaryDirectory(prefix="apiusage-demo-history-") as tmp:
        source = Path(tmp) / "history.om"
        with open(source, "w", encoding="utf-8") as out:
            for series, rows in values.items():  # a series' samples together, oldest first
                for row in rows:
                    out.write(f"{series} {row}\n")
            out.write("# EOF\n")
        data.mkdir(parents=True, exist_ok=True)
        run = subprocess.run(
            [
                promtool,
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "--max-block-duration=24h",
                str(source),
                str(data),
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
    if run.returncode != 0:
        raise PrometheusHistoryError(
            f"promtool could not write the history into {data}: {(run.stderr or run.stdout)[-500:]}"
        )
    return PrometheusHistory(taken, len(values), samples, time.monotonic() - started)
