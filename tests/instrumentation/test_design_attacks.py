"""Hostile clients against the schema version 2 attributes: values posing as names never leave."""

from __future__ import annotations

import builtins
import json
import logging
import threading

import pytest
from apiusage.conventions.attributes import (
    ATTR_BODY_FIELDS,
    ATTR_CONSUMER_ID,
    ATTR_FEEDBACK_CATEGORY,
    ATTR_FEEDBACK_ROUTE,
    ATTR_FEEDBACK_SCORE,
    ATTR_QUERY_PARAMETERS,
    ATTR_SCHEMA_VERSION,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
)
from apiusage.instrumentation import FeedbackError, Settings, instrument, record_feedback
from apiusage.instrumentation._design import (
    INVALID,
    TRUNCATED,
    Design,
    body_field_names,
    is_name,
    query_parameter_names,
    validation_errors,
)
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response, StreamingResponse
from instr_support import KEY, pseudonym
from pydantic import BaseModel
from starlette.middleware.gzip import GZipMiddleware

STRIPE = "sk_live_51H8xYzAbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefGHIJKLmnopqrstuvwxYZ"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
SECRET_NAMES = [
    STRIPE,
    JWT,
    "alice@example.com",
    "203.0.113.7",
    "2001:db8::1",
    "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "a3fa85f6-5717-4562-b3fc-2c963f66afa6",
    "ghp_16C7e42F292c6912E7710c838347Ae178B4a",  # a GitHub token, 40 characters
    "d41d8cd98f00b204e9800998ecf8427e",  # an MD5 digest
    "AKIAIOSFODNN7EXAMPLE",  # an AWS access key id
    "a\x00b",
    "a\nb",
    "plus name",
    "été",
    "x" * 41,
    "12345",
    "",
]
REAL_NAMES = [
    "limit",
    "dry_run",
    "filter[status]",
    "sort-by",
    "page.size",
    "$filter",
    "@context",
    "_id",
    "X",
    "address1",
    "sha256",
    "include_deleted_subscription_items",
    "includeDeletedSubscriptionItems",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_value_posing_as_a_name_is_not_a_name(name):
    assert not is_name(name)


@pytest.mark.parametrize("name", REAL_NAMES)
def test_schema_names_are_names(name):
    assert is_name(name)


def test_bare_tokens_in_the_query_string_count_as_one_marker():
    query = f"{STRIPE}&{JWT}&limit=5&alice%40example.com=1&%00=1&a+b=2&ok".encode()
    assert query_parameter_names(query, 32) == (INVALID, "limit", "ok")


def test_body_keyed_by_values_records_the_marker_and_nothing_below_it():
    body = json.dumps(
        {
            "scores": {"alice@example.com": 1, "203.0.113.7": {"x": 1}, "ok": 2},
            STRIPE: {"nested": 1},
            "sku": "A",
        }
    ).encode()
    assert body_field_names(body, 3, 32) == (INVALID, "scores", f"scores.{INVALID}", "scores.ok", "sku")


def test_a_json_key_with_a_dot_is_not_a_name():
    # Host names and dotted ids as keys are values; and "a.b" would read as a nested name.
    body = json.dumps({"example.com": 1, "a": {"b": 1}, "a.b": 2, "node-1.eu": 3}).encode()
    assert body_field_names(body, 2, 32) == (INVALID, "a", "a.b")


def test_100000_keys_keyed_by_emails_give_one_marker():
    body = json.dumps({f"user{i}@example.com": i for i in range(100_000)} | {"sku": 1}).encode()
    assert body_field_names(body, 1, 32) == (INVALID, "sku")


def test_validation_locations_replace_parts_that_are_values():
    errors = [
        {"loc": ("body", "scores", "alice@example.com"), "type": "int_parsing"},
        {"loc": ("body", "items", 3, "qty"), "type": "missing"},
        {"loc": ("query", STRIPE), "type": "extra_forbidden"},
        {"loc": ("body", "x" * 10_000), "type": "missing"},
        {"loc": ("body", "hosts", "example.com"), "type": "missing"},
        {"loc": "alice@example.com", "type": "value_error"},  # not a tuple: checked all the same
        {"loc": "body", "type": "value_error"},
    ]
    assert validation_errors(errors) == [
        ("body.scores.*", "int_parsing"),
        ("body.items.*.qty", "missing"),
        ("query.*", "extra_forbidden"),
        ("body.*", "missing"),
        ("body.hosts.*", "missing"),
        ("*", "value_error"),
        ("body", "value_error"),
    ]


class Scores(BaseModel):
    scores: dict[str, int]


def test_a_dict_body_field_error_on_a_real_app_never_carries_the_key(spans, client_for):
    app = FastAPI()

    @app.post("/v1/scores")
    async def scores(body: Scores) -> dict:
        return {}

    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={}, body_field_depth=3)
    client = client_for(app)
    response = client.post(
        "/v1/scores?sk_live_abc123def456ghi789", json={"scores": {"alice@example.com": "x"}}
    )
    assert response.status_code == 422
    attributes = spans.one_server().attributes
    assert attributes[ATTR_SCHEMA_VERSION] == 2
    assert attributes[ATTR_VALIDATION_LOCATIONS] == ("body.scores.*",)
    assert attributes[ATTR_VALIDATION_TYPES] == ("int_parsing",)
    assert attributes[ATTR_BODY_FIELDS] == ("scores", f"scores.{INVALID}")
    assert attributes[ATTR_QUERY_PARAMETERS] == (INVALID,)
    text = repr(dict(attributes))
    assert "alice" not in text and "sk_live" not in text


def test_the_marker_is_a_name_and_cut_lists_still_end_with_truncated():
    query = "&".join([*(f"p{i}" for i in range(5)), STRIPE]).encode()
    assert query_parameter_names(query, 3) == (INVALID, "p0", "p1", TRUNCATED)


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"1" * 5000 + b', "b": 2}',  # more digits than int() converts
        '{"a": "café", "b": 1}'.encode("latin-1"),  # charset=latin-1: not UTF-8
        b'{"a": "\xff\xfe broken", "b": 1}',
        b'\xef\xbb\xbf{"a": 1, "b": 2}',  # a UTF-8 byte order mark
    ],
    ids=["huge-int", "latin-1", "broken-utf8", "bom"],
)
def test_values_the_strict_parse_refuses_do_not_hide_the_names(body):
    assert body_field_names(body, 1, 32) == ("a", "b")


def test_a_non_utf8_key_is_not_a_name():
    assert body_field_names('{"café": 1, "b": 1}'.encode("latin-1"), 1, 32) == (INVALID, "b")


@pytest.mark.parametrize("body", [b'{"a": 1', b'{"a": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", b"[1]"])
def test_still_no_names_for_bodies_that_are_not_a_json_object(body):
    assert body_field_names(body, 1, 32) == ()


# -- record_feedback's route: the client's text must not become a label value ----------------


class FeedbackIn(BaseModel):
    score: int
    category: str
    route: str | None = None


def feedback_app() -> FastAPI:
    app = FastAPI()
    sub = FastAPI()

    @app.get("/v1/orders/{order_id}")
    async def order(order_id: str) -> dict:
        return {}

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackIn) -> dict:
        record_feedback(body.score, body.category, route=body.route)
        return {"thanks": True}

    @sub.get("/items")
    async def items() -> dict:
        return {}

    app.mount("/sub", sub)
    return app


@pytest.mark.parametrize(
    ("route", "recorded"),
    [
        ("/v1/orders/{order_id}", "/v1/orders/{order_id}"),  # a template of the app: as given
        ("/v1/orders/12345", "/v1/orders/{order_id}"),  # a raw path: its template, not the id
        ("/v1/feedback", "/v1/feedback"),  # another method's route still names it
        ("alice@example.com wants refunds", INVALID),  # text that is no route of the app
        ("/v1/nothing-here", INVALID),
    ],
)
def test_the_feedback_route_is_one_of_the_apps_routes(spans, client_for, logs, route, recorded, caplog):
    app = feedback_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    with caplog.at_level(logging.WARNING, logger="apiusage.instrumentation"):
        response = client_for(app).post("/v1/feedback", json={"score": 2, "category": "docs", "route": route})
    assert response.status_code == 200
    (record,) = [r.log_record for r in logs.get_finished_logs()]
    assert record.attributes[ATTR_FEEDBACK_ROUTE] == recorded


def test_feedback_outside_a_request_keeps_the_route_it_cannot_check(logs):
    record_feedback(3, "docs", route="/v1/anything/{id}")
    (record,) = [r.log_record for r in logs.get_finished_logs()]
    assert record.attributes[ATTR_FEEDBACK_ROUTE] == "/v1/anything/{id}"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"score": 3, "category": "x" * 10_000_000},
            "record_feedback(category='xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...",
        ),
        ({"score": 3, "category": "docs\x00"}, "record_feedback(category='docs\\x00')"),
        ({"score": 3, "category": "a\u202eb"}, "record_feedback(category='a\\u202eb')"),
        ({"score": True, "category": "docs"}, "record_feedback(score=True)"),
        ({"score": 5.0, "category": "docs"}, "record_feedback(score=5.0)"),
        ({"score": "5", "category": "docs"}, "record_feedback(score='5')"),
    ],
)
def test_hostile_feedback_arguments_raise_a_short_message(logs, kwargs, message):
    with pytest.raises(FeedbackError) as raised:
        record_feedback(**kwargs)
    assert message in str(raised.value) and len(str(raised.value)) < 200
    assert logs.get_finished_logs() == ()


def test_10000_feedback_calls_in_one_request_each_emit_once(spans, client_for, logs):
    app = FastAPI()

    @app.post("/v1/many")
    async def many() -> dict:
        for _ in range(10_000):
            record_feedback(4, "docs", route="/v1/many")
        return {}

    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    assert client_for(app).post("/v1/many").status_code == 200
    records = logs.get_finished_logs()
    assert len(records) == 10_000
    assert {r.log_record.attributes[ATTR_FEEDBACK_ROUTE] for r in records} == {"/v1/many"}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("CF-IPCountry", (b"cf-ipcountry",)),  # a plain string, not its letters
        (" CF-IPCountry ,, CloudFront-Viewer-Country", (b"cf-ipcountry", b"cloudfront-viewer-country")),
        (("X-€", "CF-IPCountry", "a b"), (b"cf-ipcountry",)),  # not names: skipped, not a crash
        ((), ()),
    ],
)
def test_region_headers_of_a_settings_made_directly(value, expected):
    assert Design(Settings(region_headers=value)).region_headers == expected


def test_feedback_from_a_mounted_app_names_routes_as_its_spans_do(spans, client_for, logs):
    """Inside a mounted app, routes are the outer app's: the span's http.route is the mount's."""
    app, sub = FastAPI(), FastAPI()

    @sub.get("/items/{item_id}")
    async def item(item_id: str) -> dict:
        return {}

    @sub.post("/feedback")
    async def feedback(route: str) -> dict:
        record_feedback(3, "docs", route=route)
        return {}

    @app.get("/top")
    async def top() -> dict:
        return {}

    app.mount("/sub", sub)
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    client = client_for(app)
    recorded = []
    for route in ("/sub/items/5", "/top", "/items/5"):
        assert client.post("/sub/feedback", params={"route": route}).status_code == 200
        recorded.append(logs.get_finished_logs()[-1].log_record.attributes[ATTR_FEEDBACK_ROUTE])
    assert recorded == ["/sub", "/top", INVALID]
    assert {s.attributes["http.route"] for s in spans.server()} == {"/sub"}


def test_feedback_from_a_background_task_and_from_a_thread(spans, client_for, logs):
    """A BackgroundTask runs inside the request (its consumer); a thread of one's own does not."""
    app = FastAPI()

    def emit() -> None:
        record_feedback(2, "latency", route="/v1/orders/7")

    @app.get("/v1/orders/{order_id}")
    async def order(order_id: str, background: BackgroundTasks) -> dict:
        background.add_task(emit)
        return {}

    @app.get("/v1/thread")
    async def in_a_thread() -> dict:
        worker = threading.Thread(target=emit)
        worker.start()
        worker.join()
        return {}

    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    client = client_for(app)
    assert client.get("/v1/orders/1", headers={"X-API-Key": "k-1"}).status_code == 200
    assert client.get("/v1/thread", headers={"X-API-Key": "k-1"}).status_code == 200
    background, thread = (dict(r.log_record.attributes) for r in logs.get_finished_logs())
    assert background == {
        ATTR_FEEDBACK_SCORE: 2,
        ATTR_FEEDBACK_CATEGORY: "latency",
        ATTR_FEEDBACK_ROUTE: "/v1/orders/{order_id}",
        ATTR_CONSUMER_ID: pseudonym("k-1"),
    }
    # No request in the thread's context: no consumer, and the route as given.
    assert thread == {
        ATTR_FEEDBACK_SCORE: 2,
        ATTR_FEEDBACK_CATEGORY: "latency",
        ATTR_FEEDBACK_ROUTE: "/v1/orders/7",
    }


# -- the careless service: odd responses, exceptions, other middleware ----------------------


def odd_app(gzip_first: bool) -> FastAPI:
    app = FastAPI()
    if gzip_first:
        app.add_middleware(GZipMiddleware, minimum_size=10)

    def failing_dependency() -> None:
        raise LookupError("in a dependency")

    @app.get("/big")
    async def big() -> dict:
        return {"x": "a" * 5000}

    @app.get("/http-500")
    async def http_500() -> dict:
        raise HTTPException(500)

    @app.get("/dependency", dependencies=[Depends(failing_dependency)])
    async def dependency() -> dict:
        return {}

    @app.get("/group")
    async def group() -> dict:
        group_type = getattr(builtins, "ExceptionGroup", None)  # Python 3.11+
        if group_type is None:
            pytest.skip("no ExceptionGroup before Python 3.11")
        raise group_type("several", [ValueError("a"), KeyError("b")])

    @app.get("/stream-fails")
    async def stream_fails() -> StreamingResponse:
        async def chunks():
            yield b"abc"
            raise RuntimeError("mid-stream")

        return StreamingResponse(chunks())

    @app.get("/no-content")
    async def no_content() -> Response:
        return Response(status_code=204)

    @app.get("/not-modified")
    async def not_modified() -> Response:
        return Response(status_code=304)

    @app.post("/twice")
    async def twice(request: Request) -> dict:
        first, second = await request.body(), await request.body()
        return {"same": first == second, "n": len(first)}

    return app


BODY = object()  # the response's own length, as the client received it


@pytest.mark.parametrize(
    ("method", "path", "status", "expected"),
    [
        ("GET", "/http-500", 500, {"error.type": "500", "http.response.body.size": BODY}),
        ("GET", "/dependency", 500, {"error.type": "LookupError"}),
        ("GET", "/group", 500, {"error.type": "ExceptionGroup"}),
        ("GET", "/stream-fails", 200, {"error.type": "RuntimeError", "http.response.body.size": 3}),
        ("GET", "/no-content", 204, {"http.response.body.size": 0}),
        ("GET", "/not-modified", 304, {"http.response.body.size": 0}),
        ("POST", "/twice", 200, {"http.request.body.size": 5, "http.response.body.size": BODY}),
    ],
)
def test_odd_responses_and_exceptions(spans, client_for, method, path, status, expected):
    app = odd_app(gzip_first=False)
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    client = client_for(app)
    try:
        response = client.request(method, path, content=b"12345" if method == "POST" else None)
        assert response.status_code == status
        if path == "/twice":
            assert response.json() == {"same": True, "n": 5}
        expected = {k: len(response.content) if v is BODY else v for k, v in expected.items()}
    except RuntimeError:  # the stream broke after its start: the client sees the broken stream
        assert path == "/stream-fails"
    attributes = spans.one_server().attributes
    keys = ("error.type", "http.request.body.size", "http.response.body.size")
    got = {k: attributes[k] for k in keys if k in attributes and (k in expected or k == "error.type")}
    assert got == expected


@pytest.mark.parametrize("gzip_first", [True, False], ids=["gzip-inside", "gzip-outside"])
def test_which_response_size_gzip_gives(spans, client_for, gzip_first):
    app = odd_app(gzip_first)
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, environ={})
    if not gzip_first:
        app.add_middleware(GZipMiddleware, minimum_size=10)
    response = client_for(app).get("/big", headers={"Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.json() == {"x": "a" * 5000}
    size = spans.one_server().attributes["http.response.body.size"]
    # Added before instrument(): inside the middleware, which counts the compressed bytes sent.
    assert size == (int(response.headers["content-length"]) if gzip_first else len(b'{"x":""}') + 5000)
    if gzip_first:
        assert size < 100
