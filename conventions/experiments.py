"""Experiments: the protocol file (``experiments.yaml``) that says which feature flags are
experiments, what they compare, on whom, and what counts as success.

The processor reads it to know which flag evaluations to count (and under which experiment
name and variants); ``apiusage experiments report`` reads it for the protocol: the control,
the planned split, the metrics, the minimum detectable effect and alpha. Both go through this
one model. Like the rest of ``apiusage.conventions`` it needs only PyYAML.

Format (see ``docs/experiments.md``)::

    version: 1
    experiments:
      checkout-v2:                       # the experiment's name: the `experiment` label value
        service: orders-api
        flag: checkout-v2                # feature_flag.key of the evaluations
        variants: [control, treatment]   # feature_flag.result.variant values; the others are not counted
        control: control
        split: {control: 50, treatment: 50}   # planned assignment weights (default: equal)
        segment:                         # optional; every filter given must match
          plan_tiers: [pro, enterprise]
          clients: [orders-sdk]
          routes: ["POST /v2/orders", "GET /v1/orders/{order_id}"]
        primary: client_error_ratio
        guardrails: [error_ratio, latency_p95]
        feature: orders                  # the apiusage.feature whose adoption `adoption` measures
        minimum_detectable_effect: 0.2   # relative: a 20% change of the primary metric
        alpha: 0.05
        power: 0.8
        start: 2026-11-02
        planned_days: 14
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._yaml import DocumentParser, load_file
from ._yaml import describe as _kind
from .errors import ConventionsError
from .routes import RouteTemplateError, parse_route, route_key

__all__ = [
    "METRICS",
    "Experiment",
    "Experiments",
    "ExperimentsError",
    "Segment",
    "load_experiments",
    "parse_experiments",
]

#: What an experiment can measure per variant (primary or guardrail):
#: error_ratio (5xx / requests), client_error_ratio (4xx / requests), latency_p95 (seconds),
#: adoption (share of the variant's consumers who used `feature`), time_to_first_success
#: (seconds from a consumer's first request in the experiment to its first 2xx).
METRICS = ("error_ratio", "client_error_ratio", "latency_p95", "adoption", "time_to_first_success")
#: Experiment names and variants become label values: short, printable, no spaces.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_NAME_RULE = "letters, digits, _.:-, at most 63"
MAX_EXPERIMENTS = 200
MAX_VARIANTS = 10
_KEYS = (
    "service",
    "flag",
    "variants",
    "control",
    "split",
    "segment",
    "primary",
    "guardrails",
    "feature",
    "minimum_detectable_effect",
    "alpha",
    "power",
    "start",
    "planned_days",
    "description",
)
_SEGMENT_KEYS = ("plan_tiers", "clients", "routes")
_ROUTE = re.compile(r"^(?P<method>[A-Za-z]+|\*) +(?P<route>/\S*)$")


class ExperimentsError(ConventionsError, ValueError):
    """An experiments file that cannot be used; the message names the file and the key path."""


@dataclass(frozen=True)
class Segment:
    """Which requests an experiment counts: every filter given must match; an empty one matches all."""

    plan_tiers: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    #: (method or "*", route key from apiusage.conventions.routes.route_key)
    routes: tuple[tuple[str, str], ...] = ()

    def matches(self, method: str, route: str, plan_tier: str, client_name: str) -> bool:
        """Whether a request (its method, route template, plan tier and client) is in the segment."""
        if self.plan_tiers and plan_tier not in self.plan_tiers:
            return False
        if self.clients and client_name not in self.clients:
            return False
        if self.routes:
            key = route_key(route)
            if key is None:
                return False
            return any(key == r and (m == "*" or m == method) for m, r in self.routes)
        return True


@dataclass(frozen=True)
class Experiment:
    """One experiment of the protocol file."""

    name: str
    service: str
    flag: str
    variants: tuple[str, ...]
    control: str
    #: variant -> planned share of assignments (fractions summing to 1)
    split: Mapping[str, float]
    segment: Segment = field(default_factory=Segment)
    primary: str = "error_ratio"
    guardrails: tuple[str, ...] = ()
    feature: str | None = None
    minimum_detectable_effect: float = 0.1
    alpha: float = 0.05
    power: float = 0.8
    start: _dt.date | None = None
    planned_days: int | None = None
    description: str | None = None

    @property
    def treatments(self) -> tuple[str, ...]:
        return tuple(v for v in self.variants if v != self.control)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The primary metric, then the guardrails."""
        return (self.primary, *(g for g in self.guardrails if g != self.primary))


@dataclass(frozen=True)
class Experiments:
    """Every experiment of a file, by name, and by the (service, flag) it reads."""

    experiments: Mapping[str, Experiment] = field(default_factory=dict)
    source: str = "<experiments>"
    _by_flag: Mapping[tuple[str, str], Experiment] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self._by_flag:
            index = {(e.service, e.flag): e for e in self.experiments.values()}
            object.__setattr__(self, "_by_flag", index)

    def for_flag(self, service: str, flag: str) -> Experiment | None:
        """The experiment that a flag evaluation in `service` belongs to, if any."""
        return self._by_flag.get((service, flag))

    def __iter__(self) -> Any:
        return iter(self.experiments.values())

    def __len__(self) -> int:
        return len(self.experiments)


def load_experiments(path: str | Path) -> Experiments:
    """Read and validate an experiments file; raises ExperimentsError naming the file and key."""
    data = load_file(path, "experiments", ExperimentsError)
    return parse_experiments(data, source=str(path))


def parse_experiments(data: Any, source: str = "<experiments>") -> Experiments:
    """Validate an already-loaded experiments document (a dict as YAML or JSON gives it)."""
    return _Parser(source).experiments(data)


class _Parser(DocumentParser):
    error = ExperimentsError

    def experiments(self, data: Any) -> Experiments:
        if data is None:
            return Experiments({}, self.source)
        raw = self.section(data, "experiments", "experiments file")
        if raw is None:
            return Experiments({}, self.source)
        if not isinstance(raw, dict):
            raise self.fail("experiments", f"expected a mapping of experiment names (got {_kind(raw)})")
        if len(raw) > MAX_EXPERIMENTS:
            raise self.fail("experiments", f"more than {MAX_EXPERIMENTS} experiments")
        parsed: dict[str, Experiment] = {}
        flags: dict[tuple[str, str], str] = {}
        for name, body in raw.items():
            path = f"experiments.{name}"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise self.fail(path, f"not an experiment name ({_NAME_RULE}; got {name!r})")
            experiment = self.experiment(name, body, path)
            other = flags.get((experiment.service, experiment.flag))
            if other is not None:
                raise self.fail(
                    f"{path}.flag",
                    f"flag {experiment.flag!r} of service {experiment.service!r} "
                    f"is already experiment {other!r}",
                )
            flags[(experiment.service, experiment.flag)] = name
            parsed[name] = experiment
        return Experiments(parsed, self.source)

    def experiment(self, name: str, body: Any, path: str) -> Experiment:
        if not isinstance(body, dict):
            raise self.fail(path, f"expected a mapping (got {_kind(body)})")
        for key in body:
            if key not in _KEYS:
                raise self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(_KEYS)})")
        service = self.text(body, "service", path, required=True)
        flag = self.text(body, "flag", path, required=True)
        variants = self.names(body.get("variants"), f"{path}.variants", required=True)
        if len(variants) < 2:
            raise self.fail(f"{path}.variants", "an experiment needs at least two variants")
        if len(variants) > MAX_VARIANTS:
            raise self.fail(f"{path}.variants", f"more than {MAX_VARIANTS} variants")
        control = self.text(body, "control", path, required=True)
        if control not in variants:
            raise self.fail(f"{path}.control", f"{control!r} is not one of the variants {list(variants)}")
        split = self.split(body.get("split"), variants, f"{path}.split")
        segment = self.segment(body.get("segment"), f"{path}.segment")
        primary = self.metric(body.get("primary", "error_ratio"), f"{path}.primary")
        guardrails = tuple(
            self.metric(m, f"{path}.guardrails[{i}]")
            for i, m in enumerate(self.list(body.get("guardrails"), f"{path}.guardrails"))
        )
        feature = self.text(body, "feature", path)
        if feature is None and "adoption" in (primary, *guardrails):
            raise self.fail(f"{path}.feature", "required when 'adoption' is a metric (which feature?)")
        mde = self.number(body, "minimum_detectable_effect", path, 0.1, low=0.0, high=10.0)
        alpha = self.number(body, "alpha", path, 0.05, low=0.0, high=0.5)
        power = self.number(body, "power", path, 0.8, low=0.5, high=1.0)
        start = self.date(body.get("start"), f"{path}.start")
        days = body.get("planned_days")
        if days is not None and (type(days) is not int or not 1 <= days <= 366):
            raise self.fail(
                f"{path}.planned_days", f"expected a whole number of days, 1 to 366 (got {days!r})"
            )
        return Experiment(
            name=name,
            service=service,
            flag=flag,
            variants=variants,
            control=control,
            split=split,
            segment=segment,
            primary=primary,
            guardrails=guardrails,
            feature=feature,
            minimum_detectable_effect=mde,
            alpha=alpha,
            power=power,
            start=start,
            planned_days=days,
            description=self.text(body, "description", path),
        )

    def text(self, body: dict, key: str, path: str, required: bool = False) -> Any:
        value = body.get(key)
        if value is None:
            if required:
                raise self.fail(f"{path}.{key}", "required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{path}.{key}", f"expected a non-empty string (got {_kind(value)})")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise self.fail(f"{path}.{key}", "control characters are not allowed")
        return value

    def list(self, value: Any, path: str) -> list:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(path, f"expected a list (got {_kind(value)})")
        return value

    def names(self, value: Any, path: str, required: bool = False) -> tuple[str, ...]:
        if value is None and required:
            raise self.fail(path, "required")
        items = self.list(value, path)
        seen: list[str] = []
        for i, item in enumerate(items):
            if not isinstance(item, str) or not _NAME.fullmatch(item):
                raise self.fail(f"{path}[{i}]", f"not a name ({_NAME_RULE}; got {item!r})")
            if item in seen:
                raise self.fail(f"{path}[{i}]", f"{item!r} is listed twice")
            seen.append(item)
        return tuple(seen)

    def split(self, value: Any, variants: tuple[str, ...], path: str) -> dict[str, float]:
        if value is None:
            return {v: 1.0 / len(variants) for v in variants}
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping of variant to weight (got {_kind(value)})")
        for key in value:
            if key not in variants:
                raise self.fail(f"{path}.{key}", f"not one of the variants {list(variants)}")
        weights: dict[str, float] = {}
        for v in variants:
            w = value.get(v)
            if w is None:
                raise self.fail(f"{path}.{v}", "every variant needs a weight")
            if type(w) not in (int, float) or not math.isfinite(w) or w <= 0:
                raise self.fail(f"{path}.{v}", f"expected a positive number (got {w!r})")
            weights[v] = float(w)
        total = sum(weights.values())
        return {v: w / total for v, w in weights.items()}

    def segment(self, value: Any, path: str) -> Segment:
        if value is None:
            return Segment()
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a mapping (got {_kind(value)})")
        for key in value:
            if key not in _SEGMENT_KEYS:
                raise self.fail(f"{path}.{key}", f"unknown key (allowed: {', '.join(_SEGMENT_KEYS)})")
        tiers = self.strings(value.get("plan_tiers"), f"{path}.plan_tiers")
        clients = self.strings(value.get("clients"), f"{path}.clients")
        routes = []
        for i, item in enumerate(self.list(value.get("routes"), f"{path}.routes")):
            match = _ROUTE.match(item) if isinstance(item, str) else None
            if match is None:
                raise self.fail(f"{path}.routes[{i}]", f"expected 'METHOD /route' (got {item!r})")
            try:
                parse_route(match.group("route"))
            except RouteTemplateError as exc:
                raise self.fail(f"{path}.routes[{i}]", str(exc)) from None
            key = route_key(match.group("route"))
            if key is None:  # parse_route accepted it; only an over-long template gets here
                raise self.fail(f"{path}.routes[{i}]", "route template too long")
            routes.append((match.group("method").upper(), key))
        return Segment(tiers, clients, tuple(routes))

    def strings(self, value: Any, path: str) -> tuple[str, ...]:
        items = self.list(value, path)
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item:
                raise self.fail(f"{path}[{i}]", f"expected a non-empty string (got {_kind(item)})")
        return tuple(items)

    def metric(self, value: Any, path: str) -> str:
        if value not in METRICS:
            raise self.fail(path, f"unknown metric {value!r} (known: {', '.join(METRICS)})")
        return str(value)

    def number(self, body: dict, key: str, path: str, default: float, low: float, high: float) -> float:
        value = body.get(key, default)
        if type(value) not in (int, float) or not math.isfinite(value) or not low < value <= high:
            raise self.fail(
                f"{path}.{key}", f"expected a number above {low} and at most {high} (got {value!r})"
            )
        return float(value)

    def date(self, value: Any, path: str) -> _dt.date | None:
        if value is None:
            return None
        if isinstance(value, _dt.datetime):
            return value.date()
        if isinstance(value, _dt.date):
            return value
        if isinstance(value, str):
            try:
                return _dt.date.fromisoformat(value)
            except ValueError:
                pass
        raise self.fail(path, f"not a date (got {value!r})")
