"""What we know about a route: its template, feature, deprecation and response headers.

Facts come from, in order of authority: the catalog file, the app's own OpenAPI
operation (FastAPI's ``deprecated=True``, ``tags``, ``openapi_extra``, merged across
``include_router`` the way FastAPI documents them), and the matched route object for
routes left out of the schema. They are computed once per (method, route template).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from apiusage.conventions.attributes import ATTR_API_VERSION, ATTR_DEPRECATED, ATTR_FEATURE
from apiusage.conventions.catalog import Catalog, CatalogError, Endpoint, merge_endpoint, route_key
from starlette.routing import Match

from ._headers import DeprecationHeaders
from ._openapi import OPERATION_METHODS, operation_endpoint
from ._resolvers import api_version_from_route

try:  # FastAPI >= 0.137.2 nests included routers; this flattens them.
    from fastapi.routing import iter_route_contexts
except ImportError:  # pragma: no cover - older FastAPI keeps routes flat
    iter_route_contexts = None  # type: ignore[assignment]

_logger = logging.getLogger("apiusage.instrumentation")
_CACHE_LIMIT = 2048


@dataclass(frozen=True)
class RouteInfo:
    feature: str | None = None
    deprecated: bool = False
    headers: DeprecationHeaders | None = None
    #: The ``/vN`` prefix of the route template (``v1``), if it has one.
    api_version: str | None = None
    #: The ``apiusage.*`` attributes every request of the route gets, unless it sends an
    #: API-version header: the API version (the route's, else the configured one), the
    #: feature and the deprecation flag, in that order. Read-only.
    attributes: Mapping[str, Any] = field(default=None, compare=False)  # type: ignore[arg-type]

    def __post_init__(self) -> None:
        if self.attributes is None:
            attrs = _route_attributes(self.api_version, self.feature, self.deprecated)
            object.__setattr__(self, "attributes", attrs)


def _route_attributes(api_version: str | None, feature: str | None, deprecated: bool) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    if api_version:
        attrs[ATTR_API_VERSION] = api_version
    if feature:
        attrs[ATTR_FEATURE] = feature
    attrs[ATTR_DEPRECATED] = deprecated
    return attrs


UNMATCHED = RouteInfo()


class RouteTable:
    """Route facts for one app, cached."""

    def __init__(
        self,
        app: Any,
        catalog: Catalog | None,
        service_name: Callable[[], str | None],
        feature_sources: tuple[str, ...],
        feature_key: str,
        deprecation_headers: bool,
        api_version: str | None = None,
    ) -> None:
        self.app = app
        self.api_version = api_version  # for routes without a /vN prefix
        self.catalog = catalog
        self.service_name = service_name
        self.feature_sources = feature_sources
        self.feature_key = feature_key
        self.deprecation_headers = deprecation_headers
        self._operations: dict[tuple[str, str], dict[str, Any]] | None = None
        # (method, template) -> facts; read directly by the enricher on every request.
        self.infos: dict[tuple[str, str], RouteInfo] = {}
        self._templates: dict[tuple[str, str], str | None] = {}
        self._all_templates: frozenset[str] | None = None

    # -- templates -------------------------------------------------------------------

    def template(self, scope: dict[str, Any]) -> str | None:
        """The route template of a request when the span could not tell us."""
        key = (scope.get("method", ""), scope.get("path", ""))
        try:
            return self._templates[key]
        except KeyError:
            pass
        template = self._match(scope)
        if len(self._templates) >= _CACHE_LIMIT:
            # Paths with ids in them never repeat; a full reset is cheaper than an LRU.
            self._templates.clear()
        self._templates[key] = template
        return template

    def _match(self, scope: dict[str, Any]) -> str | None:
        routes = getattr(self.app, "routes", None) or []
        candidates = iter_route_contexts(routes) if iter_route_contexts is not None else routes
        partial = None
        for route in candidates:
            try:
                match, _ = route.matches(scope)
            except Exception:  # an exotic route type must not break the request
                continue
            if match == Match.FULL:
                return getattr(route, "path", None)
            if match == Match.PARTIAL and partial is None:
                partial = getattr(route, "path", None)
        return partial

    def route_templates(self) -> frozenset[str]:
        """Every route template of the app (for record_feedback's route)."""
        if self._all_templates is None:
            routes = getattr(self.app, "routes", None) or []
            candidates = iter_route_contexts(routes) if iter_route_contexts is not None else routes
            self._all_templates = frozenset(
                path for route in candidates if isinstance(path := getattr(route, "path", None), str)
            )
        return self._all_templates

    # -- facts -----------------------------------------------------------------------

    def info(self, method: str, template: str | None, scope: dict[str, Any]) -> RouteInfo:
        if template is None:
            return UNMATCHED
        key = (method, template)
        info = self.infos.get(key)
        if info is None:
            info = self._compute(method, template, scope.get("route"))
            if len(self.infos) < _CACHE_LIMIT:
                self.infos[key] = info
        return info

    def _operation(self, method: str, template: str) -> dict[str, Any] | None:
        if self._operations is None:
            self._operations = {}
            openapi = getattr(self.app, "openapi", None)
            try:
                document = openapi() if callable(openapi) else None
            except Exception:
                _logger.warning(
                    "apiusage: could not build the app's OpenAPI document; route flags "
                    "are read from the route objects instead",
                    exc_info=True,
                )
                document = None
            paths = document.get("paths") if isinstance(document, dict) else None
            for path, item in (paths or {}).items():
                if not isinstance(item, dict):
                    continue
                key = route_key(path)
                if key is None:  # not a readable template: it can describe no route
                    continue
                for op_method in OPERATION_METHODS:
                    operation = item.get(op_method)
                    if isinstance(operation, dict):
                        self._operations[(op_method.upper(), key)] = operation
        key = route_key(template)
        return self._operations.get((method, key)) if key is not None else None

    def _compute(self, method: str, template: str, route: Any) -> RouteInfo:
        operation = self._operation(method, template)
        if operation is None and route is not None and getattr(route, "path", None) is not None:
            # Not in the schema (include_in_schema=False): read the route object itself.
            operation = {
                "deprecated": bool(getattr(route, "deprecated", False)),
                "tags": list(getattr(route, "tags", None) or []),
                **(getattr(route, "openapi_extra", None) or {}),
            }
        own: Endpoint | None = None
        if operation is not None:
            try:
                own = operation_endpoint(method, template, operation, self.feature_key, source="openapi")
            except CatalogError as exc:
                _logger.warning("apiusage: ignoring route extensions of %s %s: %s", method, template, exc)
                own = Endpoint(method, template, deprecated=operation.get("deprecated") is True)
        entry = None
        service = self.service_name()
        if self.catalog is not None and service is not None:
            entry = self.catalog.endpoint(service, method, template)
        merged = merge_endpoint(own, entry)

        feature = None
        for source in self.feature_sources:
            if source == "catalog" and entry is not None:
                feature = entry.feature
            elif source == "openapi" and own is not None:
                feature = own.feature
            elif source == "tags" and operation is not None:
                tags = operation.get("tags") or []
                if tags:
                    tag = tags[0]
                    feature = str(tag.value if isinstance(tag, Enum) else tag)
            if feature:
                break
        headers = None
        if self.deprecation_headers and merged is not None:
            candidate = DeprecationHeaders(merged)
            headers = candidate if candidate else None
        feature = feature[:64] if feature else None
        deprecated = bool(merged is not None and merged.deprecated)
        api_version = api_version_from_route(template)
        return RouteInfo(
            feature=feature,
            deprecated=deprecated,
            headers=headers,
            api_version=api_version,
            attributes=_route_attributes(api_version or self.api_version, feature, deprecated),
        )
