"""The SLO file (`prometheus/slo.yaml`): targets per service and route, guards, and link bases.

Loaded with the same typed loader as the processor's config, so a mistake is
reported once, with its key path, before any rule is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from apiusage.processor._typedload import Problems, load_dataclass
from apiusage.processor._yaml import safe_load
from apiusage.processor.config import DEFAULT_BUCKETS

__all__ = ["SloError", "SloFile", "Objectives", "load_slo", "parse_slo", "DEFAULT_BUCKETS"]


class SloError(Exception):
    """The SLO file is unusable; the message lists every problem with its key path."""


def _percent(value: float | None, path: str, problems: Problems) -> None:
    if value is not None and not 0 < value < 100:
        problems.add(path, f"must be a percentage between 0 and 100, exclusive (got {value:g})")


@dataclass(frozen=True)
class Latency:
    threshold: float | None = None  # seconds; a histogram bucket bound
    target: float | None = None  # percent of requests faster than `threshold`

    def _validate(self, path: str, problems: Problems) -> None:
        _percent(self.target, f"{path}.target", problems)
        if self.threshold is not None and self.threshold <= 0:
            problems.add(f"{path}.threshold", f"must be > 0 seconds (got {self.threshold:g})")


@dataclass(frozen=True)
class RouteSlo:
    method: str = ""
    route: str = ""
    availability: float | None = None
    latency: Latency | None = None

    def _validate(self, path: str, problems: Problems) -> None:
        if not self.method or not self.route:
            problems.add(path, "needs method and route, as in the api_requests_total labels")
        if self.availability is None and self.latency is None:
            problems.add(path, "set availability, latency or both (otherwise the service's apply)")
        _percent(self.availability, f"{path}.availability", problems)


@dataclass(frozen=True)
class ServiceSlo:
    availability: float | None = None
    latency: Latency | None = None
    routes: tuple[RouteSlo, ...] = ()

    def _validate(self, path: str, problems: Problems) -> None:
        _percent(self.availability, f"{path}.availability", problems)
        seen = set()
        for i, r in enumerate(self.routes):
            if (r.method, r.route) in seen:
                problems.add(f"{path}.routes[{i}]", f"{r.method} {r.route} is listed twice")
            seen.add((r.method, r.route))


@dataclass(frozen=True)
class Defaults:
    availability: float = 99.5
    latency: Latency = field(default_factory=lambda: Latency(0.5, 99.0))
    # Low-traffic guard: an SLO alert needs at least this many requests in its long window.
    min_requests: int = 100

    def _validate(self, path: str, problems: Problems) -> None:
        _percent(self.availability, f"{path}.availability", problems)
        if self.latency.threshold is None or self.latency.target is None:
            problems.add(f"{path}.latency", "needs both threshold and target")
        if self.min_requests < 1:
            problems.add(f"{path}.min_requests", f"must be at least 1 (got {self.min_requests})")


@dataclass(frozen=True)
class Links:
    # runbook_url = runbook_base_url + alert name; the processor serves /runbooks/<AlertName>.
    runbook_base_url: str = "http://localhost:9464/runbooks/"
    # dashboard_url = grafana_url + /d/<uid>/<slug>?viewPanel=<id>&var-<label>=...
    grafana_url: str = "http://localhost:3000"

    def _validate(self, path: str, problems: Problems) -> None:
        for name in ("runbook_base_url", "grafana_url"):
            value = getattr(self, name)
            if not value.startswith(("http://", "https://")):
                problems.add(f"{path}.{name}", f"must be an http(s) URL (got {value!r})")
            if any(c in value for c in "{}\"' "):
                problems.add(f"{path}.{name}", "must not contain spaces, quotes or braces")


@dataclass(frozen=True)
class SloFile:
    links: Links = field(default_factory=Links)
    job: str = "apiusage"  # the Prometheus job that scrapes the processor
    histogram_buckets: tuple[float, ...] = DEFAULT_BUCKETS
    defaults: Defaults = field(default_factory=Defaults)
    services: Mapping[str, ServiceSlo] = field(default_factory=lambda: MappingProxyType({}))

    def _validate(self, path: str, problems: Problems) -> None:
        if not self.job:
            problems.add("job", "must not be empty")
        buckets = set(self.histogram_buckets)

        def bucket(latency: Latency | None, where: str) -> None:
            if latency is not None and latency.threshold is not None and latency.threshold not in buckets:
                problems.add(
                    f"{where}.threshold",
                    f"must be one of histogram_buckets {list(self.histogram_buckets)} "
                    f"(got {latency.threshold:g}); the latency SLO counts requests "
                    "in the bucket le=threshold",
                )

        bucket(self.defaults.latency, "defaults.latency")
        for name, svc in self.services.items():
            bucket(svc.latency, f"services.{name}.latency")
            for i, r in enumerate(svc.routes):
                bucket(r.latency, f"services.{name}.routes[{i}].latency")


@dataclass(frozen=True)
class Objectives:
    """Resolved objectives of one service or route (fractions, not percentages)."""

    availability: float | None  # e.g. 0.999
    latency_threshold: float | None  # seconds
    latency_target: float | None  # e.g. 0.99


def parse_slo(data: Any, source: str = "(inline)") -> SloFile:
    problems = Problems()
    slo = load_dataclass(SloFile, data or {}, "", problems)
    if problems:
        body = "\n".join(f"  {line}" for line in problems.lines)
        raise SloError(f"{source} is invalid:\n{body}")
    return slo


def load_slo(path: str | Path) -> SloFile:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SloError(f"cannot read SLO file {p}: {exc.strerror or exc}") from None
    try:
        data = safe_load(text)
    except yaml.YAMLError as exc:
        raise SloError(f"{p} is not valid YAML: {exc}") from None
    if data is not None and not isinstance(data, dict):
        raise SloError(f"{p} is invalid:\n  (top level): must be a mapping")
    return parse_slo(data, str(p))
