"""The catalog format: typed model, look-ups, and errors that name the file and key path."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest
from apiusage.conventions.catalog import (
    Catalog,
    CatalogError,
    Endpoint,
    dump_catalog,
    load_catalog,
    parse_catalog,
)

EXAMPLE = """\
services:
  orders-api:
    endpoints:
      - method: DELETE
        route: /v1/orders/{order_id}
        deprecated: 2026-09-01        # true, or the date it was deprecated
        sunset: 2027-01-31
        replacement: DELETE /v2/orders/{order_id}
        feature: orders
        link: https://docs.example.com/migrate-to-v2
      - method: get
        route: /v1/reports
        deprecated: true
      - method: "*"
        route: /v1/legacy/{path:path}
        sunset: "2026-12-31"
  empty-service:
"""


def test_issue_example_parses_to_the_typed_model(tmp_path):
    path = tmp_path / "catalog.yaml"
    path.write_text(EXAMPLE)
    catalog = load_catalog(path)
    assert isinstance(catalog, Catalog)
    assert catalog.service_names == ("orders-api", "empty-service")
    assert catalog.endpoint("orders-api", "DELETE", "/v1/orders/{order_id}") == Endpoint(
        method="DELETE",
        route="/v1/orders/{order_id}",
        deprecated=True,
        deprecated_since=dt.date(2026, 9, 1),
        sunset=dt.date(2027, 1, 31),
        replacement="DELETE /v2/orders/{order_id}",
        feature="orders",
        link="https://docs.example.com/migrate-to-v2",
    )
    reports = catalog.endpoint("orders-api", "get", "/v1/reports")
    assert (reports.method, reports.deprecated, reports.deprecated_since) == ("GET", True, None)
    with pytest.raises(AttributeError):
        reports.deprecated = False  # frozen


def test_lookups():
    catalog = parse_catalog(__import__("yaml").safe_load(EXAMPLE))
    # Parameter names do not matter, only the route's shape.
    assert catalog.endpoint("orders-api", "DELETE", "/v1/orders/{id}").feature == "orders"
    assert catalog.endpoint("orders-api", "GET", "/v1/orders/{order_id}") is None
    # "*" matches any method; the {path:path} convertor is ignored for matching.
    legacy = catalog.endpoint("orders-api", "PATCH", "/v1/legacy/{path}")
    assert (legacy.method, legacy.sunset, legacy.deprecated) == ("*", dt.date(2026, 12, 31), False)
    assert catalog.endpoint("empty-service", "GET", "/") is None
    assert catalog.endpoint("unknown", "GET", "/v1/reports") is None


def test_dump_round_trips(tmp_path):
    catalog = parse_catalog(__import__("yaml").safe_load(EXAMPLE), "catalog.yaml")
    path = tmp_path / "again.yaml"
    path.write_text(dump_catalog(catalog, header="generated"))
    again = load_catalog(path)
    assert again.services == catalog.services
    assert path.read_text().startswith("# generated\nservices:\n  orders-api:\n")


ERRORS = [
    ("[]", "catalog.yaml: expected a mapping with a 'services' key (got a list)"),
    ("", "catalog.yaml: empty catalog (expected a mapping with a 'services' key)"),
    ("service: {}", "catalog.yaml: service: unknown key (allowed: services, version)"),
    ("services: [a]", "catalog.yaml: services: expected a mapping of service names (got a list)"),
    ("services: {s: {endpoint: []}}", "catalog.yaml: services.s.endpoint: unknown key (allowed: endpoints)"),
    ("services: {s: {endpoints: {}}}", "catalog.yaml: services.s.endpoints: expected a list (got a mapping)"),
    ("services: {s: {endpoints: [{route: /a}]}}", "catalog.yaml: services.s.endpoints[0].method: required"),
    (
        "services: {s: {endpoints: [{method: FETCH, route: /a}]}}",
        "catalog.yaml: services.s.endpoints[0].method: not an HTTP method (got 'FETCH')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: a}]}}",
        "catalog.yaml: services.s.endpoints[0].route: must start with '/' (got 'a')",
    ),
    (
        "services: {orders-api: {endpoints: [{method: GET, route: /a, sunset: soon}]}}",
        "catalog.yaml: services.orders-api.endpoints[0].sunset: not a date (got 'soon')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, deprecated: yesterday}]}}",
        "catalog.yaml: services.s.endpoints[0].deprecated: expected true, false or a date YYYY-MM-DD "
        "(got 'yesterday')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, deprecated: 2027-01-01,\n"
        "  sunset: 2026-01-01}]}}",
        "catalog.yaml: services.s.endpoints[0].sunset: is before the deprecation date "
        "(2026-01-01 < 2027-01-01)",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, replacement: 'use v2'}]}}",
        "catalog.yaml: services.s.endpoints[0].replacement: expected '[METHOD ]/path' or an http(s) URL "
        "(got 'use v2')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, link: 'docs'}]}}",
        "catalog.yaml: services.s.endpoints[0].link: expected an http(s) URL or a path (got 'docs')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, sunsett: 2026-01-01}]}}",
        "catalog.yaml: services.s.endpoints[0].sunsett: unknown key (allowed: method, route, deprecated, "
        "sunset, replacement, feature, link, parameters, or x-*)",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: '/a/{x}'}, {method: get, route: '/a/{y}'}]}}",
        "catalog.yaml: services.s.endpoints[1]: duplicate endpoint GET /a/{y} (also endpoints[0])",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, feature: 3}]}}",
        "catalog.yaml: services.s.endpoints[0].feature: expected a non-empty string (got 3)",
    ),
    ("version: 2", "catalog.yaml: version: unsupported catalog version (got 2)"),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: [limit]}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters: expected a mapping with 'query' and/or "
        "'body' lists (got a list)",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: {header: [x]}}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters.header: unknown key (allowed: query, body)",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: {query: limit}}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters.query: expected a list of names (got a string)",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: {query: [limit, 3]}}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters.query[1]: expected a non-empty string (got '3')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: {body: [a, b, a]}}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters.body[2]: duplicate name 'a' (also [0])",
    ),
    (
        'services: {s: {endpoints: [{method: GET, route: /a, parameters: {query: ["a\\tb"]}}]}}',
        "catalog.yaml: services.s.endpoints[0].parameters.query[0]: has a control character ('a\\tb')",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: {query: [" + "x" * 257 + "]}}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters.query[0]: longer than 256 characters ('"
        + "x" * 69
        + "… (257 characters))",
    ),
    (
        "services: {s: {endpoints: [{method: GET, route: /a, parameters: {query: ["
        + ", ".join(f"p{i}" for i in range(1001))
        + "]}}]}}",
        "catalog.yaml: services.s.endpoints[0].parameters.query: more than 1000 names (1001)",
    ),
]


def test_declared_parameters_round_trip_through_dump(tmp_path):
    text = (
        "services:\n  s:\n    endpoints:\n"
        "    - {method: POST, route: /v1/orders, parameters: {query: [dry_run], body: [items, items.sku]}}\n"
        "    - {method: GET, route: /v1/orders, parameters: {query: [limit, cursor], body: []}}\n"
    )
    (tmp_path / "c.yaml").write_text(text)
    catalog = load_catalog(tmp_path / "c.yaml")
    post = catalog.endpoint("s", "POST", "/v1/orders")
    get = catalog.endpoint("s", "GET", "/v1/orders")
    assert (post.query_parameters, post.body_fields) == (("dry_run",), ("items", "items.sku"))
    assert (get.query_parameters, get.body_fields) == (("limit", "cursor"), ())
    assert (get.declared("query"), get.declared("body")) == (("limit", "cursor"), ())
    dumped = dump_catalog(catalog)
    assert dumped == (
        "services:\n  s:\n    endpoints:\n"
        "    - method: POST\n      route: /v1/orders\n      parameters:\n"
        "        query:\n        - dry_run\n        body:\n        - items\n        - items.sku\n"
        "    - method: GET\n      route: /v1/orders\n      parameters:\n"
        "        query:\n        - limit\n        - cursor\n"
    )
    (tmp_path / "d.yaml").write_text(dumped)
    assert load_catalog(tmp_path / "d.yaml").services == catalog.services


@pytest.mark.parametrize("text, message", ERRORS)
def test_errors_name_file_and_key_path(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "catalog.yaml").write_text(text)
    with pytest.raises(CatalogError) as err:
        load_catalog("catalog.yaml")
    assert str(err.value) == message


def test_unreadable_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CatalogError, match=r"^missing.yaml: catalog file not found$"):
        load_catalog("missing.yaml")
    (tmp_path / "bad.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(CatalogError, match=r"^bad.yaml: cannot read catalog file: "):
        load_catalog("bad.yaml")
    (tmp_path / "broken.yaml").write_text("services:\n  - [\n")
    with pytest.raises(CatalogError, match=r"^broken.yaml: not valid YAML at line 3, column 1: "):
        load_catalog("broken.yaml")


def test_catalog_module_imports_only_yaml():
    """The catalog's old path and the instrumentation package do not drag OpenTelemetry or FastAPI
    in (for code that still imports it from there)."""
    code = (
        "import sys, apiusage.instrumentation.catalog as c, apiusage.instrumentation as i;"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('opentelemetry', 'fastapi', 'starlette', 'pydantic', 'grpc'));"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
