"""PromQL text for the generated rules: quoting, selectors, numbers, rule and group documents."""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "QUANTILES",
    "ROUTE",
    "SECONDS",
    "WINDOWS",
    "dedent",
    "group",
    "num",
    "quote",
    "record",
    "regex_alternatives",
    "selector",
]

WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
SECONDS = {
    "5m": 300,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "6h": 21600,
    "1d": 86400,
    "3d": 259200,
    "30d": 2592000,
}
QUANTILES = ("0.5", "0.9", "0.99")

# The labels of a route-level series.
ROUTE = "service, method, route"


def dedent(text: str) -> str:
    lines = [line for line in text.splitlines()]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:].rstrip() for line in lines)


def quote(value: str) -> str:
    """A PromQL double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def regex_alternatives(values: list[str]) -> str:
    return "|".join(re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", v) for v in values)


def selector(**labels: str) -> str:
    parts = []
    for name, value in labels.items():
        op = "="
        if name.endswith("__ne_re"):
            name, op = name.removesuffix("__ne_re"), "!~"
        parts.append(f"{name}{op}{quote(value)}")
    return ",".join(parts)


def num(x: float) -> str:
    """A float as PromQL, without binary noise: 0.0010000000000000009 → 0.001."""
    text = repr(round(x, 10))
    return text[:-2] if text.endswith(".0") else text


def record(name: str, expr: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"record": name, "expr": dedent(expr) if "\n" in expr else expr}
    if labels:
        out["labels"] = labels
    return out


def group(name: str, interval: str, rules: list[dict]) -> dict[str, Any]:
    return {"name": name, "interval": interval, "rules": rules}
