"""No raw key, token, cookie, query string or client address leaves the service, in any semconv mode."""

from __future__ import annotations

import pytest
from apiusage.instrumentation import RedactingSpanProcessor, instrument
from apiusage.instrumentation._redact import CLIENT_ADDRESS_KEYS, Scrubber
from instr_support import KEY, jwt
from opentelemetry.trace import SpanKind
from orders_app import build_app

API_KEY = "sk_live_SECRETAPIKEY123"
TOKEN_SUBJECT = "user-SECRETSUBJECT"
QUERY_SECRET = "SECRETQUERYVALUE"
COOKIE = "SECRETCOOKIEVALUE"
CLIENT_IP = "203.0.113.7"


def send_secrets(client) -> None:
    token = jwt({"sub": TOKEN_SUBJECT})
    headers = {
        "X-API-Key": API_KEY,
        "Authorization": f"Bearer {token}",
        "Cookie": f"session={COOKIE}",
        "X-Forwarded-For": "198.51.100.23",
    }
    assert client.get(f"/v1/orders/1?api_key={QUERY_SECRET}&page=2", headers=headers).status_code == 200
    assert client.get("/v1/session", headers=headers).status_code == 200
    assert client.get(f"/v1/boom?token={QUERY_SECRET}", headers=headers).status_code == 500
    assert client.get(f"/nowhere?key={QUERY_SECRET}", headers=headers).status_code == 404


@pytest.mark.parametrize("mode", [None, "http", "http/dup"])
def test_no_secret_in_any_exported_span(spans, client_for, semconv, monkeypatch, mode):
    semconv(mode)
    # Ask the FastAPI instrumentation to capture every header, the worst case.
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer="header,bearer")
    send_secrets(client_for(app))

    dump = spans.dump()
    for secret in (
        API_KEY,
        TOKEN_SUBJECT,
        QUERY_SECRET,
        COOKIE,
        CLIENT_IP,
        "198.51.100.23",
        jwt({"sub": TOKEN_SUBJECT}).split(".")[1],
        KEY,
    ):
        assert secret not in dump, secret
    servers = spans.server()
    assert len(servers) == 4
    for span in servers:
        keys = set(span.attributes)
        assert not keys & CLIENT_ADDRESS_KEYS
        assert "url.query" not in keys
        assert not {
            k
            for k in keys
            if k.startswith("http.request.header.")
            and any(w in k for w in ("authorization", "cookie", "api_key", "forwarded"))
        }
        assert "http.response.header.set_cookie" not in keys
    first = servers[0].attributes
    # What is kept is still useful: the path without the query, harmless headers.
    if mode in (None, "http/dup"):
        assert first["http.url"] == "http://testserver/v1/orders/1"
        assert first["http.target"] == "/v1/orders/1"
    if mode in ("http", "http/dup"):
        assert first["url.path"] == "/v1/orders/1"
    assert first["http.request.header.user_agent"] == ("testclient",)
    assert first["http.route"] == "/v1/orders/{order_id}"


def test_consumer_id_is_the_hmac_not_the_key(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": API_KEY})
    consumer_id = spans.apiusage()["apiusage.consumer.id"]
    assert len(consumer_id) == 32 and API_KEY not in consumer_id


def test_custom_consumer_header_is_scrubbed_when_captured(spans, client_for, monkeypatch):
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", "X-Customer")
    app = build_app()
    instrument(
        app,
        tracer_provider=spans.provider,
        pseudonym_key=KEY,
        consumer="header",
        environ={"APIUSAGE_CONSUMER_HEADER": "X-Customer"},
    )
    client_for(app).get("/v1/orders/1", headers={"X-Customer": "cust-SECRET"})
    assert "cust-SECRET" not in spans.dump()


def test_spans_of_the_app_itself_are_scrubbed_too(spans):
    """The processor works on any span of the provider, e.g. a hand-made client span."""
    RedactingSpanProcessor()  # importable and constructible on its own
    from apiusage.instrumentation._redact import install

    assert install(spans.provider) is True
    tracer = spans.provider.get_tracer("test")
    with tracer.start_as_current_span(
        "call", kind=SpanKind.CLIENT, attributes={"url.full": f"https://x.example/a?k={QUERY_SECRET}"}
    ) as s:
        s.set_attribute("http.request.header.authorization", ("Bearer abc",))
        s.set_attribute("server.address", "x.example")
    (span,) = spans.all()
    assert dict(span.attributes) == {"url.full": "https://x.example/a", "server.address": "x.example"}


def test_scrubber_rules():
    scrubber = Scrubber(["X-Tenant-Key"])
    attrs = {
        "http.target": "/a?b=1#frag",
        "http.url": "http://h/a?x",
        "url.full": "http://h/p",
        "url.query": "x=1",
        "client.address": "1.2.3.4",
        "net.peer.ip": "1.2.3.4",
        "http.client_ip": "1.2.3.4",
        "network.peer.address": "1.2.3.4",
        "http.request.header.x_tenant_key": ("v",),
        "http.request.header.accept": ("*/*",),
        "http.request.header.x_session_id": ("s",),
        "http.response.header.set_cookie": ("c",),
        "http.route": "/a",
    }
    assert scrubber.scrub(attrs, server=True) == {
        "http.target": "/a",
        "http.url": "http://h/a",
        "url.full": "http://h/p",
        "http.request.header.accept": ("*/*",),
        "http.route": "/a",
    }
    # Client addresses only mean "the caller" on SERVER spans.
    assert "net.peer.ip" in scrubber.scrub(attrs, server=False)


# -- schema version 2: names and sizes are recorded, values never ------------------------------

QUERY_VALUE = "SECRETQUERYV2"
BODY_VALUE = "SECRETBODYVALUE"
NESTED_VALUE = "SECRETNESTEDVALUE"
ARRAY_VALUE = "SECRETARRAYITEM"
PASSWORD = "hunter2SECRETPW"
BODY_API_KEY = "sk_live_SECRETBODYKEY"
HEADER_VALUE = "SECRETHEADERVALUE"
LIMIT_VALUE = "SECRETLIMITINPUT"
V2_SECRETS = (
    QUERY_VALUE,
    BODY_VALUE,
    NESTED_VALUE,
    ARRAY_VALUE,
    PASSWORD,
    BODY_API_KEY,
    HEADER_VALUE,
    LIMIT_VALUE,
)


def send_v2_secrets(client) -> None:
    headers = {
        "X-API-Key": API_KEY,
        "Authorization": f"Bearer {jwt({'sub': TOKEN_SUBJECT})}",
        "X-Auth-Token": HEADER_VALUE,
        "CF-IPCountry": "DE",
    }
    body = {
        "sku": BODY_VALUE,
        "quantity": 1,
        "password": PASSWORD,
        "api_key": BODY_API_KEY,
        "customer": {"id": NESTED_VALUE},
        "items": [{"sku": ARRAY_VALUE, "qty": 1}],
    }
    query = f"api_key={QUERY_VALUE}&token={QUERY_VALUE}&dry_run=true"
    assert client.post(f"/v1/orders?{query}", json=body, headers=headers).status_code == 200
    # Validation errors: pydantic keeps each bad input; only location and type may leave.
    bad = {"sku": BODY_VALUE, "quantity": PASSWORD, "password": PASSWORD}
    assert client.post(f"/v1/orders?limit={LIMIT_VALUE}", json=bad, headers=headers).status_code == 422
    assert (
        client.post("/v1/feedback", json={"score": 2, "category": "docs"}, headers=headers).status_code == 200
    )
    assert client.get(f"/v1/boom?api_key={QUERY_VALUE}", headers=headers).status_code == 500


@pytest.mark.parametrize("mode", [None, "http/dup"])
def test_no_parameter_field_or_header_value_in_any_span_or_log_record(
    spans, client_for, semconv, monkeypatch, logs, mode
):
    from design_app import build_app as build_design_app
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    from tests.support.otlp_sink import OtlpSink

    semconv(mode)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE", ".*")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_COMPRESSION", raising=False)
    sink = OtlpSink()
    log_processor = SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{sink.endpoint}/v1/logs"))
    from tests.support.otel_logs import global_log_forward

    global_log_forward().targets.append(log_processor)
    try:
        spans.provider.add_span_processor(
            SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{sink.endpoint}/v1/traces"))
        )
        app = build_design_app()
        instrument(
            app,
            tracer_provider=spans.provider,
            pseudonym_key=KEY,
            consumer="header,bearer",
            body_field_depth=3,
            region_headers="CF-IPCountry",
            environ={},
        )
        send_v2_secrets(client_for(app))
        spans.provider.force_flush()
        log_processor.force_flush()
        traces = sink.on("/v1/traces")
        exported_logs = sink.on("/v1/logs")
        assert traces and len(exported_logs) == 1
    finally:
        global_log_forward().targets.remove(log_processor)
        sink.close()

    span_text = spans.dump()
    log_text = "\n".join(r.to_json() for r in logs.get_finished_logs())
    wire = [r.body for r in (*traces, *exported_logs)]
    wire_text = "\n".join(str(r.message()) for r in (*traces, *exported_logs))
    for secret in (*V2_SECRETS, API_KEY, TOKEN_SUBJECT, KEY):
        assert secret not in span_text, secret
        assert secret not in log_text, secret
        assert secret not in wire_text, secret
        assert all(secret.encode() not in body for body in wire), secret

    # What is recorded is there: names (even secret-looking ones), never their values.
    first, invalid, _feedback, _boom = spans.server()
    assert first.attributes["apiusage.request.query_parameters"] == ("api_key", "dry_run", "token")
    assert first.attributes["apiusage.request.body_fields"] == (
        "api_key",
        "customer",
        "customer.id",
        "items",
        "password",
        "quantity",
        "sku",
    )
    assert first.attributes["apiusage.client.region"] == "DE"
    assert invalid.attributes["apiusage.validation.error_locations"] == ("query.limit", "body.quantity")
    assert invalid.attributes["apiusage.validation.error_types"] == ("int_parsing", "int_parsing")
    assert b"apiusage.request.body_fields" in b"".join(r.body for r in traces)
    assert b"apiusage.feedback" in exported_logs[0].body
