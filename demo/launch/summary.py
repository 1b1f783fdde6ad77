"""The live summary: a few numbers read from the processor's /metrics and Prometheus's alerts."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["Reading", "Summary", "fetch_alerts", "read_metrics"]

_TIERS = ("enterprise", "pro", "free")


@dataclass
class Reading:
    """One scrape of the processor, reduced to what the summary shows."""

    at: float
    spans: float = 0.0  # apiusage_spans_received_total
    processed: float = 0.0  # apiusage_spans_processed_total
    report_time: float = 0.0  # apiusage_state_report_timestamp_seconds: last refresh of the state
    requests_by_tier: dict[str, float] = field(default_factory=dict)  # api_requests_total
    active_1d: dict[str, float] = field(default_factory=dict)  # api_active_consumers{window="1d"}
    active_7d: dict[str, float] = field(default_factory=dict)
    new_consumers: float = 0.0  # api_new_consumers_total
    deprecated: dict[str, float] = field(default_factory=dict)  # "METHOD route" -> consumers (30d)
    migrated: dict[str, float] = field(default_factory=dict)
    at_risk: float = 0.0
    # (experiment, variant) -> requests (api_experiment_requests_total), consumers first assigned
    experiment_requests: dict[tuple[str, str], float] = field(default_factory=dict)
    experiment_consumers: dict[tuple[str, str], float] = field(default_factory=dict)
    release_requests: dict[str, float] = field(default_factory=dict)  # version -> api_release_requests_total
    release_rank: dict[str, float] = field(default_factory=dict)  # version -> api_release_rank (0: newest)


def parse(text: str, at: float) -> Reading:
    r = Reading(at)
    tiers: dict[str, float] = defaultdict(float)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name, labels, value = s.name, s.labels, s.value
            if name == "apiusage_spans_received_total":
                r.spans += value
            elif name == "apiusage_spans_processed_total":
                r.processed += value
            elif name == "apiusage_state_report_timestamp_seconds":
                r.report_time = max(r.report_time, value)
            elif name == "api_requests_total":
                tiers[labels.get("plan_tier", "")] += value
            elif name == "api_active_consumers" and labels.get("window") in ("1d", "7d"):
                target = r.active_1d if labels["window"] == "1d" else r.active_7d
                target[labels.get("plan_tier", "")] = target.get(labels.get("plan_tier", ""), 0) + value
            elif name == "api_new_consumers_total":
                r.new_consumers += value
            elif (
                name in ("api_deprecated_endpoint_consumers", "api_migrated_consumers")
                and labels.get("window") == "30d"
            ):
                key = f"{labels.get('method', '')} {labels.get('route', '')}"
                target = r.deprecated if name == "api_deprecated_endpoint_consumers" else r.migrated
                target[key] = target.get(key, 0) + value
            elif name == "api_consumers_at_risk":
                r.at_risk += value
            elif name in ("api_experiment_requests_total", "api_experiment_consumers"):
                arm = (labels.get("experiment", ""), labels.get("variant", ""))
                into = (
                    r.experiment_requests
                    if name == "api_experiment_requests_total"
                    else r.experiment_consumers
                )
                into[arm] = into.get(arm, 0) + value
            elif name == "api_release_requests_total":
                version = labels.get("version", "")
                r.release_requests[version] = r.release_requests.get(version, 0) + value
            elif name == "api_release_rank":
                r.release_rank[labels.get("version", "")] = value
    r.requests_by_tier = dict(tiers)
    return r


def read_metrics(url: str, timeout: float = 5.0) -> Reading:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode("utf-8"), time.monotonic())


def fetch_alerts(prometheus_url: str, timeout: float = 5.0) -> tuple[list[str], int]:
    """(names of the firing alerts, how many are pending) from Prometheus's API."""
    with urllib.request.urlopen(f"{prometheus_url}/api/v1/alerts", timeout=timeout) as response:
        alerts = json.load(response)["data"]["alerts"]
    firing = sorted({a["labels"].get("alertname", "?") for a in alerts if a.get("state") == "firing"})
    pending = sum(1 for a in alerts if a.get("state") == "pending")
    return firing, pending


def _rate(new: float, old: float, seconds: float) -> float:
    return max(0.0, new - old) / seconds if seconds > 0 else 0.0


def _tiers(values: dict[str, float]) -> list[str]:
    order = [t for t in _TIERS if t in values] + sorted(t for t in values if t not in _TIERS)
    return order


def _experiments(reading: Reading) -> list[str]:
    """One part per experiment: each variant's requests and consumers, so far."""
    out = []
    for experiment in sorted({e for e, _ in reading.experiment_requests}):
        variants = sorted(v for e, v in reading.experiment_requests if e == experiment)
        out.append(
            f"experiment {experiment}: "
            + ", ".join(
                f"{v} {reading.experiment_requests[(experiment, v)]:.0f} requests "
                f"{reading.experiment_consumers.get((experiment, v), 0):.0f} consumers"
                for v in variants
            )
        )
    return out


def _releases(reading: Reading, prev: Reading | None) -> str | None:
    """The releases, newest first, each with its share of the requests since the last reading."""
    if not reading.release_requests:
        return None
    versions = sorted(reading.release_requests, key=lambda v: (reading.release_rank.get(v, 1e9), v))
    if prev is not None:
        grown = {
            v: max(0.0, reading.release_requests[v] - prev.release_requests.get(v, 0.0)) for v in versions
        }
    else:
        grown = dict(reading.release_requests)
    total = sum(grown.values())
    shares = [f"{v} {100 * grown[v] / total:.0f}%" if total else f"{v} -" for v in versions]
    return "releases (share of requests now): " + ", ".join(shares)


class Summary:
    """Turns successive readings into one short line each."""

    def __init__(self, metrics_url: str, prometheus_url: str | None) -> None:
        self.metrics_url = metrics_url
        self.prometheus_url = prometheus_url
        self.previous: Reading | None = None

    def line(self, reading: Reading, alerts: tuple[list[str], int] | None | str) -> str:
        """Two lines: traffic and consumers; deprecations and alerts; then, once there are any, one
        with the experiments' variants and the releases."""
        prev, self.previous = self.previous, reading
        first = [time.strftime("%H:%M:%S")]
        if prev is not None:
            dt = reading.at - prev.at
            first.append(f"{_rate(reading.spans, prev.spans, dt):.0f} spans/s")
            rates = {
                t: _rate(v, prev.requests_by_tier.get(t, v), dt) for t, v in reading.requests_by_tier.items()
            }
            first.append("requests/s " + "  ".join(f"{t} {rates[t]:.1f}" for t in _tiers(rates)))
        else:
            first.append(f"{reading.spans:,.0f} spans received")
        if reading.active_1d:
            first.append(
                f"active consumers (24h) {sum(reading.active_1d.values()):.0f}: "
                + "  ".join(f"{t} {reading.active_1d[t]:.0f}" for t in _tiers(reading.active_1d))
            )
        else:
            first.append("active consumers: not computed yet")
        second = []
        called = {k: v for k, v in reading.deprecated.items() if v > 0}
        if reading.active_1d:
            second.append(
                "deprecated endpoints, consumers (30d): "
                + (
                    ", ".join(
                        f"{k} {v:.0f} ({reading.migrated.get(k, 0):.0f} migrated)"
                        for k, v in sorted(called.items())
                    )
                    or "none"
                )
            )
        if isinstance(alerts, str):
            second.append(alerts)
        elif alerts is not None:
            firing, pending = alerts
            second.append(
                "alerts firing: "
                + (", ".join(firing) if firing else "none")
                + (f" ({pending} pending)" if pending else "")
            )
        third = _experiments(reading)
        if releases := _releases(reading, prev):
            third.append(releases)
        out = " | ".join(first)
        for more in (second, third):
            if more:
                out += "\n" + " " * 9 + "| " + " | ".join(more)
        return out

    def next_line(self) -> str:
        try:
            reading = read_metrics(self.metrics_url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"{time.strftime('%H:%M:%S')} processor metrics unavailable: {getattr(exc, 'reason', exc)}"
        alerts: tuple[list[str], int] | None | str = None
        if self.prometheus_url:
            try:
                alerts = fetch_alerts(self.prometheus_url)
            except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
                alerts = f"alerts unavailable ({getattr(exc, 'reason', exc)})"
        return self.line(reading, alerts)
