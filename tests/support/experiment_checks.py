"""Scripted experiments for the experiment checks (experiments/checks.py) and their alerts: the
protocol and the exposures the processor's state would record, relative to today (UTC)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from apiusage.conventions.experiments import Experiment, parse_experiments
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.state.activity import DAY_MS

SERVICE, EXPERIMENT = "orders-api", "checkout-v2"
NOW_MS = int(time.time() * 1000)
TODAY = NOW_MS // DAY_MS


def iso_day(day: int) -> str:
    """A UTC day number as YYYY-MM-DD."""
    return (dt.date(1970, 1, 1) + dt.timedelta(days=day)).isoformat()


def protocol(name: str = EXPERIMENT, **overrides: Any) -> dict[str, Any]:
    """control/treatment 50/50 on orders-api, primary error_ratio, guardrails 4xx and p95;
    started 13 days ago for 14 days unless overridden (None removes a key): its last day, so
    the checks' interim boundary (information fraction 13/14 to 1) is p < 0.020 to 0.025."""
    body: dict[str, Any] = {
        "service": SERVICE,
        "flag": name,
        "variants": ["control", "treatment"],
        "control": "control",
        "primary": "error_ratio",
        "guardrails": ["client_error_ratio", "latency_p95"],
        "start": iso_day(TODAY - 13),
        "planned_days": 14,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def checked_experiment(name: str = EXPERIMENT, **overrides: Any) -> Experiment:
    """The `protocol()` as the experiments file's model."""
    return parse_experiments({"experiments": {name: protocol(name, **overrides)}}).experiments[name]


def exposure(variant: str, consumer: str, at_ms: int, code: str = "200", name: str = EXPERIMENT) -> Exposure:
    return Exposure(
        SERVICE, name, variant, "POST", "/v2/orders", code, "pro", "sdk", None, consumer, 0.05, 1.0,
        at_ms * 1_000_000,
    )  # fmt: skip


def traffic(
    variant: str, consumers: int, requests: int, client_errors: int, day: int, who: str = ""
) -> list[Exposure]:
    """`consumers` consumers of `variant` (ids `<who><variant>-<i>`) sharing `requests` requests on
    `day`, the first `client_errors` of them answered 404."""
    at = day * DAY_MS + 3_600_000
    return [
        exposure(variant, f"{who}{variant}-{i % consumers}", at + i, "404" if i < client_errors else "200")
        for i in range(requests)
    ]


def raising_4xx(day: int = TODAY - 1) -> list[Exposure]:
    """100 consumers each side, 10,000 requests each: 1.2 % 4xx for the control, 2.0 % for the
    treatment (the verdict's example), no 5xx, every request 50 ms."""
    return traffic("control", 100, 10_000, 120, day) + traffic("treatment", 100, 10_000, 200, day)
