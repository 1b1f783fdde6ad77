"""How the verdict and the tables write numbers: percentages, durations, p-values, counts."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

__all__ = [
    "boundary",
    "count",
    "days",
    "distinct",
    "duration",
    "metric_value",
    "p_value",
    "percent",
    "relative",
    "split",
    "interval",
]

DASH = "–"
#: Metrics whose value is a share (written as a percentage); the others are seconds.
RATIOS = ("error_ratio", "client_error_ratio", "adoption")


def _significant(value: float, digits: int = 2) -> str:
    """`value` to `digits` significant figures, in plain decimals (never 1e-05)."""
    if value == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def percent(share: float, digits: int = 2) -> str:
    """0.012 -> '1.2%'; below 1% two significant figures (0.0085 -> '0.85%'); `digits` more for
    values that would otherwise read the same."""
    if not math.isfinite(share):
        return DASH
    value = share * 100
    if abs(value) >= 1:
        decimals = max(1, digits - 1 - math.floor(math.log10(abs(value))))
        return f"{value:.{decimals}f}%"
    return f"{_significant(value, digits)}%"


def relative(change: float) -> str:
    """A relative change or effect: 0.35 -> '35%', 0.042 -> '4.2%', below 0.01% '< 0.01%'."""
    if not math.isfinite(change):
        return DASH
    value = abs(change) * 100
    if value == 0:
        return "0%"
    if value < 0.01:
        return "< 0.01%"
    return f"{value:.0f}%" if value >= 10 else f"{_significant(value)}%"


def duration(seconds: float, extra: int = 0) -> str:
    """Seconds for a reader: '0.8 ms', '120 ms', '1.25 s', '4.5 min', '2.1 h'; `extra` decimals
    for values that would otherwise read the same."""
    if not math.isfinite(seconds):
        return DASH
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.{extra}f} ms" if ms >= 10 else f"{_significant(ms, 2 + extra)} ms"
    if seconds < 60:
        return f"{seconds:.{2 + extra}f} s" if seconds < 10 else f"{seconds:.{1 + extra}f} s"
    if seconds < 3600:
        return f"{seconds / 60:.{1 + extra}f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.{1 + extra}f} h"
    return f"{seconds / 86400:.{1 + extra}f} d"


def metric_value(metric: str, value: float, extra: int = 0) -> str:
    return percent(value, 2 + extra) if metric in RATIOS else duration(value, extra)


def distinct(metric: str, a: float, b: float) -> tuple[str, str]:
    """Two values written with just enough precision to tell them apart ('0.1%' vs '0.1001%')."""
    for extra in range(6):
        pair = metric_value(metric, a, extra), metric_value(metric, b, extra)
        if a == b or pair[0] != pair[1]:
            return pair
    return pair


def interval(metric: str, bounds: Sequence[float]) -> str:
    low, high = bounds
    if not (math.isfinite(low) and math.isfinite(high)):
        return DASH
    return f"{metric_value(metric, low)} to {metric_value(metric, high)}"


def p_value(p: float) -> str:
    """'p = 0.41', 'p = 0.003', 'p = 0.00002'; 'p < 0.000001' below that."""
    if not math.isfinite(p):
        return "p = n/a"
    if p < 1e-6:
        return "p < 0.000001"
    if p >= 0.995:
        return "p = 1"
    return f"p = {_significant(p)}"


def boundary(threshold: float) -> str:
    """'p < 0.0015': the bar a p-value must be under, to two significant figures down to 1e-9;
    'p below 0.000000001' under it (early in an experiment the bar is beyond any data)."""
    if threshold < 1e-9:
        return "p below 0.000000001"
    return f"p < {_significant(threshold)}"


def days(value: float) -> str:
    """6.54 -> '6.5', 13.0 -> '13', 0.042 -> '0.042' (days into an experiment)."""
    if value < 1:
        return _significant(value)
    return f"{value:.1f}".removesuffix(".0")


def count(value: float) -> str:
    """A whole number with thousands separators (weighted counts rounded)."""
    if not math.isfinite(value):
        return DASH
    return f"{round(value):,}"


def split(shares: Mapping[str, float], variants: Sequence[str]) -> str:
    """The planned split as '50/50' or '33.3/33.3/33.3'."""
    values = [shares.get(v, 0.0) * 100 for v in variants]
    if all(abs(v - round(v)) < 0.05 for v in values):
        return "/".join(f"{round(v)}" for v in values)
    return "/".join(f"{v:.1f}" for v in values)
