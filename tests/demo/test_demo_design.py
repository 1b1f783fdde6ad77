"""What the demo does for the API design insights (issue 15): the service's optional parameters
and fields, the field one SDK gets wrong, streamed exports, the 5xx with an exception,
feedback, and the traffic's habits, regions and feedback (exact for a seed)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from urllib.parse import parse_qsl

import httpx
import pytest
from apiusage.demo import REGION_HEADER, traffic
from apiusage.demo import app as demo_app
from apiusage.demo.app import (
    EXPORT_BASE_BYTES,
    EXPORT_CHUNK,
    EXPORT_GROWTH,
    EXPORT_MAX_BYTES,
    LedgerUnavailable,
    build_app,
    export_chunks,
    export_size,
    load_plans,
)

PLANS = load_plans()
PRO = next(k for k, t in PLANS.items() if t == "pro")
OPINIONS = {"demo-pro-01": (3.251, "sdk"), "demo-free-02": (3.264, "sdk")}


class Client:
    """Calls into the app in-process (httpx.ASGITransport), synchronously."""

    def __init__(self, app, raise_app_exceptions: bool = True) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://demo")

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        kwargs.setdefault("headers", {"X-API-Key": PRO})
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@pytest.fixture
def client() -> Iterator[Client]:
    c = Client(build_app(seed=1))
    try:
        yield c
    finally:
        c.close()


# ---------------------------------------------------------------- the service


def test_openapi_declares_the_optional_parameters_and_fields():
    spec = build_app(seed=1).openapi()
    listed = spec["paths"]["/v2/orders"]["get"]["parameters"]
    assert [(p["name"], p["in"], p.get("required", False)) for p in listed] == [
        ("limit", "query", False),
        ("cursor", "query", False),
        ("expand", "query", False),
        ("include_archived", "query", False),
    ]
    schemas = spec["components"]["schemas"]
    assert list(schemas["NewOrder"]["properties"]) == ["lines", "note", "coupon", "shipping"]
    assert schemas["NewOrder"]["required"] == ["lines"]
    assert list(schemas["NewExport"]["properties"]) == ["kind", "since", "format", "compress"]
    assert schemas["NewExport"]["required"] == ["kind", "since"]
    assert list(schemas["NewFeedback"]["properties"]) == ["score", "category", "route", "comment"]
    assert "/v2/exports/{export_id}/download" in spec["paths"] and "/v1/feedback" in spec["paths"]


def test_quantity_as_text_fails_as_int_parsing_and_a_missing_since_as_missing(client):
    def errors(response: httpx.Response) -> list[tuple[str, str]]:
        assert response.status_code == 422, response.text
        return [(".".join(map(str, e["loc"])), e["type"]) for e in response.json()["detail"]]

    lines = [{"sku": "SKU-1", "quantity": "2"}, {"sku": "SKU-2", "quantity": "3 pcs"}]
    assert errors(client.request("POST", "/v2/orders", json={"lines": lines})) == [
        ("body.lines.1.quantity", "int_parsing")
    ]
    ok = client.request("POST", "/v2/orders", json={"lines": lines[:1], "shipping": {"method": "express"}})
    assert ok.status_code == 201  # "2" is an integer to FastAPI
    assert errors(client.request("POST", "/v2/exports", json={"kind": "orders"})) == [
        ("body.since", "missing")
    ]
    assert errors(client.request("GET", "/v2/orders", params={"limit": "all"})) == [
        ("query.limit", "int_parsing")
    ]


def test_list_orders_takes_the_optional_parameters(client):
    got = client.request("GET", "/v2/orders", params={"limit": 3, "cursor": "c9", "expand": "lines"})
    assert got.status_code == 200
    body = got.json()
    assert len(body["orders"]) == 3 and all(o["lines"] for o in body["orders"]) and body["next"]
    plain = client.request("GET", "/v2/orders", params={"include_archived": "true"}).json()
    assert len(plain["orders"]) == 20 and all("lines" not in o for o in plain["orders"])


def test_export_sizes_grow_with_uptime_to_a_bound():
    assert export_size(0) == EXPORT_BASE_BYTES == 3 << 20
    assert export_size(1800) == EXPORT_BASE_BYTES + EXPORT_GROWTH // 2
    assert export_size(-5) == EXPORT_BASE_BYTES
    assert export_size(10**9) == EXPORT_MAX_BYTES


@pytest.mark.parametrize("size", [0, 10, 42, 43, EXPORT_CHUNK, EXPORT_CHUNK + 1, 3 << 20])
def test_export_chunks_are_exactly_the_size_in_bounded_chunks(size):
    async def collect() -> list[bytes]:
        return [chunk async for chunk in export_chunks(size)]

    chunks = asyncio.run(collect())
    assert sum(map(len, chunks)) == size
    assert all(0 < len(c) <= EXPORT_CHUNK for c in chunks)
    header = len(b"order_id,status,total,currency,created_at\n")
    assert len(chunks) == (1 if size else 0) + math.ceil(max(size - header, 0) / EXPORT_CHUNK)
    if size >= 200:
        text = b"".join(chunks).decode()
        assert text.startswith("order_id,status,total,currency,created_at\n000000,open,")


def test_the_download_streams_several_megabytes_without_a_length(client):
    started = time.monotonic()
    got = client.request("GET", "/v2/exports/7/download")
    assert got.status_code == 200 and got.headers["content-type"].startswith("text/csv")
    assert "content-length" not in got.headers  # streamed: chunked
    assert export_size(0) <= len(got.content) <= export_size(time.monotonic() - started + 1)
    assert got.content.count(b"\n") > 40_000


def test_the_legacy_ledger_raises_an_exception_that_is_a_500():
    app = build_app(seed=1)
    raising = Client(app)
    try:
        with pytest.raises(LedgerUnavailable, match="legacy ledger timed out for INV-9912"):
            raising.request("GET", "/v2/invoices/INV-9912")
        assert raising.request("GET", "/v2/invoices/INV-1234").status_code == 200
    finally:
        raising.close()
    answering = Client(app, raise_app_exceptions=False)
    try:
        got = answering.request("GET", "/v2/invoices/INV-9912")
        assert (got.status_code, got.text) == (500, "Internal Server Error")
    finally:
        answering.close()


@pytest.mark.parametrize(
    "body, where",
    [
        ({"score": 0, "category": "docs"}, ("body.score", "greater_than_equal")),
        ({"score": 6, "category": "docs"}, ("body.score", "less_than_equal")),
        ({"score": 3, "category": "spam"}, ("body.category", "literal_error")),
        ({"score": 3, "category": "docs", "route": "no-slash"}, ("body.route", "string_pattern_mismatch")),
        ({"category": "docs"}, ("body.score", "missing")),
    ],
)
def test_feedback_refuses_what_cannot_be_recorded(client, body, where):
    got = client.request("POST", "/v1/feedback", json=body)
    assert got.status_code == 422
    assert [(".".join(map(str, e["loc"])), e["type"]) for e in got.json()["detail"]] == [where]


def test_feedback_needs_a_key(client):
    got = client.request("POST", "/v1/feedback", json={"score": 4, "category": "docs"}, headers={})
    assert got.status_code == 401


def test_without_record_feedback_the_endpoint_says_so(monkeypatch):
    monkeypatch.setattr(demo_app, "_feedback_recorder", lambda: None)
    c = Client(build_app(seed=1))
    try:
        got = c.request("POST", "/v1/feedback", json={"score": 4, "category": "docs"})
    finally:
        c.close()
    assert got.status_code == 501
    assert got.json() == {
        "detail": "feedback is not recorded: apiusage.instrumentation.record_feedback is not available"
    }


def test_feedback_calls_record_feedback_with_what_the_body_says(monkeypatch):
    """The endpoint's side of the contract: record_feedback(score, category, route), nothing else
    (the comment is free text and is never handed on). The instrumentation's own tests check what
    record_feedback emits."""
    calls: list[tuple] = []

    def record(*args, **kwargs) -> None:
        calls.append((args, kwargs))

    monkeypatch.setattr(demo_app, "_feedback_recorder", lambda: record)
    c = Client(build_app(seed=1))
    try:
        body = {"score": 2, "category": "errors", "route": "/v2/orders", "comment": "secret-ish text"}
        assert c.request("POST", "/v1/feedback", json=body).status_code == 202
        assert c.request("POST", "/v1/feedback", json={"score": 5, "category": "docs"}).status_code == 202
    finally:
        c.close()
    assert calls == [((2, "errors", "/v2/orders"), {}), ((5, "docs", None), {})]


def test_a_refusal_of_record_feedback_is_a_422_naming_it(monkeypatch):
    def record(score: int, category: str, route: str | None = None) -> None:
        raise ValueError("category: too long")

    monkeypatch.setattr(demo_app, "_feedback_recorder", lambda: record)
    c = Client(build_app(seed=1))
    try:
        got = c.request("POST", "/v1/feedback", json={"score": 5, "category": "docs"})
    finally:
        c.close()
    assert (got.status_code, got.json()) == (422, {"detail": "category: too long"})


# ---------------------------------------------------------------- the traffic


def test_regions_are_a_fixed_mapping_of_the_api_keys():
    assert {k: traffic.region_of(k) for k in ("demo-enterprise-01", "demo-pro-01", "demo-free-01")} == {
        "demo-enterprise-01": "DE",
        "demo-pro-01": "US",
        "demo-free-01": "US",
    }
    regions = Counter(traffic.region_of(k) for k in PLANS)
    assert regions == {"US": 11, "JP": 6, "GB": 5, "IN": 5, "DE": 4, "FR": 3, "AU": 3, "BR": 2, "CA": 1}
    consumers = traffic.population(PLANS, 600, random.Random(3))
    assert all(c.region == traffic.region_of(c.key) for c in consumers)
    assert all(c.headers()[REGION_HEADER] == c.region for c in consumers)


def test_opinions_are_fixed_per_key_and_javascript_users_complain_about_errors():
    opinions = {k: traffic.opinion_of(k, "shop-sdk-python") for k in ("demo-pro-01", "demo-free-02")}
    assert {k: (round(mood, 3), topic) for k, (mood, topic) in opinions.items()} == OPINIONS
    for key, (mood, _) in opinions.items():
        assert traffic.opinion_of(key, None) == opinions[key]  # the same person whatever the SDK
        assert traffic.opinion_of(key, "shop-sdk-js") == (min(mood, 2.5), "errors")
    assert all(2.5 <= traffic.opinion_of(k, None)[0] <= 4.8 for k in PLANS)


def _consumer(client: str | None, api: str = "v2", tier: str = "pro") -> traffic.Consumer:
    version = traffic.SDKS[client][api][0] if client else "8.5.0"
    return traffic.Consumer("demo-pro-01", tier, client, version, api, 0.0, 0, None, 1.0)


def _requests(c: traffic.Consumer, n: int, seed: int = 11) -> list[traffic.Request]:
    rng = random.Random(seed)
    return [traffic.choose(c, rng) for _ in range(n)]


def _query_names(requests: list[traffic.Request], path: str) -> Counter:
    return Counter(
        name for r in requests if r.method == "GET" and r.path == path for name in sorted(r.params or {})
    )


def test_each_sdk_sends_its_own_optional_parameters_and_nobody_include_archived():
    sent = {sdk: _query_names(_requests(_consumer(sdk), 3000), "/v2/orders") for sdk in [*traffic.SDKS, None]}
    assert {sdk: set(names) for sdk, names in sent.items()} == {
        "shop-sdk-python": {"limit", "cursor"},
        "shop-sdk-js": {"limit", "expand"},
        "shop-cli": {"limit"},
        None: {"limit"},
    }
    lists = {
        sdk: sum(1 for r in _requests(_consumer(sdk), 3000) if r.path == "/v2/orders" and r.method == "GET")
        for sdk in [*traffic.SDKS, None]
    }
    assert sent["shop-cli"]["limit"] == lists["shop-cli"]  # every CLI list call has a limit
    assert 0.3 < sent[None]["limit"] / lists[None] < 0.7  # curl: half of them bare
    assert 0.45 < sent["shop-sdk-python"]["cursor"] / lists["shop-sdk-python"] < 0.75


def test_order_and_export_bodies_follow_the_sdk_and_one_sdk_sends_quantities_as_text():
    def bodies(sdk: str | None, path: str, api: str = "v2") -> list[dict]:
        return [r.json for r in _requests(_consumer(sdk, api), 3000) if r.method == "POST" and r.path == path]

    js = bodies("shop-sdk-js", "/v2/orders")
    quantities = [line["quantity"] for b in js for line in b["lines"]]
    assert quantities and all(isinstance(q, str) for q in quantities)
    assert 0.3 < sum(q.endswith(" pcs") for q in quantities) / len(quantities) < 0.5
    assert {k for b in js for k in b} == {"lines", "coupon"}
    python = bodies("shop-sdk-python", "/v2/orders")
    assert all(isinstance(line["quantity"], int) for b in python for line in b["lines"])
    assert {k for b in python for k in b} == {"lines", "note", "shipping"}
    old_js = bodies("shop-sdk-js", "/v1/orders", api="v1")  # the 3.x SDK sends numbers
    assert old_js and all(isinstance(line["quantity"], int) for b in old_js for line in b["lines"])
    cli = bodies("shop-cli", "/v2/exports")
    assert 0.35 < sum("since" not in b for b in cli) / len(cli) < 0.65
    assert {k for b in bodies("shop-sdk-python", "/v2/exports") for k in b} == {
        "kind",
        "since",
        "format",
        "compress",
    }


def test_feedback_posts_carry_the_consumers_opinion():
    c = _consumer("shop-sdk-js")
    c.mood, c.topic = traffic.opinion_of(c.key, c.client)
    posts = [r.json for r in _requests(c, 4000) if r.path == "/v1/feedback"]
    assert len(posts) > 20
    assert all(1 <= p["score"] <= 5 for p in posts)
    assert Counter(p["category"] for p in posts).most_common(1)[0][0] == "errors"
    assert all(p.get("route") == "/v2/orders" for p in posts if p["category"] == "errors")
    assert sum(p["score"] for p in posts) / len(posts) < 3.0


class Recorder:
    """ASGI middleware in front of the demo app: what each request carried (names, not values)."""

    def __init__(self, app) -> None:
        self.app = app
        self.seen: list[list] = []  # [method, path, query names, API key, region header, status]

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        names = tuple(sorted({k for k, _ in parse_qsl(scope["query_string"].decode())}))
        seen = [
            scope["method"],
            scope["path"],
            names,
            headers.get("x-api-key"),
            headers.get("cf-ipcountry"),
            0,
        ]
        self.seen.append(seen)

        async def sending(message) -> None:
            if message["type"] == "http.response.start":
                seen[5] = message["status"]
            await send(message)

        await self.app(scope, receive, sending)


@contextlib.contextmanager
def served(app) -> Iterator[str]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.slow
def test_a_real_run_sends_regions_parameters_downloads_and_feedback():
    recorder = Recorder(build_app(seed=4))
    with served(recorder) as url:
        stats = traffic.run(url, duration=60, max_requests=600, rate=300, seed=9, burst_every=1000)
    assert stats.requests == 600 and stats.errors == 0 and sum(stats.by_status.values()) == 600
    assert len(recorder.seen) == 600
    for method, path, names, key, region, _ in recorder.seen:
        if key is None:  # the uptime check
            assert (method, path, region) == ("GET", "/v2/status", "US")
        else:
            assert region == traffic.region_of(key), (key, region)
        assert "include_archived" not in names
    statuses = Counter((m, p, status) for m, p, _, _, _, status in recorder.seen)
    assert Counter(s for (_, _, s), n in statuses.items() for _ in range(n)) == stats.by_status
    feedback = {s for m, p, s in statuses if p == "/v1/feedback"}
    # 202 once the instrumentation has record_feedback; 501 before (no other answer)
    assert feedback in ({202}, {501}), feedback
    downloads = [n for (m, p, s), n in statuses.items() if p.endswith("/download") and s == 200]
    assert sum(downloads) > 0 and stats.downloaded >= sum(downloads) * EXPORT_BASE_BYTES
    assert statuses["POST", "/v2/orders", 422] > 0


def test_the_demo_catalog_declares_what_the_apps_openapi_declares():
    """demo/catalog.yaml is written by hand (comments, deprecations); its `parameters:` are what
    `apiusage catalog from-openapi` finds in the app, so api_unused_parameters is right."""
    from demo_support import needs_issue15

    needs_issue15("catalog")
    from apiusage.demo import CATALOG, SERVICE_NAME
    from apiusage.instrumentation._openapi import catalog_from_openapi
    from apiusage.instrumentation.catalog import load_catalog

    generated = catalog_from_openapi(build_app(seed=1).openapi(), SERVICE_NAME)
    want = {(e.method, e.route): (e.query_parameters, e.body_fields) for e in generated.services[0].endpoints}
    ours = load_catalog(CATALOG).service(SERVICE_NAME)
    got = {
        (e.method, e.route): (e.query_parameters, e.body_fields)
        for e in ours.endpoints
        if e.query_parameters or e.body_fields
    }
    assert got == want
    assert want["GET", "/v2/orders"] == (("limit", "cursor", "expand", "include_archived"), ())
