"""The one catalog model: routes matched by their slots, hostile routes refused at load time."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from apiusage.conventions import catalog as conventions_catalog
from apiusage.conventions.catalog import CatalogError, load_catalog, parse_catalog

CATALOG = """\
services:
  orders-api:
    endpoints:
      - method: GET
        route: /v1/reports/:id
        deprecated: 2026-09-01
      - method: DELETE
        route: /v1/orders/<int:order_id>
        deprecated: true
      - method: "*"
        route: /v1/legacy/**
        sunset: 2026-12-31
      - method: POST
        route: /v1/things/{name}:cancel
        feature: things
"""


@pytest.fixture
def catalog(tmp_path: Path):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    return load_catalog(path)


@pytest.mark.parametrize(
    ("method", "route", "entry"),
    [
        ("GET", "/v1/reports/:reportId", "/v1/reports/:id"),
        ("GET", "/v1/reports/{report_id}", "/v1/reports/:id"),
        ("get", "/v1/reports/<report_id>", "/v1/reports/:id"),
        ("GET", "/v1/reports/{id:[0-9]+}", "/v1/reports/:id"),
        ("DELETE", "/v1/orders/{order_id}", "/v1/orders/<int:order_id>"),
        ("DELETE", "/v1/orders/:orderId", "/v1/orders/<int:order_id>"),
        ("PUT", "/v1/legacy/{p:path}", "/v1/legacy/**"),
        ("GET", "/v1/legacy/*rest", "/v1/legacy/**"),
        ("POST", "/v1/things/:name:cancel", "/v1/things/{name}:cancel"),  # a ':' mid-segment is text
        ("POST", "/v1/things/{thing}:cancel", "/v1/things/{name}:cancel"),
        ("POST", "/v1/things/{thing}", None),
        ("GET", "/v1/reports", None),
        ("GET", "/v1/reports/:id/items", None),
        ("POST", "/v1/reports/:id", None),  # another method
        ("GET", "/v1/reports/{id", None),  # unreadable: matches nothing
        ("GET", "/v1/reports/\x00", None),
        ("GET", "/v1/reports/" + "{" * 5000, None),
    ],
)
def test_routes_match_by_slots(catalog, method: str, route: str, entry: str | None) -> None:
    found = catalog.endpoint("orders-api", method, route)
    assert (found.route if found else None) == entry


def test_other_service_and_unknown_service(catalog) -> None:
    assert catalog.endpoint("billing-api", "GET", "/v1/reports/:id") is None


def _catalog_with(route: str) -> dict:
    return {"services": {"orders-api": {"endpoints": [{"method": "GET", "route": route}]}}}


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("/v1/{id", "unbalanced '{' at position 4 (in '/v1/{id')"),
        ("/v1/id}", "unbalanced '}' at position 6 (in '/v1/id}')"),
        ("/v1/<int:id", "unbalanced '<' at position 4 (in '/v1/<int:id')"),
        ("/v1/:id(\\d+", "unbalanced '(' at position 7 (in '/v1/:id(\\\\d+')"),
        ("/v1/\x07x", "control character U+0007 at position 4 (in '/v1/\\x07x')"),
        (
            "/" + "{" * 3000,
            "longer than 2048 characters (3001) (in '/" + "{" * 68 + "… (3001 characters))",
        ),
    ],
)
def test_unreadable_route_is_a_load_error_naming_file_key_and_entry(route: str, message: str) -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog(_catalog_with(route), source="catalog.yaml")
    assert str(info.value) == f"catalog.yaml: services.orders-api.endpoints[0].route: {message}"


def test_unreadable_route_in_a_file(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text(
        'services:\n  orders-api:\n    endpoints:\n      - {method: GET, route: "/v1/{id:[0-9]{3}"}\n'
    )
    with pytest.raises(CatalogError) as info:
        load_catalog(path)
    assert str(info.value) == (
        f"{path}: services.orders-api.endpoints[0].route: "
        "unbalanced '{' at position 4 (in '/v1/{id:[0-9]{3}')"
    )


def test_one_route_in_two_syntaxes_is_a_duplicate() -> None:
    data = {
        "services": {
            "orders-api": {
                "endpoints": [
                    {"method": "GET", "route": "/v1/reports/{report_id}"},
                    {"method": "GET", "route": "/v1/reports/:id"},
                ]
            }
        }
    }
    with pytest.raises(CatalogError) as info:
        parse_catalog(data, source="c.yaml")
    assert str(info.value) == (
        "c.yaml: services.orders-api.endpoints[1]: duplicate endpoint GET /v1/reports/:id (also endpoints[0])"
    )


def test_the_instrumentation_reexports_the_one_model() -> None:
    import apiusage.instrumentation as instrumentation
    import apiusage.instrumentation.catalog as old_path

    for name in ("Catalog", "CatalogError", "Endpoint", "ServiceCatalog", "load_catalog"):
        assert getattr(instrumentation, name) is getattr(conventions_catalog, name)
    for name in old_path.__all__:
        assert getattr(old_path, name) is getattr(conventions_catalog, name)


def test_conventions_import_only_the_standard_library_and_yaml() -> None:
    code = textwrap.dedent(
        """
        import sys
        before = set(sys.modules)
        import apiusage.conventions.attributes, apiusage.conventions.catalog
        import apiusage.conventions.routes, apiusage.conventions.useragent
        new = {m.split('.')[0] for m in set(sys.modules) - before}
        stdlib = set(sys.stdlib_module_names)
        yaml = {'apiusage', 'yaml', '_yaml', 'cython_runtime'}  # PyYAML's libyaml binding is Cython
        print(sorted(m for m in new if m not in stdlib | yaml and not m.startswith('_cython')))
        ours = [m for m in sys.modules if m.startswith('apiusage.')]
        print(sorted(m for m in ours if not m.startswith('apiusage.conventions')))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "[]"]


OPENAPI_CATALOG = """\
services:
  shop:
    endpoints:
      - method: GET
        route: /posts
        deprecated: true
      - method: DELETE
        route: /posts/{post_id}/comments/{id}
        deprecated: true
      - method: GET
        route: /users/{user_id}/
        deprecated: true
      - method: GET
        route: /files/{name}.{ext}
        deprecated: true
"""


@pytest.mark.parametrize(
    ("method", "route", "entry"),
    [
        ("GET", "/posts(.:format)", "/posts"),  # Rails
        ("DELETE", "/posts/:post_id/comments/:id(.:format)", "/posts/{post_id}/comments/{id}"),
        ("GET", "users/<int:user_id>/", "/users/{user_id}/"),  # Django path()
        ("GET", "^users/(?P<user_id>[0-9]+)/$", "/users/{user_id}/"),  # Django re_path()
        ("GET", "/files/:name{.:ext}", "/files/{name}.{ext}"),  # Express 5
        ("GET", "GET /users/{user_id}/{$}", "/users/{user_id}/"),  # Go 1.22 Request.Pattern
        ("GET", "/posts/:id(.:format)", None),
    ],
)
def test_spans_of_other_frameworks_find_an_openapi_catalog_entry(
    method: str, route: str, entry: str | None
) -> None:
    found = parse_catalog(__import__("yaml").safe_load(OPENAPI_CATALOG)).endpoint("shop", method, route)
    assert (found.route if found else None) == entry
