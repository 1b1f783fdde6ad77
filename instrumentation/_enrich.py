"""The enricher: the per-request attribute logic (built from settings by _builder.py)."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from apiusage.conventions.attributes import (
    ALL_ATTRIBUTES,
    ATTR_API_VERSION,
    ATTR_CLIENT_NAME,
    ATTR_CLIENT_VERSION,
    ATTR_CONSUMER_ID,
    ATTR_DEPRECATED,
    ATTR_FEATURE,
    ATTR_PLAN_TIER,
    ATTR_SCHEMA_VERSION,
    SCHEMA_VERSION,
)
from apiusage.conventions.catalog import Catalog
from apiusage.conventions.useragent import parse_user_agent
from opentelemetry import trace
from starlette.requests import Request

from ._config import Settings
from ._resolvers import (
    MAX_VALUE_LENGTH,
    ApiKeyHeader,
    BearerSubject,
    PlanTierMapping,
    Pseudonymizer,
    RequestState,
    api_version_from_route,
)
from ._routes import RouteTable

_logger = logging.getLogger("apiusage.instrumentation")
_CALLER_CACHE_LIMIT = 2048  # entries of well under 1 kB each
_NO_STATE: dict[str, Any] = {}
_KEYABLE = frozenset({str, int, type(None)})


class Enricher:
    """Computes the ``apiusage.*`` attributes and deprecation headers of a request."""

    def __init__(
        self,
        settings: Settings,
        consumer_resolvers: Sequence[Callable[..., Any]],
        plan_tier_resolvers: Sequence[Callable[..., Any]],
        pseudonymizer: Pseudonymizer | None,
        catalog: Catalog | None,
    ) -> None:
        self.settings = settings
        self.consumer_resolvers = tuple(consumer_resolvers)
        self.plan_tier_resolvers = tuple(plan_tier_resolvers)
        self.pseudonymize = pseudonymizer
        self.catalog = catalog
        self._service_name = settings.service_name
        self._tables: weakref.WeakKeyDictionary[Any, RouteTable] = weakref.WeakKeyDictionary()
        self._last_app: Any = None
        self._last_table: RouteTable | None = None
        self._failed: set[str] = set()
        s = settings
        # Everything the per-request path needs, looked up once here.
        self._default_plan_tier = s.default_plan_tier
        self._default_api_version = s.api_version
        self._from_user_agent = s.client_from_user_agent
        self._client_name_raw = _raw_name(s.client_name_header)
        self._client_version_raw = _raw_name(s.client_version_header)
        self._api_version_raw = _raw_name(s.api_version_header)
        # The pseudonymizer's bounded LRU cache of raw id -> HMAC, called directly.
        self._pseudonym: Callable[[str], str] | None = (
            pseudonymizer._cached if type(pseudonymizer) is Pseudonymizer else pseudonymizer
        )
        # Built-in resolvers read the raw header map or the scope; others get a Request.
        self._consumer_calls = tuple((_fast_path(r), r) for r in self.consumer_resolvers)
        self._plan_tier_calls = tuple((_fast_path(r), r) for r in self.plan_tier_resolvers)
        wanted = {b"user-agent"}
        for name in (self._client_name_raw, self._client_version_raw, self._api_version_raw):
            if name:
                wanted.add(name)
        for resolver in (*self.consumer_resolvers, *self.plan_tier_resolvers):
            wanted.update(raw for raw in map(_raw_name, getattr(resolver, "_headers", ())) if raw)
        self._wanted_raw = frozenset(wanted)
        # The caller cache (see _parts()): raw header values (and request.state values
        # of RequestState resolvers) -> the caller's attributes. Only with built-in
        # resolvers, whose answers depend on nothing else; a user callable may read anything.
        # Its keys hold raw credentials (the API key, the bearer token) in this process's
        # memory, as the pseudonymizer's own cache does: process-local, never exported,
        # bounded by _CALLER_CACHE_LIMIT entries (emptied when full).
        builtin = all(
            _fast_path(r) is not None for r in (*self.consumer_resolvers, *self.plan_tier_resolvers)
        )
        # A cache key: the values of these header names (a None name reads as None), then
        # of these request.state attributes.
        names: tuple[bytes | None, ...] = tuple(sorted(wanted))
        if len(names) < 6:
            names += (None,) * (6 - len(names))
        self._key_headers: tuple[Any, ...] | None = names if builtin else None
        self._caller_states = tuple(
            r.attribute
            for r in (*self.consumer_resolvers, *self.plan_tier_resolvers)
            if type(r) is RequestState
        )
        # The usual configurations (at most six header names, one state attribute) also
        # have an inline path in on_response(): six plain look-ups, one state look-up.
        fast = builtin and len(names) == 6 and len(self._caller_states) <= 1
        self._fast_key = names if fast else None
        self._state_attr = self._caller_states[0] if fast and self._caller_states else None
        self._callers: dict[tuple[Any, ...], tuple[dict[str, Any], str | None]] = {}

    @property
    def sensitive_headers(self) -> tuple[str, ...]:
        """Header names that carry credentials under this configuration."""
        names = ["authorization", "proxy-authorization", "cookie", "x-api-key"]
        names.append(self.settings.consumer_header)
        return tuple(names)

    # -- service name ----------------------------------------------------------------

    def service_name(self) -> str | None:
        """The service name used for catalog look-ups: config, else the tracer's resource."""
        if self._service_name is None:
            resource = getattr(trace.get_tracer_provider(), "resource", None)
            name = getattr(resource, "attributes", {}).get("service.name")
            if name:
                self._service_name = str(name)
        return self._service_name

    def set_service_name(self, name: str | None) -> None:
        if self.settings.service_name is None and name:
            self._service_name = name
            self.check_catalog_service()

    def check_catalog_service(self) -> None:
        """Warn at start-up when the catalog has nothing for this service (likely a typo)."""
        name = self._service_name
        if self.catalog is not None and name and self.catalog.service(name) is None:
            _logger.warning(
                "apiusage: the catalog %s has no service named %r (it has: %s); "
                "set APIUSAGE_SERVICE_NAME or OTEL_SERVICE_NAME to the catalog's name",
                self.catalog.source,
                name,
                ", ".join(self.catalog.service_names) or "none",
            )

    # -- per request -----------------------------------------------------------------

    def table(self, app: Any) -> RouteTable:
        # Nearly always one app per process. (None before the first table: not a table for None.)
        if app is self._last_app and self._last_table is not None:
            return self._last_table
        table = self._tables.get(app)
        if table is None:
            table = RouteTable(
                app,
                self.catalog,
                self.service_name,
                self.settings.feature_sources,
                self.settings.feature_openapi_key,
                self.settings.deprecation_headers,
                api_version=self.settings.api_version,
            )
            self._tables[app] = table
        self._last_app, self._last_table = app, table
        return table

    def on_response(self, scope: dict[str, Any], span: trace.Span, app: Any) -> list[tuple[bytes, bytes]]:
        """Set the span's attributes; return the response headers to add."""
        # This runs on every request: route facts are cached per (method, template), the
        # caller's attributes per distinct caller (see _parts), and an SDK span's
        # attribute dict is read and written directly (see below).
        app = scope.get("app") or app
        table = self._last_table if app is self._last_app else None
        if table is None:
            table = self.table(app)
        template = None
        container: Any = getattr(span, "_attributes", None)
        store: Any = getattr(container, "_dict", None)
        if type(store) is dict:
            try:  # the SDK's span: it records until end() freezes its attributes
                recording = not container._immutable
            except AttributeError:  # an SDK that changed: its public API only
                recording = span.is_recording()
                store = None
        else:
            recording = span.is_recording()
            store = None
        if recording:
            if store is not None:
                template = store.get("http.route")
            else:
                attributes = getattr(span, "attributes", None)
                if attributes is not None:
                    template = attributes.get("http.route")
        if template is None:
            template = table.template(scope)
        method = scope.get("method", "GET")
        # (No template: table.info() answers UNMATCHED; infos holds matched routes only.)
        info = (template is not None and table.infos.get((method, template))) or table.info(
            method, template, scope
        )
        if recording:
            # The common case inline (here a Python call costs as much as the rest): a
            # known caller without an API-version header, on a matched route, under the
            # usual configuration. Anything else goes through _parts(), which builds the
            # same cache key.
            cached = None
            names = self._fast_key
            raw = scope.get("headers")
            if names is not None and type(raw) is list:
                headers = dict(raw)
                if len(headers) == len(raw):  # no repeated header name
                    get = headers.get
                    attr = self._state_attr
                    if attr is None:
                        cached = self._callers.get(
                            (
                                get(names[0]),
                                get(names[1]),
                                get(names[2]),
                                get(names[3]),
                                get(names[4]),
                                get(names[5]),
                            )
                        )
                    else:
                        state = scope.get("state", _NO_STATE)
                        value = state.get(attr) if type(state) is dict else _NO_STATE
                        if type(value) in _KEYABLE:  # (_NO_STATE is not)
                            cached = self._callers.get(
                                (
                                    get(names[0]),
                                    get(names[1]),
                                    get(names[2]),
                                    get(names[3]),
                                    get(names[4]),
                                    get(names[5]),
                                    value,
                                )
                            )
            caller: Mapping[str, Any]
            if cached is not None and cached[1] is None and template:
                caller, route = cached[0], info.attributes
            else:
                caller, route = self._parts(scope, template, info)
            try:
                # The SDK's set_attributes re-validates every value, which costs more than
                # computing them: values we built as plain str/int/bool go straight into
                # its dict, under its lock, unless it has limits to enforce or has ended.
                maxlen = container.maxlen
                lock = container._lock
                direct = (
                    store is not None
                    and container.max_value_len is None
                    and (maxlen is None or len(store) + len(ALL_ATTRIBUTES) <= maxlen)
                )
            except AttributeError:  # not the SDK's span, or an SDK that changed
                direct = False
            if direct:
                with lock:
                    store.update(caller)
                    store.update(route)
            else:
                span.set_attributes({**caller, **route})
        if info.headers is None:
            return []
        return info.headers.for_request(scope)

    def attributes(self, scope: dict[str, Any], template: str | None, info: Any) -> dict[str, Any]:
        """The ``apiusage.*`` attributes of one request; ``info`` is the route's RouteInfo."""
        caller, route = self._parts(scope, template, info)
        return {**caller, **route}

    def _parts(
        self, scope: dict[str, Any], template: str | None, info: Any
    ) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
        """The request's attributes in two read-only parts: the caller's, then the route's."""
        caller_attrs, api_version = self._caller_of(scope)
        if api_version is None and template:
            return caller_attrs, info.attributes  # the common case: the route's own part

        if api_version is None:  # no route: the raw path's /vN prefix, else the configured one
            api_version = api_version_from_route(_route_path(scope)) or self._default_api_version
        route: dict[str, Any] = {ATTR_API_VERSION: api_version} if api_version else {}
        if info.feature:
            route[ATTR_FEATURE] = info.feature
        route[ATTR_DEPRECATED] = info.deprecated
        return caller_attrs, route

    def consumer_id(self, scope: dict[str, Any]) -> str | None:
        """The pseudonymous consumer id of a request (as its span gets), or None."""
        value = self._caller_of(scope)[0].get(ATTR_CONSUMER_ID)
        return value if isinstance(value, str) else None

    def _caller_of(self, scope: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
        """The caller's attributes and the API-version header, through the caller cache."""
        # Raw header name -> the first raw value sent (as Starlette's headers.get). ASGI
        # servers give names lower-cased, as bytes: they are compared as they are, and
        # values only decoded when used. The dict is one C call; only when a name repeats
        # (rare) does a Python loop keep the first value of each name we read.
        raw = scope.get("headers") or ()
        if type(raw) is not list:
            raw = list(raw)
        headers = dict(raw)
        if len(headers) != len(raw):
            headers = {}
            for name, value in raw:
                if name in self._wanted_raw and name not in headers:
                    headers[name] = value

        # What depends on the caller (consumer id, plan tier, client, API-version header)
        # is, with only built-in resolvers, a function of the values of the headers we
        # read and of the request.state attributes RequestState reads: it is computed
        # once per distinct set of those values and kept in self._callers.
        key = None
        names = self._key_headers
        if names is not None:
            key = tuple(map(headers.get, names))
            if self._caller_states:
                state = scope.get("state", _NO_STATE)
                if type(state) is dict:
                    for attr in self._caller_states:
                        value = state.get(attr)
                        if type(value) not in _KEYABLE:  # str() of an object may vary
                            key = None
                            break
                        key += (value,)
                else:
                    key = None
        caller = self._callers.get(key) if key is not None else None
        if caller is None:
            caller = self._caller(headers, scope)
            if key is not None:
                if len(self._callers) >= _CALLER_CACHE_LIMIT:
                    self._callers.clear()
                self._callers[key] = caller
        return caller

    def _caller(
        self, headers: Mapping[bytes | None, bytes], scope: dict[str, Any]
    ) -> tuple[dict[str, Any], str | None]:
        """The caller's attributes (schema version to client version), and the API-version header."""
        request: Request | None = None
        attrs: dict[str, Any] = {ATTR_SCHEMA_VERSION: SCHEMA_VERSION}

        consumer = None
        for fast, resolver in self._consumer_calls:
            if fast is not None:
                consumer = fast(headers, scope)  # built-in: cannot raise on request data
            else:
                if request is None:
                    request = Request(scope)
                consumer = self._call(resolver, request)
            if consumer:
                break
        if consumer and self._pseudonym is not None:
            attrs[ATTR_CONSUMER_ID] = self._pseudonym(consumer)

        tier = None
        for fast, resolver in self._plan_tier_calls:
            try:
                if fast is not None:
                    value = fast(headers, scope, consumer)
                else:
                    if request is None:
                        request = Request(scope)
                    value = resolver(request, consumer)
            except Exception:
                self._resolver_failed(fast or resolver)
                continue
            if value is not None:
                tier = str(value).strip()[:MAX_VALUE_LENGTH] or None  # as clip() does
                if tier:
                    break
        attrs[ATTR_PLAN_TIER] = tier or self._default_plan_tier

        # (A header that is not configured has the name None: headers.get(None) is None.)
        name = version = None
        value = headers.get(self._client_name_raw)
        if value:
            name = value.decode("latin-1").strip()[:MAX_VALUE_LENGTH] or None
        value = headers.get(self._client_version_raw)
        if value:
            version = value.decode("latin-1").strip()[:MAX_VALUE_LENGTH] or None
        if name is None and self._from_user_agent:
            value = headers.get(b"user-agent")
            if value:
                name, ua_version = parse_user_agent(value.decode("latin-1"))
                version = version or ua_version
        if name:
            attrs[ATTR_CLIENT_NAME] = name
        if version:
            attrs[ATTR_CLIENT_VERSION] = version

        api_version = None
        value = headers.get(self._api_version_raw)
        if value:
            api_version = value.decode("latin-1").strip()[:MAX_VALUE_LENGTH] or None
        return attrs, api_version

    def _call(self, resolver: Callable[..., Any], *args: Any) -> str | None:
        try:
            value = resolver(*args)
        except Exception:
            self._resolver_failed(resolver)
            return None
        if value is None:
            return None
        value = str(value).strip()
        return value or None

    def _resolver_failed(self, resolver: Callable[..., Any]) -> None:
        # A user resolver's bug must not fail the request; say so once per resolver.
        name = repr(resolver)
        if name not in self._failed:
            self._failed.add(name)
            _logger.warning("apiusage: resolver %s raised; ignoring it for this request", name, exc_info=True)


def _fast_path(resolver: Any) -> Callable[..., Any] | None:
    """A built-in resolver's ``_fast(headers, scope, consumer=None)``, or None for a user callable."""
    # Exact types: a subclass may override __call__, so it gets the general path.
    if type(resolver) in (ApiKeyHeader, BearerSubject, RequestState, PlanTierMapping):
        return resolver._fast
    return None


def _raw_name(header: str | None) -> bytes | None:
    """A header name as ASGI servers give it: lower-case bytes."""
    return header.lower().encode("latin-1") if header else None


def _route_path(scope: dict[str, Any]) -> str:
    path = scope.get("path", "")
    root = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
