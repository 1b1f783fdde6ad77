"""Read deprecation facts out of an OpenAPI document (plain dicts; no FastAPI needed).

The operation's own ``deprecated`` flag plus these extensions (FastAPI puts a route's
``openapi_extra`` into its operation, so they can be set in code)::

    x-deprecated-since: 2026-09-01     # the date the operation was deprecated
    x-sunset: 2027-01-31               # RFC 8594 sunset date
    x-replacement: DELETE /v2/orders/{order_id}
    x-deprecation-link: https://docs.example.com/migrate-to-v2
    x-feature: orders                  # the key is configurable for span tagging
"""

from __future__ import annotations

from typing import Any

from apiusage.conventions.catalog import Catalog, CatalogError, Endpoint, ServiceCatalog, parse_catalog

OPERATION_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_EXTENSIONS = ("x-deprecated-since", "x-sunset", "x-replacement", "x-deprecation-link")


def operation_endpoint(
    method: str,
    route: str,
    operation: dict[str, Any],
    feature_key: str = "x-feature",
    source: str = "<openapi>",
) -> Endpoint:
    """The catalog entry an OpenAPI operation describes (validated like a catalog entry)."""
    entry: dict[str, Any] = {"method": method.upper(), "route": route}
    since = operation.get("x-deprecated-since")
    if operation.get("deprecated") is True or since is not None:
        entry["deprecated"] = since if since is not None else True
    for ext, key in (
        ("x-sunset", "sunset"),
        ("x-replacement", "replacement"),
        ("x-deprecation-link", "link"),
        (feature_key, "feature"),
    ):
        if operation.get(ext) is not None:
            entry[key] = operation[ext]
    parsed = parse_catalog({"services": {"_": {"endpoints": [entry]}}}, source=source)
    return parsed.services[0].endpoints[0]


def catalog_from_openapi(
    document: Any, service: str, source: str = "<openapi>", feature_key: str = "x-feature"
) -> Catalog:
    """A catalog with every operation that is deprecated or carries deprecation extensions."""
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise CatalogError(f"{source}: not an OpenAPI document (no 'paths' mapping)")
    endpoints = []
    for route, item in document["paths"].items():
        if not isinstance(item, dict):
            continue
        for method in OPERATION_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            interesting = operation.get("deprecated") is True or any(
                operation.get(ext) is not None for ext in (*_EXTENSIONS, feature_key)
            )
            if not interesting:
                continue
            try:
                endpoints.append(operation_endpoint(method, route, operation, feature_key, source))
            except CatalogError as exc:
                # Re-word the synthetic key path into the OpenAPI one the user can find.
                detail = str(exc).split(".endpoints[0].", 1)[-1]
                raise CatalogError(f"{source}: paths.{route}.{method}: {detail}") from None
    return Catalog((ServiceCatalog(service, tuple(endpoints)),), source)
