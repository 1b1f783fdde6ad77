"""From scanned spans to API requests: the derivation stage.

A `Deriver` takes the tuples the receivers' scanner produced for one OTLP
request and returns one `ApiRequest` per SERVER span that is an HTTP request.
It resolves every field from its configured attribute sources (the scanner
already picked the first present source per field), fills fallbacks (route
from the normalized path, client from the User-Agent, the default plan tier),
weights sampled spans, and counts data-quality issues.  It knows nothing of
Prometheus: sinks downstream aggregate the requests.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import NamedTuple

from ..config import UsageConfig
from ..telemetry import PipelineStats
from .plans import PlanLookup
from .routes import normalize_path
from .sampling import adjusted_count
from .useragent import parse_user_agent

__all__ = ["ApiRequest", "Deriver", "SPAN_FIELDS", "span_field_sources", "SCHEMA_VERSION"]

SCHEMA_VERSION = 1
SPAN_KIND_SERVER = 2

# Order of the per-field values after the scanner's fixed span fields
# (resource_index, kind, start, end, trace_id, span_id, trace_state, status_code).
SPAN_FIELDS = (
    "method", "route", "status_code", "path", "user_agent", "consumer_id", "plan_tier",
    "client_name", "client_version", "api_version", "feature", "deprecated", "schema_version",
)

_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
_STATUS = {code: str(code) for code in range(100, 600)}
_STATUS.update({str(code): str(code) for code in range(100, 600)})
_TRUE = frozenset((True, "true", "True", "TRUE", 1))


class ApiRequest(NamedTuple):
    """One API request, as every downstream sink sees it."""

    service: str
    method: str
    route: str
    status_code: str  # "200"…"599", or "unknown"
    plan_tier: str
    deprecated: str  # "true" | "false"
    client_name: str
    client_version: str
    api_version: str | None
    feature: str | None
    consumer_id: str | None
    duration: float  # seconds; -1.0 when the span's end precedes its start
    weight: float  # adjusted count: how many requests this sampled span stands for
    end_time_ns: int
    trace_id: bytes
    span_id: bytes


def span_field_sources(config: UsageConfig) -> list[tuple[str, ...]]:
    """The attribute keys the scanner must look up, one group per SPAN_FIELDS entry."""
    return [tuple(getattr(config.attributes, name)) for name in SPAN_FIELDS]


def _method(value: object) -> str:
    if isinstance(value, str):
        upper = value.upper()
        if upper in _KNOWN_METHODS:
            return upper
    return "_OTHER"  # the semantic conventions' bucket for non-standard methods


def _status(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _STATUS.get(value, "unknown")  # type: ignore[call-overload]


def _text(value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class Deriver:
    """Turns one scanned OTLP request into ApiRequests; runs on the single worker thread."""

    def __init__(self, config: UsageConfig, stats: PipelineStats,
                 plans: PlanLookup | None = None, catalog=None) -> None:
        self._plans = plans
        self._catalog = catalog
        # (service, method, route) → "true"/"false" from the catalog; routes are bounded upstream.
        self._catalog_deprecated: dict[tuple[str, str, str], str] = {}
        self._default_plan = config.default_plan_tier
        self._ua_fallback = config.user_agent_fallback
        self._future_ns = int(config.data_quality.max_future_skew * 1e9)
        self._past_ns = int(config.data_quality.max_past_age * 1e9)
        self._stats = stats

    def _deprecated_in_catalog(self, service: str, method: str, route: str) -> str:
        key = (service, method, route)
        known = self._catalog_deprecated.get(key)
        if known is None:
            entry = self._catalog.endpoint(service, method, route)
            known = "true" if entry is not None and entry.deprecated else "false"
            if len(self._catalog_deprecated) > 100_000:
                self._catalog_deprecated.clear()
            self._catalog_deprecated[key] = known
        return known

    def derive(self, resources: Sequence[tuple], spans: Sequence[tuple]) -> list[ApiRequest]:
        services = [r[0] if isinstance(r[0], str) and r[0] else "unknown_service" for r in resources]
        now = time.time_ns()
        future_limit = now + self._future_ns
        past_limit = now - self._past_ns
        default_plan = self._default_plan
        plan_of = self._plans.plans if self._plans is not None else {}  # swapped whole on reload
        catalog = self._catalog
        ua_fallback = self._ua_fallback
        out: list[ApiRequest] = []
        append = out.append
        new = tuple.__new__  # ApiRequest without _make's per-call overhead; order as declared
        not_server = not_http = 0
        missing_route = missing_consumer = missing_status = 0
        end_before_start = too_new = too_old = bad_schema = 0

        for s in spans:
            if s[1] != SPAN_KIND_SERVER:
                not_server += 1
                continue
            (ri, _, start, end, trace_id, span_id, tracestate, _,
             method, route, status, path, ua, consumer, plan,
             cname, cver, api_version, feature, deprecated, schema) = s
            if method is None:
                not_http += 1
                continue
            if method not in _KNOWN_METHODS:
                method = _method(method)
            if route is None or route == "":
                missing_route += 1
                route = normalize_path(path)
            elif route.__class__ is not str:
                route = str(route)
            code = _STATUS.get(status)
            if code is None:
                code = _status(status)
                if status is None:
                    missing_status += 1
            if plan is None or plan == "":
                plan = plan_of.get(consumer, default_plan) if plan_of else default_plan
            elif plan.__class__ is not str:
                plan = str(plan)
            if cname is None or cname == "":
                cname = None
                if ua_fallback and ua is not None:
                    cname, ua_version = parse_user_agent(ua)
                    if cver is None:
                        cver = ua_version
                else:
                    cname = "unknown"
            elif cname.__class__ is not str:
                cname = str(cname)
            if cver is None or cver == "":
                cver = "unknown"
            elif cver.__class__ is not str:
                cver = str(cver)
            if consumer is None or consumer == "":
                missing_consumer += 1
                consumer = None
            elif consumer.__class__ is not str:
                consumer = str(consumer)
            if schema is not None and schema != SCHEMA_VERSION and schema != "1":
                bad_schema += 1
            if end < start:
                end_before_start += 1
                duration = -1.0
            else:
                duration = (end - start) * 1e-9
            if end > future_limit:
                too_new += 1
            elif end < past_limit:
                too_old += 1
            service = services[ri]
            if deprecated in _TRUE:
                deprecated = "true"
            elif catalog is None:
                deprecated = "false"
            else:
                deprecated = self._deprecated_in_catalog(service, method, route)
            append(new(ApiRequest, (
                service, method, route, code, plan, deprecated,
                cname, cver, _text(api_version), _text(feature), consumer, duration,
                adjusted_count(tracestate) if tracestate else 1.0,
                end, trace_id, span_id,
            )))

        stats = self._stats
        stats.ignored(not_server, not_http)
        if (missing_route or missing_consumer or missing_status or end_before_start or too_new
                or too_old or bad_schema):
            stats.data_quality(
                missing_route=missing_route, missing_consumer=missing_consumer,
                missing_status_code=missing_status, end_before_start=end_before_start,
                timestamp_future=too_new, timestamp_past=too_old, unknown_schema_version=bad_schema,
            )
        return out
