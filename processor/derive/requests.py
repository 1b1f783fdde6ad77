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

import hashlib
import string
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from apiusage.conventions.attributes import KNOWN_SCHEMA_VERSIONS, SCHEMA_VERSION, TRUNCATED
from apiusage.conventions.useragent import parse_user_agent

from ..config import LimitsConfig, UsageConfig
from ..telemetry import PipelineStats
from .flags import EVALUATION_KEYS, flag_variant
from .plans import PlanLookup
from .routes import PLACEHOLDER_ROUTES, normalize_path
from .sampling import MAX_ADJUSTED_COUNT, adjusted_count
from .series import OVERFLOW_VALUE, sanitize_label_value

if TYPE_CHECKING:
    from apiusage.conventions.catalog import Catalog

__all__ = [
    "ARRAY_FIELD_INDEXES",
    "ARRAY_FIELDS",
    "ApiRequest",
    "COUNTER_FIELDS",
    "FLAG_EVENT_KEYS",
    "MAX_FLAG_EVALUATIONS",
    "Deriver",
    "RESOURCE_FIELDS",
    "SPAN_FIELDS",
    "resource_field_sources",
    "span_field_sources",
    "SCHEMA_VERSION",
    "consumer_key",
    "MAX_CONSUMER_ID_LENGTH",
]

MAX_CONSUMER_ID_LENGTH = 256
SPAN_KIND_SERVER = 2
# Values remembered as already clean, per memo; a memo that fills up starts afresh. About 3 MiB
# for labels and 5 MiB for ids at their longest; most values recur, so most checks are one lookup.
_MEMO_LIMIT = 16_384
# Name lists remembered as clean, of at most this many names each.
_MEMO_NAMES = 2048
_MEMO_NAMES_LENGTH = 16

# Order of the per-field values after the scanner's fixed span fields
# (resource_index, kind, start, end, trace_id, span_id, trace_state, status_code).
SPAN_FIELDS = (
    "method",
    "route",
    "status_code",
    "path",
    "user_agent",
    "consumer_id",
    "plan_tier",
    "client_name",
    "client_version",
    "api_version",
    "feature",
    "deprecated",
    "schema_version",
    # Schema version 2 (API design insights). Arrays come from the scanner as tuples of at most
    # max_array_items + 1 values (one more than it keeps, so a cut list shows), else None.
    "request_size",
    "response_size",
    "query_parameters",
    "body_fields",
    "validation_locations",
    "validation_types",
    "error_type",
    "client_region",
)
#: The SPAN_FIELDS whose values are string arrays: the scanner returns arrays for these only
#: (an array under any other key is absent, so a group's next key is tried).
ARRAY_FIELDS = ("query_parameters", "body_fields", "validation_locations", "validation_types")
#: Their indexes in SPAN_FIELDS, as FieldScanner(array_fields=...) takes them.
ARRAY_FIELD_INDEXES = tuple(SPAN_FIELDS.index(name) for name in ARRAY_FIELDS)
#: Per resource, after nothing: the fields read from resource attributes.
RESOURCE_FIELDS = ("service", "server_region", "service_version")
#: The scanner's event_keys groups for feature-flag span events (derive.flags.EVALUATION_KEYS, in
#: order): each event comes as (name, key, variant, old variant, result value).
FLAG_EVENT_KEYS = tuple((key,) for key in EVALUATION_KEYS)
#: Feature-flag evaluations read per span (the scanner's max_events); past it the list is cut
#: and counted (flag_evaluations_truncated).
MAX_FLAG_EVALUATIONS = 16
# A span tuple from a scanner built without event_names (tests, tools) ends before the events
# element: one is added (unpacking with a starred name would cost six times a plain unpack).
_WITHOUT_EVENTS = 8 + len(SPAN_FIELDS)
_NO_EVENTS: tuple[tuple[()]] = ((),)

_KNOWN_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY")
)
# Keyed by the int and the str of each code: the attribute comes as either.
_STATUS: dict[object, str] = {code: str(code) for code in range(100, 600)}
_STATUS.update({str(code): str(code) for code in range(100, 600)})
_TRUE = frozenset((True, "true", "True", "TRUE", 1))
# Every schema version this processor reads, as the int or the str the attribute comes as.
_KNOWN_SCHEMAS = frozenset(KNOWN_SCHEMA_VERSIONS) | frozenset(str(v) for v in KNOWN_SCHEMA_VERSIONS)
# Every upper-case two-letter code (ISO 3166-1 alpha-2 and the CDNs' XX, T1 is not one).
_ALPHA2 = frozenset(a + b for a in string.ascii_uppercase for b in string.ascii_uppercase)
# Names a sender may not use: the overflow label value and the instrumentation's cut marker would
# read as "folded" and "cut" on every dashboard (dropped and counted as invalid_name).
_RESERVED_NAMES = frozenset((OVERFLOW_VALUE, TRUNCATED))
# The largest OTLP int: a double past it is no body size any service sent.
_MAX_SIZE = 2**63 - 1
_DESIGN_CHECKS = (
    "invalid_body_size",
    "invalid_name",
    "names_truncated",
    "validation_mismatch",
    "invalid_client_region",
    # feature-flag span events (issue 16)
    "invalid_flag_evaluation",
    "flag_evaluations_truncated",
)


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
    # Schema version 2 (API design insights); None when the span does not say.
    request_size: int | None = None  # bytes: http.request.body.size
    response_size: int | None = None  # bytes: http.response.body.size
    query_parameters: tuple[str, ...] | None = None  # names only, bounded label values
    body_fields: tuple[str, ...] | None = None
    validation_errors: tuple[tuple[str, str], ...] | None = None  # (location, error type)
    error_type: str | None = None  # semconv error.type
    client_region: str | None = None  # ISO 3166-1 alpha-2
    server_region: str | None = None  # the resource's cloud.region
    # Releases and experiments (issue 16); None when the span does not say.
    service_version: str | None = None  # the resource's service.version, a bounded label value
    #: (flag key, variant) of each feature-flag evaluation span event on the request, in wire
    #: order, label values already sanitised (derive.flags.flag_variant reads the variant).
    flags: tuple[tuple[str, str], ...] | None = None


#: The leading ApiRequest fields every request counter's labels come from, in order.
COUNTER_FIELDS = (
    "service",
    "method",
    "route",
    "status_code",
    "plan_tier",
    "deprecated",
    "client_name",
    "client_version",
)
if ApiRequest._fields[: len(COUNTER_FIELDS)] != COUNTER_FIELDS:  # pragma: no cover - reordered fields
    raise RuntimeError("ApiRequest must begin with COUNTER_FIELDS (request_metrics slices them)")


def span_field_sources(config: UsageConfig) -> list[tuple[str, ...]]:
    """The attribute keys the scanner must look up, one group per SPAN_FIELDS entry."""
    return [tuple(getattr(config.attributes, name)) for name in SPAN_FIELDS]


def resource_field_sources(config: UsageConfig) -> list[tuple[str, ...]]:
    """The resource attribute keys the scanner must look up, one group per RESOURCE_FIELDS entry."""
    return [tuple(getattr(config.attributes, name)) for name in RESOURCE_FIELDS]


def _method(value: object) -> str:
    if isinstance(value, str):
        upper = value.upper()
        if upper in _KNOWN_METHODS:
            return upper
    return "_OTHER"  # the semantic conventions' bucket for non-standard methods


def _status(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return _STATUS.get(value, "unknown")


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def consumer_key(consumer_id: str) -> str:
    """The id a consumer is stored under: itself, or `sha256:<hex>` of it when it is longer than
    MAX_CONSUMER_ID_LENGTH or holds a character that is not printable.

    Hashing instead of cutting keeps distinct ids distinct; ids with control characters
    (NUL is refused by PostgreSQL) become storable without merging with a look-alike.
    """
    if len(consumer_id) <= MAX_CONSUMER_ID_LENGTH and consumer_id.isprintable():
        return consumer_id
    return "sha256:" + hashlib.sha256(consumer_id.encode("utf-8", "surrogatepass")).hexdigest()


class Deriver:
    """Turns one scanned OTLP request into ApiRequests; runs on the single worker thread."""

    def __init__(
        self,
        config: UsageConfig,
        stats: PipelineStats,
        plans: PlanLookup | None = None,
        catalog: Catalog | None = None,
        max_label_length: int = LimitsConfig.max_label_length,
        max_flag_evaluations: int = MAX_FLAG_EVALUATIONS,
    ) -> None:
        self._plans = plans
        self._catalog = catalog
        # (service, method, route) → "true"/"false" from the catalog; routes are bounded upstream.
        self._catalog_deprecated: dict[tuple[str, str, str], str] = {}
        self._default_plan = config.default_plan_tier
        self._ua_fallback = config.user_agent_fallback
        self._future_ns = int(config.data_quality.max_future_skew * 1e9)
        self._past_ns = int(config.data_quality.max_past_age * 1e9)
        self._stats = stats
        self._max_length = max_label_length
        # Label values (at most max_label_length, printable) and consumer ids (stored as they
        # are) already seen: a hit skips the per-character isprintable() walk, which cost about
        # a quarter of the derivation time when run on every value of every span.
        self._clean_labels: set[str] = set()
        self._clean_ids: set[str] = set()
        self._max_names = config.max_names_per_request
        self._max_flags = max_flag_evaluations
        # Name lists already found clean (raw tuple → itself or its sanitised, deduplicated
        # form): the same few lists recur per endpoint, and a hit is one tuple hash.
        self._clean_names: dict[tuple[Any, ...], tuple[str, ...]] = {}
        # Schema-2 data-quality issues of the current derive() call: counted by the helpers,
        # reported once a batch.
        self._design_issues = dict.fromkeys(_DESIGN_CHECKS, 0)

    def _label(self, value: object) -> str:
        """`value` as a label value, printable and at most max_label_length characters,
        remembered when it needed no change."""
        if value.__class__ is not str:
            value = str(value)
        if len(value) > self._max_length or not value.isprintable():
            return sanitize_label_value(value, self._max_length)
        clean = self._clean_labels
        if len(clean) >= _MEMO_LIMIT:
            clean.clear()
        clean.add(value)
        return value

    def _consumer(self, value: object) -> str:
        """The stored id of consumer `value` (see `consumer_key`), remembered when it is itself."""
        key = consumer_key(value if value.__class__ is str else str(value))
        if key is value:
            clean = self._clean_ids
            if len(clean) >= _MEMO_LIMIT:
                clean.clear()
            clean.add(key)
        return key

    def _deprecated_in_catalog(self, catalog: Catalog, service: str, method: str, route: str) -> str:
        key = (service, method, route)
        known = self._catalog_deprecated.get(key)
        if known is None:
            entry = None if route in PLACEHOLDER_ROUTES else catalog.endpoint(service, method, route)
            known = "true" if entry is not None and entry.deprecated else "false"
            if len(self._catalog_deprecated) > 100_000:
                self._catalog_deprecated.clear()
            self._catalog_deprecated[key] = known
        return known

    def _resource_label(self, value: object) -> str | None:
        """A resource attribute (cloud.region, service.version) as a label value; None when absent."""
        if value is None or value == "" or value.__class__ is tuple:
            return None
        return self._label(_text(value))

    def _flags(self, events: tuple[Any, ...]) -> tuple[tuple[str, str], ...] | None:
        """(flag key, variant) of each feature-flag span event, as label values; an event without
        a key or a variant is dropped and counted, and so is a cut list (once); None if none is left.

        Each event is (name, key, variant, old variant, result value): FLAG_EVENT_KEYS's order.
        The targeting key (feature_flag.context.id) is never read, so it never gets here.
        """
        issues = self._design_issues
        if len(events) > self._max_flags:
            issues["flag_evaluations_truncated"] += 1
            events = events[: self._max_flags]
        label = self._label
        out = []
        for event in events:
            key = event[1] if len(event) > 1 else None
            variant = flag_variant(dict(zip(EVALUATION_KEYS, event[1:], strict=False)))
            if key.__class__ is not str or not key or variant is None:
                issues["invalid_flag_evaluation"] += 1
                continue
            out.append((label(key), label(variant)))
        return tuple(out) or None

    def _names(self, value: object) -> tuple[Any, ...] | None:
        """A names array as bounded, printable label values, each once, in its first place;
        None when it is not an array.  Elements that are not non-empty strings are dropped;
        each issue counts once per attribute."""
        issues = self._design_issues
        if value.__class__ is not tuple:
            issues["invalid_name"] += 1  # a scalar where the convention has a string[]
            return None
        raw = value
        if value and value[-1] == TRUNCATED:  # cut by the instrumentation: a marker, not a name
            issues["names_truncated"] += 1
            value = value[:-1]
        elif len(value) > self._max_names:
            issues["names_truncated"] += 1
            value = value[: self._max_names]
        clean = self._clean_labels
        label = self._label
        out: list[str] = []
        bad = False
        for v in value:
            if v.__class__ is not str or not v or v in _RESERVED_NAMES:
                bad = True
                continue
            out.append(v if v in clean else label(v))
        if bad:
            issues["invalid_name"] += 1
        names = tuple(dict.fromkeys(out)) if len(out) > 1 else tuple(out)
        # Only short lists that were clean as they came are remembered: the key then holds label
        # values already bounded, so the memo stays under about 4 MiB.
        if names == raw and len(raw) <= _MEMO_NAMES_LENGTH:
            memo = self._clean_names
            if len(memo) >= _MEMO_NAMES:
                memo.clear()
            memo[raw] = raw
        return names

    def _size(self, value: object) -> int | None:
        """A body size in bytes: a non-negative integer (an integral double too), else None."""
        if value.__class__ is int and value >= 0:
            return value
        if value.__class__ is float and value.is_integer() and 0 <= value <= _MAX_SIZE:
            return int(value)
        self._design_issues["invalid_body_size"] += 1
        return None

    def _validation_errors(self, locations: object, types: object) -> tuple[tuple[str, str], ...]:
        """(location, error type) pairs, index for index; a pair with a bad element is dropped
        whole (its neighbours keep their partners), and each error counts, so no deduplication."""
        issues = self._design_issues
        arrays = []
        for value in (locations, types):
            if value is not None and value.__class__ is not tuple:
                issues["invalid_name"] += 1
            arrays.append(value if value.__class__ is tuple else ())
        locs, kinds = arrays
        if locs and kinds and locs[-1] == TRUNCATED and kinds[-1] == TRUNCATED:
            issues["names_truncated"] += 1  # cut by the instrumentation
            locs, kinds = locs[:-1], kinds[:-1]
        n = min(len(locs), len(kinds))
        if len(locs) != len(kinds):
            issues["validation_mismatch"] += 1  # the common prefix is kept
        if n > self._max_names:
            issues["names_truncated"] += 1
            n = self._max_names
        clean = self._clean_labels
        label = self._label
        out = []
        bad = False
        for loc, kind in zip(locs[:n], kinds[:n], strict=True):
            if (
                loc.__class__ is not str
                or kind.__class__ is not str
                or not loc
                or not kind
                or kind in _RESERVED_NAMES
                or not _RESERVED_NAMES.isdisjoint(loc.split(".", 1))  # the location and the field
            ):
                bad = True
                continue
            out.append((loc if loc in clean else label(loc), kind if kind in clean else label(kind)))
        if bad:
            issues["invalid_name"] += 1
        return tuple(out)

    def _error_type(self, value: object) -> str | None:
        if value == "" or value.__class__ is tuple:
            return None
        return self._label(_text(value))

    def _region(self, value: object) -> str | None:
        """An ISO 3166-1 alpha-2 code, upper-cased; anything else is None, and counted."""
        upper = value.upper() if isinstance(value, str) else None
        if upper in _ALPHA2:
            return upper
        self._design_issues["invalid_client_region"] += 1
        return None

    def derive(
        self, resources: Sequence[tuple[Any, ...]], spans: Sequence[tuple[Any, ...]]
    ) -> list[ApiRequest]:
        """One ApiRequest per HTTP SERVER span; a span that fails costs only itself."""
        label = self._label
        services = [label(r[0]) if isinstance(r[0], str) and r[0] else "unknown_service" for r in resources]
        # A scanner built with the service group only (tests, tools) gives 1-tuples.
        regions = [self._resource_label(r[1]) if len(r) > 1 else None for r in resources]
        versions = [self._resource_label(r[2]) if len(r) > 2 else None for r in resources]
        now = time.time_ns()
        future_limit = now + self._future_ns
        past_limit = now - self._past_ns
        default_plan = self._default_plan
        plan_of = self._plans.plans if self._plans is not None else {}  # swapped whole on reload
        catalog = self._catalog
        ua_fallback = self._ua_fallback
        clean_labels = self._clean_labels
        clean_ids = self._clean_ids
        clean_names = self._clean_names
        out: list[ApiRequest] = []
        append = out.append
        new = tuple.__new__  # ApiRequest without _make's per-call overhead; order as declared
        not_server = not_http = failed = 0
        missing_route = missing_consumer = missing_status = 0
        end_before_start = too_new = too_old = bad_schema = implausible = 0
        error: Exception | None = None

        for s in spans:
            # try costs nothing until it catches (3.11): a bug meeting one odd span loses that span.
            try:
                if s[1] != SPAN_KIND_SERVER:
                    not_server += 1
                    continue
                (
                    ri,
                    _,
                    start,
                    end,
                    trace_id,
                    span_id,
                    tracestate,
                    _,
                    method,
                    route,
                    status,
                    path,
                    ua,
                    consumer,
                    plan,
                    cname,
                    cver,
                    api_version,
                    feature,
                    deprecated,
                    schema,
                    req_size,
                    resp_size,
                    params,
                    fields,
                    locations,
                    types,
                    error_type,
                    region,
                    events,
                ) = s if len(s) != _WITHOUT_EVENTS else s + _NO_EVENTS
                if method is None:
                    not_http += 1
                    continue
                if method not in _KNOWN_METHODS:
                    method = _method(method)
                if route is None or route == "":
                    missing_route += 1
                    route = normalize_path(path)
                # Label values are made printable and bounded here, once, so both sinks (metrics
                # and the consumer store) see the same values and nothing unbounded is stored.
                # The memo holds only str, so a value of another type always takes label().
                if route not in clean_labels:
                    route = label(route)
                code = _STATUS.get(status)
                if code is None:
                    code = _status(status)
                    if status is None:
                        missing_status += 1
                if plan is None or plan == "":
                    plan = plan_of.get(consumer, default_plan) if plan_of else default_plan
                if plan not in clean_labels:
                    plan = label(plan)
                if cname is None or cname == "":
                    cname = None
                    if ua_fallback and ua is not None:
                        cname, ua_version = parse_user_agent(ua)
                        if cver is None:
                            cver = ua_version
                    if cname is None:
                        cname = "unknown"
                    elif cname not in clean_labels:  # max_label_length may be under 64
                        cname = label(cname)
                elif cname not in clean_labels:
                    cname = label(cname)
                if cver is None or cver == "":
                    cver = "unknown"
                elif cver not in clean_labels:
                    cver = label(cver)
                if consumer is None or consumer == "":
                    missing_consumer += 1
                    consumer = None
                elif consumer not in clean_ids:
                    consumer = self._consumer(consumer)
                # True == 1 would pass for version 1
                if schema is not None and (schema not in _KNOWN_SCHEMAS or schema is True):
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
                    deprecated = self._deprecated_in_catalog(catalog, service, method, route)
                if tracestate:
                    weight = adjusted_count(tracestate)
                    if weight > MAX_ADJUSTED_COUNT:
                        implausible += 1
                        weight = MAX_ADJUSTED_COUNT
                else:
                    weight = 1.0
                if api_version is not None and api_version not in clean_labels:
                    api_version = label(_text(api_version))
                if feature is not None and feature not in clean_labels:
                    feature = label(_text(feature))
                # A span without any schema-2 attribute (every version 1 span) pays these tests only.
                if not (
                    req_size is None
                    and resp_size is None
                    and params is None
                    and fields is None
                    and locations is None
                    and types is None
                    and error_type is None
                    and region is None
                ):
                    # The common cases inline (a call costs about as much as the tests), the rest
                    # in the helpers, which count what they drop.
                    if req_size is not None and not (req_size.__class__ is int and req_size >= 0):
                        req_size = self._size(req_size)
                    if resp_size is not None and not (resp_size.__class__ is int and resp_size >= 0):
                        resp_size = self._size(resp_size)
                    if params is not None:
                        known = clean_names.get(params) if params.__class__ is tuple else None
                        params = known if known is not None else self._names(params)
                    if fields is not None:
                        known = clean_names.get(fields) if fields.__class__ is tuple else None
                        fields = known if known is not None else self._names(fields)
                    if locations is not None or types is not None:
                        locations = self._validation_errors(locations, types)
                    if error_type is not None and error_type not in clean_labels:
                        error_type = self._error_type(error_type)
                    if region is not None and region not in _ALPHA2:
                        region = self._region(region)
                flags = self._flags(events) if events else None
                append(
                    new(
                        ApiRequest,
                        (
                            service,
                            method,
                            route,
                            code,
                            plan,
                            deprecated,
                            cname,
                            cver,
                            api_version,
                            feature,
                            consumer,
                            duration,
                            weight,
                            end,
                            trace_id,
                            span_id,
                            req_size,
                            resp_size,
                            params,
                            fields,
                            locations,  # now the (location, error type) pairs
                            error_type,
                            region,
                            regions[ri],
                            versions[ri],
                            flags,
                        ),
                    )
                )
            except Exception as exc:  # noqa: BLE001 - counted and logged; the neighbours go on
                failed += 1
                error = exc

        stats = self._stats
        if error is not None:
            stats.processing_error(failed, "deriving a span", error)
        design = self._design_issues
        if any(design.values()):
            stats.data_quality(**design)
            for check in design:
                design[check] = 0
        stats.ignored(not_server, not_http)
        if (
            missing_route
            or missing_consumer
            or missing_status
            or end_before_start
            or too_new
            or too_old
            or bad_schema
            or implausible
        ):
            stats.data_quality(
                missing_route=missing_route,
                missing_consumer=missing_consumer,
                missing_status_code=missing_status,
                end_before_start=end_before_start,
                timestamp_future=too_new,
                timestamp_past=too_old,
                unknown_schema_version=bad_schema,
                implausible_sampling_weight=implausible,
            )
        return out
