"""Schema version 2 on real FastAPI requests: names, sizes, validation errors, error.type, region."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest
from apiusage.conventions.attributes import (
    ATTR_BODY_FIELDS,
    ATTR_CLIENT_REGION,
    ATTR_QUERY_PARAMETERS,
    ATTR_SCHEMA_VERSION,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
    ERROR_TYPE,
    HTTP_REQUEST_BODY_SIZE,
    HTTP_RESPONSE_BODY_SIZE,
)
from apiusage.instrumentation import ConfigurationError, Settings, instrument
from apiusage.instrumentation._design import (
    INVALID,
    TRUNCATED,
    body_field_names,
    client_region,
    query_parameter_names,
)
from design_app import EXPORT_SIZE, build_app
from instr_support import KEY

V2 = (
    ATTR_QUERY_PARAMETERS,
    ATTR_BODY_FIELDS,
    HTTP_REQUEST_BODY_SIZE,
    HTTP_RESPONSE_BODY_SIZE,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
    ERROR_TYPE,
    ATTR_CLIENT_REGION,
)


def enriched(spans, client_for, own_validation_handler: bool = False, **settings: Any):
    app = build_app(own_validation_handler)
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={}, **settings)
    return client_for(app)


def v2(spans) -> dict[str, Any]:
    """The schema version 2 attributes of the one server span since the last call."""
    attributes = spans.one_server().attributes
    assert attributes[ATTR_SCHEMA_VERSION] == 2
    return {k: attributes[k] for k in V2 if k in attributes}


ORDER = {
    "sku": "A-1",
    "quantity": 2,
    "customer": {"id": "c1", "address": {"city": "Oslo"}},
    "items": [{"sku": "B", "qty": 1}],
}
ORDER_BYTES = json.dumps(ORDER).encode()
JSON = {"Content-Type": "application/json"}


# -- parameter and field names -------------------------------------------------------------


def test_query_names_are_decoded_each_once_sorted(spans, client_for):
    client = enriched(spans, client_for)
    query = "b=1&a=2&a=3&%C3%A9t%C3%A9=x&plus+name=1&flag&=orphan&&limit=5"
    assert client.get(f"/v1/search?{query}").status_code == 200
    assert v2(spans) == {
        # "plus name" and "été" are not name-shaped (a space, non-ASCII): one marker for both.
        ATTR_QUERY_PARAMETERS: (INVALID, "a", "b", "flag", "limit"),
        HTTP_REQUEST_BODY_SIZE: 0,
        HTTP_RESPONSE_BODY_SIZE: len(b'{"results":[]}'),
    }


def test_no_query_no_names_attribute(spans, client_for):
    client = enriched(spans, client_for)
    client.get("/v1/search")
    assert ATTR_QUERY_PARAMETERS not in v2(spans)


def test_query_names_over_the_cap_end_with_the_marker(spans, client_for):
    client = enriched(spans, client_for, max_parameter_names=3)
    client.get("/v1/search?e=1&d=1&c=1&b=1&a=1")
    assert v2(spans)[ATTR_QUERY_PARAMETERS] == ("a", "b", "c", TRUNCATED)
    client.get("/v1/search?c=1&b=1&a=1")  # exactly at the cap: not cut
    assert v2(spans)[ATTR_QUERY_PARAMETERS] == ("a", "b", "c")


def test_a_name_equal_to_the_marker_is_dropped():
    assert query_parameter_names(f"{TRUNCATED}=1&a=1".encode(), 5) == ("a",)


def call(
    app: Any,
    method: str,
    path: str,
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] = (),  # type: ignore[assignment]
    messages: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One request straight into the ASGI app (no client limits on the URL); the sent messages."""
    pending = list(messages or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "server": ("127.0.0.1", 8000),
        "client": ("203.0.113.7", 1),
        "headers": [(b"host", b"testserver"), *headers],
    }

    async def run() -> None:
        try:
            await app(scope, receive, send)
        except Exception:
            pass  # how the app reacts (e.g. to a disconnect) is its own business

    asyncio.run(run())
    return sent


def test_100000_distinct_query_names_cost_bounded_time_and_attribute_size(spans):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    query = "&".join(f"p{i:06d}=v" for i in range(100_000)).encode()
    call(app, "GET", "/v1/search")  # the first request builds the middleware stack
    spans.exporter.clear()
    started = time.perf_counter()
    sent = call(app, "GET", "/v1/search", query)
    elapsed = time.perf_counter() - started
    assert sent[0]["status"] == 200
    names = v2(spans)[ATTR_QUERY_PARAMETERS]
    assert names == (*(f"p{i:06d}" for i in range(32)), TRUNCATED)
    # Our part alone, against the whole request (the app parses the 100,000 pairs too).
    started = time.perf_counter()
    query_parameter_names(query, 32)
    ours = time.perf_counter() - started
    assert ours < 1.0 and ours < elapsed, (ours, elapsed)


def test_long_names_are_not_names():
    # A 5,000-character "name" is a value: none of its text is recorded.
    assert query_parameter_names(b"x" * 5000 + b"=1&" + b"y_" * 20, 5) == (INVALID, "y_" * 20)


def test_only_the_first_64_kib_of_a_query_string_is_read():
    # 8-byte pairs: 8192 of them fill 64 KiB exactly; the pair the bound cuts is not a name.
    head = b"&".join(b"a=1" for _ in range(100))
    query = head + b"&" + b"&".join(b"p%06d" % i for i in range(20_000)) + b"&zzz=1"
    assert query_parameter_names(query, 1000)[-1] == TRUNCATED
    names = query_parameter_names(query, 100_000)
    assert names[0] == "a" and names[-1] == TRUNCATED and "zzz" not in names
    # Every name it kept is whole.
    assert all(len(n) == 7 for n in names[1:-1])
    assert query_parameter_names(b"b=1&a=2", 5) == ("a", "b")


def test_body_fields_depth_1(spans, client_for):
    client = enriched(spans, client_for)
    assert client.post("/v1/orders", content=ORDER_BYTES, headers=JSON).status_code == 200
    assert v2(spans) == {
        ATTR_BODY_FIELDS: ("customer", "items", "quantity", "sku"),
        HTTP_REQUEST_BODY_SIZE: len(ORDER_BYTES),
        HTTP_RESPONSE_BODY_SIZE: len(b'{"ok":true}'),
    }


def test_body_fields_depth_2_keeps_parents_and_does_not_expand_arrays(spans, client_for):
    client = enriched(spans, client_for, body_field_depth=2)
    client.post("/v1/orders?dry_run=true", json=ORDER)
    attributes = v2(spans)
    assert attributes[ATTR_BODY_FIELDS] == (
        "customer",
        "customer.address",
        "customer.id",
        "items",
        "quantity",
        "sku",
    )
    assert attributes[ATTR_QUERY_PARAMETERS] == ("dry_run",)


def test_body_field_depth_3_and_the_cap():
    body = json.dumps({"a": {"b": {"c": {"d": 1}}, "e": []}, "f": 1}).encode()
    assert body_field_names(body, 3, 10) == ("a", "a.b", "a.b.c", "a.e", "f")
    assert body_field_names(body, 3, 2) == ("a", "a.b", TRUNCATED)
    assert body_field_names(body, 0, 10) == ()


@pytest.mark.parametrize(
    "body",
    [b'{"sku": ', b"[1, 2]", b'"text"', b"\xff\xfe\x00", b"[" * 100_000, b"{}"],
    ids=["truncated", "array", "string", "not-utf8", "deep", "empty-object"],
)
def test_bad_or_non_object_json_gives_no_names_and_no_error(spans, client_for, body):
    client = enriched(spans, client_for)
    response = client.post("/v1/orders", content=body, headers=JSON)
    plain = client_for(build_app()).post("/v1/orders", content=body, headers=JSON)
    # The app's own answer (a 400 or 422), exactly as without the instrumentation.
    assert (response.status_code, response.content) == (plain.status_code, plain.content)
    assert response.status_code in (400, 422)
    attributes = v2(spans)
    assert ATTR_BODY_FIELDS not in attributes
    assert attributes[HTTP_REQUEST_BODY_SIZE] == len(body)


def test_bad_json_validation_error_is_recorded(spans, client_for):
    client = enriched(spans, client_for)
    client.post("/v1/orders", content=b'{"sku": ', headers={"Content-Type": "application/json"})
    attributes = v2(spans)
    assert attributes[ATTR_VALIDATION_LOCATIONS] == (
        "body.*",
    )  # the offset of the JSON error is an index too
    assert attributes[ATTR_VALIDATION_TYPES] == ("json_invalid",)


def test_structured_json_types_count_and_others_do_not(spans, client_for):
    client = enriched(spans, client_for)
    body = b'{"op": "replace", "path": "/a"}'
    client.post(
        "/v1/echo", content=body, headers={"Content-Type": "application/merge-patch+json; charset=utf-8"}
    )
    assert v2(spans)[ATTR_BODY_FIELDS] == ("op", "path")
    client.post("/v1/echo", content=body, headers={"Content-Type": "text/plain"})
    assert ATTR_BODY_FIELDS not in v2(spans)
    client.post("/v1/echo", data={"password": "x", "user": "y"})
    assert ATTR_BODY_FIELDS not in v2(spans)


def test_body_over_the_bound_gives_no_names_but_its_exact_size(spans, client_for):
    client = enriched(spans, client_for, max_body_bytes=64)
    body = json.dumps({"a": "x" * 100, "b": 1}).encode()
    response = client.post("/v1/echo", content=body, headers={"Content-Type": "application/json"})
    assert response.content == body
    assert v2(spans) == {HTTP_REQUEST_BODY_SIZE: len(body), HTTP_RESPONSE_BODY_SIZE: len(body)}


def _chunks(parts: list[bytes]):
    async def gen():
        for part in parts:
            yield part

    return gen()


def test_streamed_chunked_bodies_reach_the_app_unchanged(spans, client_for):
    client = enriched(spans, client_for, max_body_bytes=2048)
    document = {f"field{i}": "v" * 10 for i in range(50)}
    body = json.dumps(document).encode()
    parts = [body[i : i + 7] for i in range(0, len(body), 7)]
    for path in ("/v1/echo", "/v1/echo-stream"):
        response = client.post(path, content=_chunks(parts), headers={"Content-Type": "application/json"})
        assert response.content == body
        attributes = v2(spans)
        assert attributes[ATTR_BODY_FIELDS] == (*sorted(document)[:32], TRUNCATED)
        assert attributes[HTTP_REQUEST_BODY_SIZE] == len(body)
    # Without Content-Length, a body that grows past the bound is dropped, never buffered on.
    big = [b'{"a": "' + b"x" * 1500, b"x" * 1500, b'x", "b": 1}']
    response = client.post("/v1/echo", content=_chunks(big), headers={"Content-Type": "application/json"})
    assert response.content == b"".join(big)
    assert v2(spans) == {HTTP_REQUEST_BODY_SIZE: 3018, HTTP_RESPONSE_BODY_SIZE: 3018}


def test_a_body_the_app_never_reads_counts_its_declared_length(spans, client_for):
    client = enriched(spans, client_for)
    client.post("/v1/ignore-body", json={"password": "x"})
    attributes = v2(spans)
    assert attributes[HTTP_REQUEST_BODY_SIZE] == len(b'{"password":"x"}')
    assert ATTR_BODY_FIELDS not in attributes  # never read, never kept


def test_client_disconnect_mid_body(spans):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    messages = [
        {"type": "http.request", "body": b'{"sku": "A", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    headers = [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]
    call(app, "POST", "/v1/orders", headers=headers, messages=messages)
    attributes = v2(spans)
    assert ATTR_BODY_FIELDS not in attributes
    assert attributes[HTTP_REQUEST_BODY_SIZE] == len(b'{"sku": "A", ')


def test_a_disconnect_mid_body_counts_the_bytes_sent_not_the_length_promised(spans):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    messages = [
        {"type": "http.request", "body": b'{"sku": "A", ', "more_body": True},
        {"type": "http.disconnect"},
    ]
    headers = [(b"content-type", b"application/json"), (b"content-length", b"1000")]
    call(app, "POST", "/v1/orders", headers=headers, messages=messages)
    attributes = v2(spans)
    assert ATTR_BODY_FIELDS not in attributes
    assert attributes[HTTP_REQUEST_BODY_SIZE] == len(b'{"sku": "A", ')


# -- sizes ---------------------------------------------------------------------------------


def test_streaming_response_exact_byte_count(spans, client_for):
    client = enriched(spans, client_for)
    response = client.get("/v1/export")
    assert len(response.content) == EXPORT_SIZE == 45150
    assert v2(spans) == {HTTP_REQUEST_BODY_SIZE: 0, HTTP_RESPONSE_BODY_SIZE: 45150}


def test_response_size_is_the_count_not_the_content_length(spans, client_for):
    client = enriched(spans, client_for)
    client.get("/v1/lying-length")
    assert v2(spans)[HTTP_RESPONSE_BODY_SIZE] == 12


def test_sizes_off(spans, client_for):
    client = enriched(spans, client_for, body_sizes=False)
    client.post("/v1/orders", json=ORDER)
    assert v2(spans) == {ATTR_BODY_FIELDS: ("customer", "items", "quantity", "sku")}


def test_parameters_off(spans, client_for):
    client = enriched(spans, client_for, parameters=False)
    client.post("/v1/orders?dry_run=1", json=ORDER)
    assert set(v2(spans)) == {HTTP_REQUEST_BODY_SIZE, HTTP_RESPONSE_BODY_SIZE}


def test_a_size_set_by_someone_else_is_kept(spans):
    """The app (or a future OpenTelemetry) set the sizes already: they are not replaced."""
    app = build_app()

    @app.middleware("http")
    async def set_sizes(request, call_next):
        from opentelemetry import trace

        trace.get_current_span().set_attributes({HTTP_REQUEST_BODY_SIZE: 1, HTTP_RESPONSE_BODY_SIZE: 2})
        return await call_next(request)

    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    from instr_support import Client

    client = Client(app, ("203.0.113.7", 1))
    try:
        client.post("/v1/orders", json=ORDER)
    finally:
        client.close()
    attributes = v2(spans)
    assert (attributes[HTTP_REQUEST_BODY_SIZE], attributes[HTTP_RESPONSE_BODY_SIZE]) == (1, 2)


# -- validation errors ---------------------------------------------------------------------

BAD_ORDER = {"quantity": "many", "items": [{"sku": "B", "qty": "x"}]}
BAD_LOCATIONS = ("query.limit", "body.sku", "body.quantity", "body.items.*.qty")
BAD_TYPES = ("int_parsing", "missing", "int_parsing", "int_parsing")


@pytest.mark.parametrize("own_handler", [False, True], ids=["default-handler", "own-handler"])
def test_validation_errors_of_body_and_query(spans, client_for, own_handler):
    client = enriched(spans, client_for, own_validation_handler=own_handler)
    response = client.post("/v1/orders?limit=abc", json=BAD_ORDER)
    assert response.status_code == (400 if own_handler else 422)
    if own_handler:
        assert response.json() == {"problems": 4}
    attributes = v2(spans)
    assert attributes[ATTR_VALIDATION_LOCATIONS] == BAD_LOCATIONS
    assert attributes[ATTR_VALIDATION_TYPES] == BAD_TYPES
    assert ERROR_TYPE not in attributes  # a 4xx is not an error of the server


def test_validation_errors_capped_with_the_marker_in_both_lists(spans, client_for):
    client = enriched(spans, client_for, max_validation_errors=2)
    client.post("/v1/orders?limit=abc", json=BAD_ORDER)
    attributes = v2(spans)
    assert attributes[ATTR_VALIDATION_LOCATIONS] == ("query.limit", "body.sku", TRUNCATED)
    assert attributes[ATTR_VALIDATION_TYPES] == ("int_parsing", "missing", TRUNCATED)


def test_validation_errors_off(spans, client_for):
    client = enriched(spans, client_for, validation_errors=False)
    client.post("/v1/orders?limit=abc", json=BAD_ORDER)
    assert ATTR_VALIDATION_LOCATIONS not in v2(spans)


def test_a_valid_request_has_no_validation_attributes(spans, client_for):
    client = enriched(spans, client_for)
    client.post("/v1/orders?limit=3", json=ORDER)
    attributes = v2(spans)
    assert ATTR_VALIDATION_LOCATIONS not in attributes and ATTR_VALIDATION_TYPES not in attributes


# -- error.type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/v1/boom", 500, "RuntimeError"),
        ("/v1/nested-boom", 500, "Outer.InnerError"),
        ("/v1/unavailable", 503, "503"),
        ("/v1/search", 200, None),
        ("/nowhere", 404, None),
    ],
)
def test_error_type(spans, client_for, path, status, expected):
    client = enriched(spans, client_for)
    assert client.get(path).status_code == status
    assert v2(spans).get(ERROR_TYPE) == expected


def test_error_type_set_by_opentelemetry_is_not_overwritten(spans, client_for, semconv):
    # With the stable HTTP conventions OpenTelemetry itself sets error.type from the status
    # of the response; for an exception the 500 is sent after our middleware saw it.
    semconv("http")
    client = enriched(spans, client_for)
    client.get("/v1/unavailable")
    assert v2(spans)[ERROR_TYPE] == "503"
    client.get("/v1/boom")
    assert v2(spans)[ERROR_TYPE] == "500"


# -- client region -------------------------------------------------------------------------

REGION_HEADERS = "CF-IPCountry,CloudFront-Viewer-Country"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"CF-IPCountry": "de"}, "DE"),
        ({"CF-IPCountry": " FR "}, "FR"),
        ({"CloudFront-Viewer-Country": "jp"}, "JP"),
        ({"CF-IPCountry": "NO", "CloudFront-Viewer-Country": "SE"}, "NO"),
        ({"CF-IPCountry": "XX", "CloudFront-Viewer-Country": "SE"}, None),  # first present wins
        ({"CF-IPCountry": "T1"}, None),  # Cloudflare: Tor
        ({"CF-IPCountry": "XX"}, None),  # Cloudflare: unknown
        ({"CF-IPCountry": "ZZ"}, None),
        ({"CF-IPCountry": "DEU"}, None),
        ({"CF-IPCountry": "1A"}, None),
        ({"CF-IPCountry": ""}, None),
        ({"CF-IPCountry": "d\u00e9".encode("latin-1")}, None),
        ({"X-Country": "DE"}, None),  # not a trusted header
        ({}, None),
    ],
)
def test_client_region_from_trusted_headers(spans, client_for, headers, expected):
    client = enriched(spans, client_for, region_headers=REGION_HEADERS)
    client.get("/v1/search", headers=headers)
    assert v2(spans).get(ATTR_CLIENT_REGION) == expected


def test_the_first_of_repeated_region_headers_counts():
    from apiusage.instrumentation._design import header_map

    headers = header_map([(b"cf-ipcountry", b"SE"), (b"cf-ipcountry", b"NO")])
    assert client_region(headers, (b"cf-ipcountry",)) == "SE"


def test_no_region_headers_configured_means_no_region(spans, client_for):
    client = enriched(spans, client_for)
    client.get("/v1/search", headers={"CF-IPCountry": "DE"})
    assert ATTR_CLIENT_REGION not in v2(spans)


def test_region_never_from_the_client_address():
    assert client_region({b"x-forwarded-for": b"203.0.113.7"}, (b"cf-ipcountry",)) is None


# -- settings ------------------------------------------------------------------------------


def test_settings_from_the_environment():
    settings = Settings.from_env(
        {
            "APIUSAGE_PARAMETERS": "false",
            "APIUSAGE_BODY_FIELD_DEPTH": "3",
            "APIUSAGE_MAX_PARAMETER_NAMES": "8",
            "APIUSAGE_MAX_BODY_BYTES": "4096",
            "APIUSAGE_BODY_SIZES": "no",
            "APIUSAGE_VALIDATION_ERRORS": "off",
            "APIUSAGE_MAX_VALIDATION_ERRORS": "4",
            "APIUSAGE_REGION_HEADERS": " CF-IPCountry , ,CloudFront-Viewer-Country",
        }
    )
    assert (
        settings.parameters,
        settings.body_field_depth,
        settings.max_parameter_names,
        settings.max_body_bytes,
        settings.body_sizes,
        settings.validation_errors,
        settings.max_validation_errors,
        settings.region_headers,
    ) == (False, 3, 8, 4096, False, False, 4, ("CF-IPCountry", "CloudFront-Viewer-Country"))
    defaults = Settings.from_env({})
    assert (defaults.parameters, defaults.body_field_depth, defaults.max_parameter_names) == (True, 1, 32)
    assert (defaults.max_body_bytes, defaults.max_validation_errors, defaults.region_headers) == (
        1048576,
        10,
        (),
    )


def test_bad_values_in_the_environment_are_logged_and_replaced(caplog):
    with caplog.at_level(logging.WARNING, logger="apiusage.instrumentation"):
        settings = Settings.from_env(
            {
                "APIUSAGE_BODY_FIELD_DEPTH": "-1",
                "APIUSAGE_MAX_PARAMETER_NAMES": "lots",
                "APIUSAGE_REGION_HEADERS": "CF-IPCountry,bad header",
            }
        )
    assert (settings.body_field_depth, settings.max_parameter_names) == (1, 32)
    assert settings.region_headers == ("CF-IPCountry",)
    text = caplog.text
    assert "APIUSAGE_BODY_FIELD_DEPTH='-1' (expected an integer from 0 to 16); using 1" in text
    assert "APIUSAGE_MAX_PARAMETER_NAMES='lots'" in text
    assert "'bad header' in APIUSAGE_REGION_HEADERS" in text


@pytest.mark.parametrize(
    ("argument", "value", "message"),
    [
        ("max_parameter_names", -1, "instrument(max_parameter_names=-1): expected an integer from 0 to 1000"),
        ("body_field_depth", "2", "instrument(body_field_depth='2'): expected an integer from 0 to 16"),
        ("max_validation_errors", True, "instrument(max_validation_errors=True)"),
        ("max_body_bytes", 10**9, "instrument(max_body_bytes=1000000000)"),
        (
            "region_headers",
            ["ok", "not ok"],
            "instrument(region_headers=['ok', 'not ok']): expected HTTP header names",
        ),
    ],
)
def test_bad_keyword_arguments_refuse_naming_the_argument(spans, argument, value, message):
    with pytest.raises(ConfigurationError) as info:
        instrument(
            build_app(), tracer_provider=spans.provider, pseudonym_key=KEY, environ={}, **{argument: value}
        )
    assert message in str(info.value)


def test_unsampled_requests_still_work_and_record_nothing(client_for):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_app()
    instrument(app, tracer_provider=provider, pseudonym_key=KEY, environ={}, region_headers="CF-IPCountry")
    client = client_for(app)
    assert (
        client.post("/v1/orders?limit=x", json=BAD_ORDER, headers={"CF-IPCountry": "DE"}).status_code == 422
    )
    assert len(client.get("/v1/export").content) == EXPORT_SIZE
    assert client.post("/v1/echo", content=ORDER_BYTES, headers=JSON).content == ORDER_BYTES
    assert exporter.get_finished_spans() == ()
