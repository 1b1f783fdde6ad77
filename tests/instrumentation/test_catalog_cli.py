"""`apiusage catalog from-openapi` / `check`: file, URL or app input; errors exit 2, no traceback."""

from __future__ import annotations

import argparse
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from apiusage.conventions.catalog import CatalogError
from apiusage.instrumentation import _catalog_cli
from apiusage.instrumentation._openapi import catalog_from_openapi
from apiusage.instrumentation.catalog import load_catalog
from fastapi import FastAPI
from instr_support import APPS, bin_path, need
from orders_app import build_app
from pydantic import BaseModel

EXPECTED = """\
# apiusage endpoint catalog, generated from {source}
services:
  orders-api:
    endpoints:
    - method: GET
      route: /v1/legacy/report
      deprecated: true
    - method: POST
      route: /v2/orders
      feature: checkout
    - method: GET
      route: /v1/orders/{{order_id}}/items
      deprecated: 2026-03-01
      sunset: 2026-12-31
      replacement: GET /v2/orders/{{order_id}}/lines
      link: https://docs.example.com/items-to-lines
    - method: GET
      route: /v1/own-headers
      deprecated: true
"""


def run(argv, capsys):
    parser = argparse.ArgumentParser(prog="apiusage")
    _catalog_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def openapi_file(tmp_path):
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(build_app().openapi()))
    return path


def test_from_file_to_stdout(openapi_file, capsys):
    code, out, err = run(
        ["catalog", "from-openapi", "--file", str(openapi_file), "--service", "orders-api"], capsys
    )
    assert (code, err) == (0, "")
    assert out == EXPECTED.format(source=openapi_file)


def test_from_yaml_file_to_output_file(tmp_path, capsys):
    source = tmp_path / "openapi.yaml"
    source.write_text(yaml.safe_dump(build_app().openapi()))
    target = tmp_path / "catalog.yaml"
    code, out, err = run(
        ["catalog", "from-openapi", "--file", str(source), "--service", "orders-api", "-o", str(target)],
        capsys,
    )
    assert (code, out) == (0, "")
    assert err == f"wrote 4 endpoint(s) of orders-api (0 declared parameter(s)) to {target}\n"
    catalog = load_catalog(target)
    assert catalog.endpoint("orders-api", "GET", "/v1/legacy/report").deprecated is True


def test_from_app(capsys, monkeypatch):
    monkeypatch.chdir(APPS)
    code, out, _ = run(
        ["catalog", "from-openapi", "--app", "orders_app:app", "--service", "orders-api"], capsys
    )
    assert code == 0
    assert out == EXPECTED.format(source="orders_app:app")


def test_from_url(capsys):
    document = json.dumps(build_app().openapi()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/openapi.json":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, _ = run(
            ["catalog", "from-openapi", "--url", base + "/openapi.json", "--service", "orders-api"], capsys
        )
        assert code == 0 and out == EXPECTED.format(source=base + "/openapi.json")
        code, out, err = run(
            ["catalog", "from-openapi", "--url", base + "/missing", "--service", "orders-api"], capsys
        )
        assert (code, out) == (2, "")
        assert err == (
            f"apiusage catalog from-openapi: error: cannot fetch {base}/missing: HTTP 404 Not Found\n"
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (
            ["--file", "/nonexistent/openapi.json"],
            "cannot read /nonexistent/openapi.json: No such file or directory",
        ),
        (
            ["--app", "no_such_module:app"],
            "cannot import no_such_module:app: ModuleNotFoundError: No module named 'no_such_module'",
        ),
        (["--app", "orders_app"], "--app expects MODULE:ATTR, like app.main:app (got 'orders_app')"),
        (
            ["--app", "orders_app:ACCOUNTS"],
            "orders_app:ACCOUNTS is not a FastAPI app (it has no openapi() method)",
        ),
        (
            ["--url", "ftp://example.invalid/x"],
            "--url must be an http(s) URL (got 'ftp://example.invalid/x')",
        ),
    ],
)
def test_errors_exit_2_with_one_line(capsys, monkeypatch, argv_tail, message):
    monkeypatch.chdir(APPS)
    code, out, err = run(["catalog", "from-openapi", *argv_tail, "--service", "s"], capsys)
    assert (code, out) == (2, "")
    assert err == f"apiusage catalog from-openapi: error: {message}\n"


def test_bad_extension_value_names_the_operation(tmp_path, capsys):
    doc = {"openapi": "3.1.0", "paths": {"/a": {"get": {"deprecated": True, "x-sunset": "later"}}}}
    path = tmp_path / "o.json"
    path.write_text(json.dumps(doc))
    code, _, err = run(["catalog", "from-openapi", "--file", str(path), "--service", "s"], capsys)
    assert code == 2
    prefix = "apiusage catalog from-openapi: error: "
    assert err == f"{prefix}{path}: paths./a.get: sunset: not a date (got 'later')\n"
    path.write_text('{"openapi": "3.1.0"}')
    code, _, err = run(["catalog", "from-openapi", "--file", str(path), "--service", "s"], capsys)
    assert err == f"{prefix}{path}: not an OpenAPI document (no 'paths' mapping)\n"


def test_check(tmp_path, capsys):
    good = tmp_path / "c.yaml"
    good.write_text(
        "services:\n  a:\n    endpoints:\n      - {method: GET, route: /x, deprecated: true}\n"
        "      - {method: GET, route: /y}\n"
    )
    assert run(["catalog", "check", str(good)], capsys) == (0, "a: 2 endpoint(s), 1 deprecated\n", "")
    bad = tmp_path / "b.yaml"
    bad.write_text("services: {a: {endpoints: [{method: GET}]}}")
    code, _, err = run(["catalog", "check", str(bad)], capsys)
    message = f"apiusage catalog check: error: {bad}: services.a.endpoints[0].route: required\n"
    assert (code, err) == (2, message)


def test_real_console_script(openapi_file):
    """The installed `apiusage` command carries the catalog commands."""
    exe = bin_path("apiusage")
    need(exe is not None, "the apiusage console script is not installed")
    ok = subprocess.run(
        [exe, "catalog", "from-openapi", "--file", str(openapi_file), "--service", "orders-api"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout) == (0, EXPECTED.format(source=openapi_file)), ok.stderr
    bad = subprocess.run(
        [exe, "catalog", "from-openapi", "--file", "/nope.json", "--service", "s"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().endswith("error: cannot read /nope.json: No such file or directory")
    usage = subprocess.run(
        [exe, "catalog", "from-openapi", "--service", "s"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 2 and "one of the arguments --file --url --app is required" in usage.stderr


PARAMETERS_DOC = {
    "openapi": "3.1.0",
    "paths": {
        "/v1/orders/{id}": {
            # Path-item parameters apply to every operation; the operation's own win by (name, in).
            "parameters": [
                {"name": "tenant", "in": "query"},
                {"name": "id", "in": "path", "required": True},
            ],
            "get": {
                "parameters": [
                    {"$ref": "#/components/parameters/Limit"},
                    {"name": "X-Trace", "in": "header"},
                    {"name": "tenant", "in": "query", "description": "overrides the path item's"},
                    {"$ref": "https://example.com/shared.json#/Cursor"},  # another file: not read
                ]
            },
            "put": {"requestBody": {"$ref": "#/components/requestBodies/Order"}},
            "delete": {"deprecated": True},
            "head": {"responses": {"200": {"description": "nothing declared: not in the catalog"}}},
        },
        "/v1/uploads": {
            "post": {
                "requestBody": {"content": {"multipart/form-data": {"schema": {"properties": {"f": {}}}}}}
            }
        },
        "/v1/trees": {
            "post": {
                "requestBody": {
                    "content": {
                        "application/merge-patch+json": {"schema": {"$ref": "#/components/schemas/Node"}}
                    }
                }
            }
        },
    },
    "components": {
        "parameters": {"Limit": {"name": "limit", "in": "query", "schema": {"type": "integer"}}},
        "requestBodies": {
            "Order": {
                "content": {
                    "application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/Order"}}
                }
            }
        },
        "schemas": {
            "Order": {
                "properties": {
                    "items": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
                    "customer": {"$ref": "#/components/schemas/Customer"},
                },
                "allOf": [{"properties": {"note": {"type": "string"}}}],
            },
            "Line": {"properties": {"sku": {}}},
            "Customer": {
                "properties": {"name": {}, "address": {"$ref": "#/components/schemas/Address"}},
                "anyOf": [{"$ref": "#/components/schemas/Customer"}],  # includes itself: read once
            },
            "Address": {"properties": {"city": {}, "zip": {}}},
            # Recursive, as trees are: the depth ends it.
            "Node": {"properties": {"value": {}, "child": {"$ref": "#/components/schemas/Node"}}},
        },
    },
}


def _from_openapi(tmp_path, capsys, doc, *extra):
    path = tmp_path / "o.json"
    path.write_text(json.dumps(doc))
    return run(["catalog", "from-openapi", "--file", str(path), "--service", "s", *extra], capsys)


def test_declared_parameters_and_body_fields_follow_refs_to_the_depth(tmp_path, capsys):
    code, out, err = _from_openapi(tmp_path, capsys, PARAMETERS_DOC)
    assert (code, err) == (0, "")
    assert yaml.safe_load(out)["services"]["s"]["endpoints"] == [
        {"method": "GET", "route": "/v1/orders/{id}", "parameters": {"query": ["tenant", "limit"]}},
        {
            "method": "PUT",
            "route": "/v1/orders/{id}",
            "parameters": {"query": ["tenant"], "body": ["items", "customer", "note"]},
        },
        {
            "method": "DELETE",
            "route": "/v1/orders/{id}",
            "deprecated": True,
            "parameters": {"query": ["tenant"]},
        },
        {"method": "HEAD", "route": "/v1/orders/{id}", "parameters": {"query": ["tenant"]}},
        {"method": "POST", "route": "/v1/trees", "parameters": {"body": ["value", "child"]}},
    ]
    code, out, err = _from_openapi(tmp_path, capsys, PARAMETERS_DOC, "--body-depth", "3")
    endpoints = yaml.safe_load(out)["services"]["s"]["endpoints"]
    assert endpoints[1]["parameters"]["body"] == [
        "items",
        "customer",
        "customer.name",
        "customer.address",
        "customer.address.city",
        "customer.address.zip",
        "note",
    ]
    assert endpoints[4]["parameters"]["body"] == [
        "value",
        "child",
        "child.value",
        "child.child",
        "child.child.value",
        "child.child.child",
    ]
    code, out, err = _from_openapi(tmp_path, capsys, PARAMETERS_DOC, "--no-parameters")
    assert yaml.safe_load(out)["services"]["s"]["endpoints"] == [
        {"method": "DELETE", "route": "/v1/orders/{id}", "deprecated": True}
    ]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"schemas": {"A": {"$ref": "#/components/schemas/B"}, "B": {"$ref": "#/components/schemas/A"}}},
            "paths./x.post: $ref loop: #/components/schemas/A -> #/components/schemas/B -> "
            "#/components/schemas/A",
        ),
        ({"schemas": {}}, "paths./x.post: $ref '#/components/schemas/A' points to nothing in the document"),
        (
            {"schemas": {"A": {"properties": {f"f{i}": {} for i in range(1001)}}}},
            "paths./x.post: request body declares more than 1000 field names; lower --body-depth",
        ),
        (
            {"schemas": {"A": {"properties": {"bad\tname": {}}}}},
            "paths./x.post: parameters.body[0]: has a control character ('bad\\tname')",
        ),
    ],
)
def test_bad_declared_parameters_name_the_operation(tmp_path, capsys, change, message):
    doc = {
        "openapi": "3.0.3",
        "paths": {
            "/x": {
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/A"}}}
                    }
                }
            }
        },
        "components": change,
    }
    code, out, err = _from_openapi(tmp_path, capsys, doc)
    assert (code, out) == (2, "")
    assert err == f"apiusage catalog from-openapi: error: {tmp_path / 'o.json'}: {message}\n"


def test_body_depth_is_bounded(tmp_path, capsys):
    code, _, err = _from_openapi(tmp_path, capsys, PARAMETERS_DOC, "--body-depth", "9")
    assert (code, err) == (2, "apiusage catalog from-openapi: error: body depth must be 1 to 8 (got 9)\n")


class _Address(BaseModel):
    city: str
    zip: str | None = None


class _Order(BaseModel):
    sku: str
    quantity: int = 1
    address: _Address | None = None


def _parameters_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/orders")
    def list_orders(limit: int = 10, cursor: str | None = None, expand: bool = False) -> list:
        return []

    @app.post("/v1/orders/{order_id}")
    def update(order_id: str, order: _Order, dry_run: bool = False) -> dict:
        return {}

    return app


def test_a_fastapi_apps_own_document_declares_its_parameters(tmp_path, capsys):
    app = _parameters_app()
    code, out, err = _from_openapi(tmp_path, capsys, app.openapi(), "--body-depth", "2")
    assert (code, err) == (0, "")
    assert yaml.safe_load(out)["services"]["s"]["endpoints"] == [
        {"method": "GET", "route": "/v1/orders", "parameters": {"query": ["limit", "cursor", "expand"]}},
        {
            "method": "POST",
            "route": "/v1/orders/{order_id}",
            "parameters": {
                "query": ["dry_run"],
                "body": ["sku", "quantity", "address", "address.city", "address.zip"],
            },
        },
    ]


def _nested_body(levels: int) -> str:
    """An OpenAPI document, as JSON text, whose one request body nests allOf `levels` deep."""
    schema = '{"allOf": [' * levels + '{"properties": {"deep": {}}}' + "]}" * levels
    return (
        '{"paths": {"/a": {"post": {"requestBody": {"content": {"application/json": {"schema": '
        + schema
        + "}}}}}}}"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # parsed, then refused by the walk (each level is a Python frame there)
        (_nested_body(200), "paths./a.post: request body schema nests schemas more than 64 deep"),
        # past what json.loads can follow: a RecursionError it raises, not a ValueError
        (_nested_body(5000), "JSON nested too deep to read"),
        ("x: " + "[" * 3000 + "]" * 3000 + "\n", "neither JSON nor YAML: nested deeper than 256 levels"),
    ],
    ids=["walk", "json", "yaml"],
)
def test_deeply_nested_documents_are_refused_in_one_line_not_a_traceback(tmp_path, capsys, text, message):
    path = tmp_path / "deep.json"
    path.write_text(text)
    code, out, err = run(["catalog", "from-openapi", "--file", str(path), "--service", "s"], capsys)
    assert (code, out) == (2, "")
    assert err.startswith(f"apiusage catalog from-openapi: error: {path}: {message}")
    assert err.count("\n") == 1


def test_an_in_memory_document_nesting_10000_deep_is_refused_by_name():
    # app.openapi() builds dicts no reader bounded
    schema: dict = {"properties": {"deep": {}}}
    for _ in range(10_000):
        schema = {"allOf": [schema]}
    doc = {"paths": {"/a": {"post": {"requestBody": {"content": {"application/json": {"schema": schema}}}}}}}
    with pytest.raises(
        CatalogError,
        match=r"^<openapi>: paths\./a\.post: request body schema nests schemas more than 64 deep$",
    ):
        catalog_from_openapi(doc, "s")


def test_a_yaml_document_with_a_long_description_still_reads(tmp_path, capsys):
    # The data files' 64 KiB scalar bound would refuse a real API's long markdown description.
    text = yaml.safe_dump(
        {
            "info": {"description": "x" * 200_000},
            "paths": {"/a": {"get": {"parameters": [{"name": "q", "in": "query"}]}}},
        }
    )
    path = tmp_path / "o.yaml"
    path.write_text(text)
    code, out, err = run(["catalog", "from-openapi", "--file", str(path), "--service", "s"], capsys)
    assert (code, err) == (0, "")
    assert yaml.safe_load(out)["services"]["s"]["endpoints"] == [
        {"method": "GET", "route": "/a", "parameters": {"query": ["q"]}}
    ]
