"""Read deprecation facts out of an OpenAPI document (plain dicts; no FastAPI needed).

The operation's own ``deprecated`` flag plus these extensions (FastAPI puts a route's
``openapi_extra`` into its operation, so they can be set in code)::

    x-deprecated-since: 2026-09-01     # the date the operation was deprecated
    x-sunset: 2027-01-31               # RFC 8594 sunset date
    x-replacement: DELETE /v2/orders/{order_id}
    x-deprecation-link: https://docs.example.com/migrate-to-v2
    x-feature: orders                  # the key is configurable for span tagging

and, for unused parameters, the names each operation declares: its query parameters
(``parameters`` of the path item and the operation, ``in: query``) and the fields of its
JSON request body (``requestBody.content[application/json].schema.properties``, nested to
``body_depth`` levels as ``a.b``), following local ``$ref``s (``#/components/...``).
"""

from __future__ import annotations

from typing import Any

from apiusage.conventions.catalog import (
    MAX_PARAMETER_NAMES,
    Catalog,
    CatalogError,
    Endpoint,
    ServiceCatalog,
    parse_catalog,
)

OPERATION_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
_EXTENSIONS = ("x-deprecated-since", "x-sunset", "x-replacement", "x-deprecation-link")
MAX_BODY_DEPTH = 8
_MAX_REF_CHAIN = 32  # $ref to $ref to ...: past this the document is taken to loop
_MAX_SCHEMA_NODES = 10_000  # schemas visited per request body, whatever the document's shape
# Schemas inside schemas (properties, allOf/anyOf/oneOf) followed at most: a document built in
# memory (app.openapi()) has no reader's depth bound, and each level is a Python frame here.
MAX_SCHEMA_NESTING = 64


def operation_endpoint(
    method: str,
    route: str,
    operation: dict[str, Any],
    feature_key: str = "x-feature",
    source: str = "<openapi>",
    declared: dict[str, list[str]] | None = None,
) -> Endpoint:
    """The catalog entry an OpenAPI operation describes (validated like a catalog entry), with
    the `declared` parameter names ({"query": [...], "body": [...]}) when given."""
    entry: dict[str, Any] = {"method": method.upper(), "route": route}
    if declared:
        entry["parameters"] = declared
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
    document: Any,
    service: str,
    source: str = "<openapi>",
    feature_key: str = "x-feature",
    parameters: bool = True,
    body_depth: int = 1,
) -> Catalog:
    """A catalog with every operation that is deprecated or carries deprecation extensions, and,
    with `parameters`, every operation that declares query parameters or JSON body fields (its
    names kept for api_unused_parameters)."""
    if not isinstance(document, dict) or not isinstance(document.get("paths"), dict):
        raise CatalogError(f"{source}: not an OpenAPI document (no 'paths' mapping)")
    if not 1 <= body_depth <= MAX_BODY_DEPTH:
        raise CatalogError(f"body depth must be 1 to {MAX_BODY_DEPTH} (got {body_depth})")
    endpoints = []
    for route, item in document["paths"].items():
        if not isinstance(item, dict):
            continue
        for method in OPERATION_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            where = f"{source}: paths.{route}.{method}"
            query: tuple[str, ...] = ()
            body: tuple[str, ...] = ()
            if parameters:
                reader = _Declared(document, where)
                query = reader.query(item, operation)
                body = reader.body(operation, body_depth)
            interesting = operation.get("deprecated") is True or any(
                operation.get(ext) is not None for ext in (*_EXTENSIONS, feature_key)
            )
            if not (interesting or query or body):
                continue
            try:
                declared = {k: list(v) for k, v in (("query", query), ("body", body)) if v}
                endpoint = operation_endpoint(method, route, operation, feature_key, source, declared)
            except CatalogError as exc:
                # Re-word the synthetic key path into the OpenAPI one the user can find.
                detail = str(exc).split(".endpoints[0].", 1)[-1]
                raise CatalogError(f"{where}: {detail}") from None
            endpoints.append(endpoint)
    return Catalog((ServiceCatalog(service, tuple(endpoints)),), source)


class _Declared:
    """The names one operation declares, read from the document with every $ref bounded."""

    def __init__(self, document: dict, where: str) -> None:
        self.document = document
        self.where = where
        self.nodes = 0

    def fail(self, message: str) -> CatalogError:
        return CatalogError(f"{self.where}: {message}")

    def resolve(self, node: Any) -> Any:
        """`node` with its local $ref chain followed; None for a $ref that cannot be followed
        (another file, a URL: not read)."""
        seen: list[str] = []
        while isinstance(node, dict) and isinstance(node.get("$ref"), str):
            ref = node["$ref"]
            if not ref.startswith("#/"):
                return None
            if ref in seen or len(seen) >= _MAX_REF_CHAIN:
                raise self.fail(f"$ref loop: {' -> '.join([*seen, ref])[:300]}")
            seen.append(ref)
            node = self.document
            for part in ref[2:].split("/"):
                part = part.replace("~1", "/").replace("~0", "~")
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    raise self.fail(f"$ref {ref!r} points to nothing in the document")
        return node

    def query(self, item: dict, operation: dict) -> tuple[str, ...]:
        """Query parameter names: the path item's, overridden by the operation's (name and in)."""
        declared: dict[tuple[str, str], None] = {}
        for owner in (item, operation):
            raw = owner.get("parameters")
            if raw is None:
                continue
            if not isinstance(raw, list):
                raise self.fail(f"parameters: expected a list (got {type(raw).__name__})")
            for i, parameter in enumerate(raw):
                parameter = self.resolve(parameter)
                if parameter is None:
                    continue
                if not isinstance(parameter, dict):
                    raise self.fail(f"parameters[{i}]: expected a mapping")
                name, location = parameter.get("name"), parameter.get("in")
                if location != "query":
                    continue
                if not isinstance(name, str) or not name:
                    raise self.fail(f"parameters[{i}].name: expected a non-empty string (got {name!r})")
                declared[name, location] = None
        return self.bounded("query parameters", [name for name, _ in declared])

    def body(self, operation: dict, depth: int) -> tuple[str, ...]:
        """JSON request body field names to `depth` levels (``a``, ``a.b``); array items are not
        entered, as the instrumentation does not expand them."""
        body = self.resolve(operation.get("requestBody"))
        if not isinstance(body, dict) or not isinstance(body.get("content"), dict):
            return ()
        names: dict[str, None] = {}
        for media, content in body["content"].items():
            kind = str(media).split(";", 1)[0].strip().lower()
            if not (
                kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))
            ):
                continue
            if isinstance(content, dict):
                self.fields(content.get("schema"), "", depth, names, [], 0)
        return self.bounded("request body fields", list(names))

    def fields(
        self, schema: Any, prefix: str, depth: int, names: dict[str, None], stack: list[int], level: int
    ) -> None:
        self.nodes += 1
        if self.nodes > _MAX_SCHEMA_NODES:
            raise self.fail(
                f"request body schema has more than {_MAX_SCHEMA_NODES} parts; lower --body-depth"
            )
        if level > MAX_SCHEMA_NESTING:
            raise self.fail(f"request body schema nests schemas more than {MAX_SCHEMA_NESTING} deep")
        schema = self.resolve(schema)
        if not isinstance(schema, dict) or id(schema) in stack:
            return  # not a schema we can read, or a composition that includes itself
        stack.append(id(schema))
        try:
            properties = schema.get("properties")
            if isinstance(properties, dict):
                for name, sub in properties.items():
                    full = f"{prefix}{name}"
                    names[full] = None
                    if len(names) > MAX_PARAMETER_NAMES:
                        raise self.fail(
                            f"request body declares more than {MAX_PARAMETER_NAMES} field names; "
                            "lower --body-depth"
                        )
                    if depth > 1:
                        self.fields(sub, f"{full}.", depth - 1, names, [], level + 1)
            # A name any part of a composition declares is declared.
            for key in ("allOf", "anyOf", "oneOf"):
                parts = schema.get(key)
                if isinstance(parts, list):
                    for part in parts:
                        self.fields(part, prefix, depth, names, stack, level + 1)
        finally:
            stack.pop()

    def bounded(self, what: str, names: list[str]) -> tuple[str, ...]:
        if len(names) > MAX_PARAMETER_NAMES:
            raise self.fail(f"declares more than {MAX_PARAMETER_NAMES} {what}")
        return tuple(names)
