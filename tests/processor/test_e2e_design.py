"""Issue 15 end to end: a real FastAPI app under `opentelemetry-instrument` exports to a running
`apiusage serve`, and /metrics tells exactly which parameters were sent, how big the bodies were,
which fields failed validation, where the callers are, what they said in feedback, and which
declared parameters nobody sends. Then the privacy check: secret-looking values sent in query
strings, bodies and headers appear neither in /metrics nor in anything the processor forwards.

Real components throughout: `opentelemetry-instrument uvicorn` with the SDK's OTLP exporters
(traces and logs, over gRPC and over HTTP), `apiusage serve` as a subprocess with SQLite state,
`apiusage catalog from-openapi --app` for the catalog, and tests/support/otlp_sink.py as the
trace backend the processor forwards to. The expected values are written out in CALLS, not
derived from the code under test.

This test needs every branch of issue 15 (instrumentation, derivation, scanner arrays, feedback,
state); written against the contract (COMMON.md) and the issue's metric names. Conventions it
relies on that a branch decides, each asserted once so a different choice fails loudly here:
validation `location`/`field` split at the first "." (derive), `error.type` of an exception is
its class `__qualname__` and of a 5xx without one the status code (instr, after OTel Python),
a missing region is `client_region="unknown"` (derive), feedback without a route has
`route=""` (Feedback contract), consumer windows are 1d/7d/30d (state).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from apiusage.demo.otlp import add_resource, add_span, design_attributes
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.components import free_port, missing
from tests.support.otlp_sink import OtlpSink
from tests.support.polling import read_until, wait_until
from tests.support.processor import (
    RunningProcessor,
    Samples,
    apiusage_command,
    get,
    matching,
    sample,
    start_processor,
)

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SERVICE = "design-api"
APP = "tests.support.design_app:app"
PSEUDONYM_KEY = "e2e-design-pseudonym-key-0123456789"
SERVER_REGION = "eu-west-1"
KEYS = {"A": "sk_live_alphaKEY0123456789", "B": "sk_live_betaKEY9876543210"}
TIERS = {"A": "pro", "B": "free"}
CLIENTS = {"A": ("alpha-sdk", "1.0.0"), "B": ("beta-sdk", "2.0.0")}
REGION_SENT = {"A": "de", "B": "US"}  # as the CDN header carries it
REGION = {"A": "DE", "B": "US"}  # as the instrumentation records it: upper case


@dataclass(frozen=True)
class Call:
    """One request to the app and what the processor must make of it."""

    who: str  # "A" or "B"
    method: str
    target: str  # path and query
    route: str
    status: int
    body: bytes | None = None
    query: tuple[str, ...] = ()  # parameter names carried, each once
    fields: tuple[str, ...] = ()  # top-level body field names carried
    errors: tuple[tuple[str, str, str], ...] = ()  # (location, field, error_type)
    error_type: str | None = None
    feedback: tuple[str, str, str] | None = None  # (route, category, score)
    region: bool = True  # sends CF-IPCountry


CALLS = [
    *[Call("A", "GET", "/items?limit=5", "/items", 200, query=("limit",))] * 3,
    *[Call("B", "GET", "/items?limit=5&cursor=c1", "/items", 200, query=("cursor", "limit"))] * 2,
    Call("A", "GET", "/items?expand=tags", "/items", 200, query=("expand",)),
    Call("A", "GET", "/items?limit=1&limit=2", "/items", 200, query=("limit",)),  # a repeated name: once
    Call("B", "GET", "/items", "/items", 200, region=False),
    Call(
        "B",
        "GET",
        "/items?limit=abc",
        "/items",
        422,
        query=("limit",),
        errors=(("query", "limit", "int_parsing"),),
    ),
    Call("A", "POST", "/items", "/items", 201, b'{"name":"a","quantity":2}', fields=("name", "quantity")),
    Call(
        "B",
        "POST",
        "/items",
        "/items",
        201,
        b'{"name":"b","quantity":1,"tags":["x","y"]}',
        fields=("name", "quantity", "tags"),
    ),
    Call(
        "A",
        "POST",
        "/items",
        "/items",
        201,
        b'{"name":"c","quantity":3,"meta":{"source":"web"}}',
        fields=("meta", "name", "quantity"),  # depth 1: meta, not meta.source
    ),
    Call(
        "B",
        "POST",
        "/items",
        "/items",
        422,
        b'{"name":"d","quantity":"two"}',
        fields=("name", "quantity"),
        errors=(("body", "quantity", "int_parsing"),),
    ),
    Call(
        "A",
        "POST",
        "/items",
        "/items",
        422,
        b'{"quantity":"x"}',
        fields=("quantity",),
        errors=(("body", "name", "missing"), ("body", "quantity", "int_parsing")),
    ),
    Call("A", "GET", "/export?size=100", "/export", 200, query=("size",)),
    Call("B", "GET", "/export?size=70000", "/export", 200, query=("size",)),
    Call("A", "GET", "/export?size=5000001", "/export", 200, query=("size",)),  # streamed, ~5 MB
    *[Call("B", "GET", "/boom", "/boom", 500, error_type="BoomError")] * 2,
    Call("A", "GET", "/unavailable", "/unavailable", 503, error_type="503"),
    Call(
        "A",
        "POST",
        "/feedback",
        "/feedback",
        202,
        b'{"score":5,"category":"docs"}',
        fields=("category", "score"),
        feedback=("", "docs", "5"),
    ),
    Call(
        "A",
        "POST",
        "/feedback",
        "/feedback",
        202,
        b'{"score":4,"category":"docs"}',
        fields=("category", "score"),
        feedback=("", "docs", "4"),
    ),
    Call(
        "B",
        "POST",
        "/feedback",
        "/feedback",
        202,
        b'{"score":2,"category":"errors","route":"/items"}',
        fields=("category", "route", "score"),
        feedback=("/items", "errors", "2"),
    ),
]
# Declared in the app's OpenAPI document and never sent above.
UNUSED = {("GET", "/items"): 1, ("POST", "/items"): 2}  # include_archived; password, gift


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


def _bin(name: str) -> str:
    path = Path(sys.executable).with_name(name)
    if not path.exists():
        missing(f"{name} (pip install 'apiusage[demo]')")
    return str(path)


def _write_catalog(folder: Path) -> Path:
    """The catalog as a user makes it: `apiusage catalog from-openapi --app`."""
    out = folder / "catalog.yaml"
    result = subprocess.run(
        [*apiusage_command(), "catalog", "from-openapi", "--app", APP, "--service", SERVICE, "-o", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return out


def _processor_config(catalog: Path, sink: OtlpSink) -> dict:
    return {
        "catalog": str(catalog),
        "exporters": {"otlp": {"endpoint": sink.endpoint}},
        "state": {"flush_interval": "100ms", "refresh_interval": "200ms"},
    }


class App:
    """The design app under `opentelemetry-instrument uvicorn`, exporting traces and logs."""

    def __init__(self, processor: RunningProcessor, protocol: str, folder: Path, **extra_env: str) -> None:
        tiers = folder / "tiers.yaml"
        tiers.write_text("consumers:\n" + "".join(f"  {KEYS[w]}: {TIERS[w]}\n" for w in KEYS))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_", "PYTEST_"))}
        endpoint = (
            f"http://{processor.grpc_endpoint}" if protocol == "grpc" else processor.http_endpoint
        )  # the SDK adds /v1/traces and /v1/logs to an OTLP/HTTP base URL
        env.update(
            {
                "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
                "OTEL_SERVICE_NAME": SERVICE,
                "OTEL_RESOURCE_ATTRIBUTES": f"cloud.region={SERVER_REGION}",
                "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "none",
                "OTEL_BSP_SCHEDULE_DELAY": "100",
                "OTEL_BLRP_SCHEDULE_DELAY": "100",
                "APIUSAGE_PSEUDONYM_KEY": PSEUDONYM_KEY,
                "APIUSAGE_PLAN_TIERS": str(tiers),
                "APIUSAGE_REGION_HEADERS": "CF-IPCountry",
            }
        )
        env.update(extra_env)
        self.port = free_port()
        self.log = folder / f"app-{protocol.replace('/', '-')}.log"
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(
                [
                    _bin("opentelemetry-instrument"),
                    _bin("uvicorn"),
                    APP,
                    "--app-dir",
                    str(REPO),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--log-level",
                    "warning",
                    "--no-access-log",
                ],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

        def up() -> bool:
            # A connection, not a request: a request would be counted with the others.
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited ({self.process.returncode}):\n{self.log.read_text()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_until(up, 60, "the design app to listen", interval=0.2, ignore=(OSError,))

    def stop(self) -> str:
        """SIGTERM (the SDK flushes its exporters on the way out); the app's output."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.log.read_text(errors="replace")


def _headers(call: Call) -> dict[str, str]:
    name, version = CLIENTS[call.who]
    headers = {"X-API-Key": KEYS[call.who], "X-Client-Name": name, "X-Client-Version": version}
    # uvicorn drops a kept-alive connection after an unhandled exception: one connection per call.
    headers["Connection"] = "close"
    if call.region:
        headers["CF-IPCountry"] = REGION_SENT[call.who]
    if call.body is not None:
        headers["Content-Type"] = "application/json"
    return headers


def _drive(url: str) -> list[int]:
    """Send CALLS; the response body size of each (checking its status)."""
    sizes = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for call in CALLS:
            response = client.request(call.method, call.target, content=call.body, headers=_headers(call))
            assert response.status_code == call.status, (call, response.text[:300])
            if call.route == "/export":
                assert "content-length" not in response.headers  # really streamed
            sizes.append(len(response.content))
    return sizes


def _labels(lb: frozenset, *names: str) -> tuple[str, ...]:
    d = dict(lb)
    return tuple(d[n] for n in names)


def _family(samples: Samples, name: str, *names: str, **where: str) -> dict[tuple[str, ...], float]:
    """{label values in `names` order: value} of one family, for the samples matching `where`
    (summed over the labels not named)."""
    out: Counter[tuple[str, ...]] = Counter()
    for lb, v in matching(samples, name, **where).items():
        out[_labels(lb, *names)] += v
    return dict(out)


def _histogram_ok(samples: Samples, name: str, sizes: list[int], **labels: str) -> None:
    """count, sum and every cumulative bucket of one histogram series, exactly."""
    assert sample(samples, f"{name}_count", **labels) == len(sizes), (name, labels)
    assert sample(samples, f"{name}_sum", **labels) == sum(sizes), (name, labels)
    buckets = {dict(lb)["le"]: v for lb, v in matching(samples, f"{name}_bucket", **labels).items()}
    assert "+Inf" in buckets and len(buckets) >= 4, buckets
    for le, value in buckets.items():
        bound = float(le)
        assert value == sum(1 for s in sizes if s <= bound), (name, labels, le, value, sorted(sizes))


def _only_the_expected_tracebacks(output: str) -> None:
    """uvicorn logs the unhandled BoomError of each GET /boom; nothing else may fail in the app."""
    blocks = output.split("Traceback (most recent call last)")[1:]
    assert len(blocks) == sum(1 for c in CALLS if c.error_type == "BoomError"), output[-4000:]
    assert all("BoomError: the ledger is down" in b for b in blocks), output[-4000:]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e-design")


@pytest.fixture(scope="module")
def catalog(workdir) -> Path:
    return _write_catalog(workdir)


def _want_parameter_consumers() -> dict[tuple[str, ...], int]:
    """(method, route, location, parameter) → distinct consumers who sent it, from CALLS."""
    who: dict[tuple[str, ...], set[str]] = {}
    for c in CALLS:
        for location, names in (("query", c.query), ("body", c.fields)):
            for name in names:
                who.setdefault((c.method, c.route, location, name), set()).add(c.who)
    return {key: len(consumers) for key, consumers in who.items()}


def _wait_for_everything(processor: RunningProcessor) -> Samples:
    requests = len(CALLS)
    feedback = sum(1 for c in CALLS if c.feedback)

    def done(m: Samples) -> bool:
        got = sum(matching(m, "api_requests_total", service=SERVICE).values())
        said = sum(matching(m, "api_feedback_total", service=SERVICE).values())
        # The state refresh after the last flush: every consumer metric the test reads.
        # A refresh may follow a flush that held only part of the requests: wait for the one
        # that counts all of them (the test then compares every series exactly).
        consumers = sum(matching(m, "api_parameter_consumers", service=SERVICE, window="1d").values())
        return (
            got >= requests
            and said >= feedback
            and sample(m, "api_feedback_consumers", service=SERVICE, window="1d") == 2
            and consumers == sum(_want_parameter_consumers().values())
            and sample(m, "api_unused_parameters", service=SERVICE, method="GET", route="/items") is not None
        )

    samples = read_until(processor.scrape, done, 30, interval=0.2)
    assert sum(matching(samples, "api_requests_total", service=SERVICE).values()) == requests
    assert sum(matching(samples, "api_feedback_total", service=SERVICE).values()) == feedback
    return samples


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_the_design_metrics_of_a_real_app_are_exact(workdir, catalog, protocol):
    sink = OtlpSink()
    folder = workdir / protocol.replace("/", "-")
    folder.mkdir()
    try:
        with start_processor(folder, _processor_config(catalog, sink)) as processor:
            app = App(processor, protocol, folder)
            try:
                sizes = _drive(app.url)
                m = _wait_for_everything(processor)
            finally:
                output = app.stop()
            _only_the_expected_tracebacks(output)
            _check_design(m, sizes)
            _check_batch_of_both_schema_versions(processor)
    finally:
        sink.close()


def _check_design(m: Samples, sizes: list[int]) -> None:
    svc = {"service": SERVICE}

    # Requests and their status, as before: the new attributes change nothing of that.
    want_requests = Counter((c.method, c.route, str(c.status)) for c in CALLS)
    assert _family(m, "api_requests_total", "method", "route", "status_code", **svc) == want_requests
    want_tiers = Counter(TIERS[c.who] for c in CALLS)
    assert _family(m, "api_requests_total", "plan_tier", **svc) == {(t,): n for t, n in want_tiers.items()}

    # Parameters per location: requests that carried each name (a repeated name counts once).
    want_params = Counter()
    for c in CALLS:
        for name in c.query:
            want_params[c.method, c.route, "query", name] += 1
        for name in c.fields:
            want_params[c.method, c.route, "body", name] += 1
    assert (
        _family(m, "api_parameter_requests_total", "method", "route", "location", "parameter", **svc)
        == want_params
    )
    assert not matching(m, "api_parameter_requests_total", parameter="include_archived")

    # Distinct consumers per parameter (state store), in the last day.
    want_consumers = _want_parameter_consumers()
    got_consumers = _family(
        m, "api_parameter_consumers", "method", "route", "location", "parameter", window="1d", **svc
    )
    assert got_consumers == want_consumers

    # Declared parameters nobody sent, from the catalog `apiusage catalog from-openapi` wrote.
    for (method, route), count in UNUSED.items():
        assert sample(m, "api_unused_parameters", method=method, route=route, **svc) == count, (method, route)

    # Body sizes: request bodies of the POSTs as sent, response bodies as received, the
    # streamed export's included; every bucket exact.
    for route in ("/items", "/feedback"):
        sent = [len(c.body) for c in CALLS if c.method == "POST" and c.route == route and c.body is not None]
        _histogram_ok(m, "api_request_body_size_bytes", sent, method="POST", route=route, **svc)
    for method, route in (("GET", "/items"), ("POST", "/items"), ("GET", "/export"), ("POST", "/feedback")):
        received = [s for c, s in zip(CALLS, sizes, strict=True) if (c.method, c.route) == (method, route)]
        _histogram_ok(m, "api_response_body_size_bytes", received, method=method, route=route, **svc)
    assert sorted(s for c, s in zip(CALLS, sizes, strict=True) if c.route == "/export") == [
        100,
        70_000,
        5_000_001,
    ]

    # Validation errors by location, field and type: each error once.
    want_errors = Counter((c.method, c.route, *e) for c in CALLS for e in c.errors)
    assert (
        _family(m, "api_validation_errors_total", "method", "route", "location", "field", "error_type", **svc)
        == want_errors
    )

    # error.type of 5xx: the exception's class, or the status code without one.
    want_error_types = Counter((c.method, c.route, c.error_type) for c in CALLS if c.error_type)
    assert _family(m, "api_errors_total", "method", "route", "error_type", **svc) == want_error_types

    # The surface each client library uses.
    want_clients = Counter((CLIENTS[c.who][0], c.method, c.route, _status_class(c.status)) for c in CALLS)
    assert (
        _family(
            m, "api_client_endpoint_requests_total", "client_name", "method", "route", "status_class", **svc
        )
        == want_clients
    )

    # Regions: the client's from the trusted header (upper-cased), the server's from cloud.region.
    def region(c: Call) -> str:
        return REGION[c.who] if c.region else "unknown"

    want_regions = Counter((region(c), SERVER_REGION, _status_class(c.status)) for c in CALLS)
    assert (
        _family(m, "api_region_requests_total", "client_region", "server_region", "status_class", **svc)
        == want_regions
    )
    want_latency = Counter((region(c),) for c in CALLS)
    assert _family(m, "api_region_request_duration_seconds_count", "client_region", **svc) == want_latency

    # Feedback: one event per call of the feedback endpoint, over the app's own OTLP log exporter.
    want_feedback = Counter(c.feedback for c in CALLS if c.feedback)
    assert _family(m, "api_feedback_total", "route", "category", "score", **svc) == want_feedback
    for window in ("1d", "7d", "30d"):
        assert sample(m, "api_feedback_consumers", window=window, **svc) == 2


def _check_batch_of_both_schema_versions(processor: RunningProcessor) -> None:
    """One OTLP/HTTP request, one resource, a version 1 span and a version 2 span side by side."""
    before = processor.scrape()
    request = ExportTraceServiceRequest()
    scope = add_resource(request, {"service.name": "batch-api", "cloud.region": "us-east-1"}, scope="e2e")
    now = time.time_ns()
    common = {"http.request.method": "GET", "http.response.status_code": 200, "apiusage.consumer.id": "c-9"}
    add_span(
        scope,
        {**common, "http.route": "/v1/things", "apiusage.schema_version": 1},
        name="GET /v1/things",
        start_ns=now - 5_000_000,
        end_ns=now,
    )
    v2 = design_attributes(
        query_parameters=["page", "sort"],
        body_fields=[],
        response_size=512,
        validation_errors=[],
        client_region="FR",
    )
    add_span(
        scope,
        {**common, "http.route": "/v2/things", **v2},
        name="GET /v2/things",
        start_ns=now - 5_000_000,
        end_ns=now,
    )
    response = httpx.post(
        f"{processor.http_endpoint}/v1/traces",
        content=request.SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    svc = {"service": "batch-api"}
    m = read_until(
        processor.scrape,
        lambda m: sum(matching(m, "api_requests_total", **svc).values()) >= 2,
        15,
        interval=0.1,
    )
    assert _family(m, "api_requests_total", "route", "status_code", **svc) == {
        ("/v1/things", "200"): 1,
        ("/v2/things", "200"): 1,
    }
    assert _family(m, "api_parameter_requests_total", "route", "location", "parameter", **svc) == {
        ("/v2/things", "query", "page"): 1,
        ("/v2/things", "query", "sort"): 1,
    }
    assert _family(
        m, "api_region_requests_total", "client_region", "server_region", "status_class", **svc
    ) == {
        ("unknown", "us-east-1", "2xx"): 1,
        ("FR", "us-east-1", "2xx"): 1,
    }
    _histogram_ok(m, "api_response_body_size_bytes", [512], method="GET", route="/v2/things", **svc)
    assert not matching(m, "api_response_body_size_bytes_count", route="/v1/things", **svc)
    assert not matching(m, "api_validation_errors_total", **svc)
    assert sample(m, "apiusage_data_quality_issues_total", check="unknown_schema_version") == sample(
        before, "apiusage_data_quality_issues_total", check="unknown_schema_version"
    )
    assert sample(m, "apiusage_spans_rejected_total", reason="invalid_span") == sample(
        before, "apiusage_spans_rejected_total", reason="invalid_span"
    )


# ---------------------------------------------------------------- privacy

SECRETS = {
    "query": "qSECRETqueryVALUE4242",
    "body": "bSECRETbodyVALUE4242",
    "password": "pSECRETpasswordVALUE4242",
    "quantity": "nSECRETquantityVALUE4242",  # refused by validation: FastAPI echoes it in the 422
    "tag": "tSECRETtagVALUE4242",
    "meta": "mSECRETmetaVALUE4242",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.SECRETbearerVALUE4242.sig",
    "cookie": "cSECRETcookieVALUE4242",
    "header": "hSECRETheaderVALUE4242",
    "category": "docs",  # a category is meant to be seen; it is not in the list checked below
}
CHECKED = [v for k, v in SECRETS.items() if k != "category"] + list(KEYS.values())


def _secret_calls() -> list[tuple[str, str, bytes | None, int]]:
    s = SECRETS
    return [
        ("GET", f"/items?limit=3&token={s['query']}&api_key={s['query']}&cursor={s['query']}", None, 200),
        ("GET", f"/items?limit={s['query']}", None, 422),  # the value is echoed in the 422 body
        (
            "POST",
            "/items",
            json.dumps(
                {
                    "name": s["body"],
                    "quantity": 1,
                    "password": s["password"],
                    "tags": [s["tag"]],
                    "meta": {"campaign": s["meta"]},
                }
            ).encode(),
            201,
        ),
        ("POST", "/items", json.dumps({"name": s["body"], "quantity": s["quantity"]}).encode(), 422),
        ("GET", f"/export?size=10&secret={s['query']}", None, 200),
        ("GET", f"/boom?token={s['query']}", None, 500),
        ("POST", "/feedback", json.dumps({"score": 3, "category": "docs", "route": "/items"}).encode(), 202),
    ]


def _forwarded_text(sink: OtlpSink) -> str:
    """Everything the processor forwarded, decoded to JSON, plus the raw bytes as Latin-1."""
    parts = []
    for received in sink.received:
        parts.append(json_format.MessageToJson(received.message()))
        parts.append(received.body.decode("latin-1"))
    return "\n".join(parts)


def test_no_secret_value_reaches_the_metrics_or_the_backend(workdir, catalog):
    sink = OtlpSink()
    folder = workdir / "privacy"
    folder.mkdir()
    calls = _secret_calls()
    try:
        with start_processor(folder, _processor_config(catalog, sink)) as processor:
            # The worst case for the headers apiusage reads: OTel asked to capture them too. (A
            # header captured on the user's own request is the user's choice; X-Debug-Token is not.)
            app = App(
                processor,
                "http/protobuf",
                folder,
                OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_REQUEST="authorization,cookie,x-api-key,cf-ipcountry",
                OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_SERVER_RESPONSE="set-cookie",
            )
            try:
                with httpx.Client(base_url=app.url, timeout=30) as client:
                    for method, target, body, status in calls:
                        headers = {
                            "X-API-Key": KEYS["A"],
                            "Authorization": f"Bearer {SECRETS['bearer']}",
                            "Cookie": f"session={SECRETS['cookie']}",
                            "X-Debug-Token": SECRETS["header"],
                            "CF-IPCountry": "de",
                            "User-Agent": "alpha-sdk/1.0.0",
                            "Connection": "close",
                        }
                        if body is not None:
                            headers["Content-Type"] = "application/json"
                        response = client.request(method, target, content=body, headers=headers)
                        assert response.status_code == status, (target, response.text[:300])

                def seen(m: Samples) -> bool:
                    return (
                        sum(matching(m, "api_requests_total", service=SERVICE).values()) >= len(calls)
                        and sum(matching(m, "api_feedback_total", service=SERVICE).values()) >= 1
                    )

                m = read_until(processor.scrape, seen, 30, interval=0.2)
                assert seen(m), "the processor did not count every request and the feedback"
            finally:
                app.stop()
            wait_until(
                lambda: sink.on("/v1/traces") and sink.on("/v1/logs"),
                20,
                "the processor to forward traces and logs",
                interval=0.1,
            )
            status, body, _ = get(processor.metrics_url)
            assert status == 200
    finally:
        sink.close()
    metrics = body.decode()
    forwarded = _forwarded_text(sink)
    # The pipeline did carry the names: this is no empty export passing by default.
    names = _family(
        m,
        "api_parameter_requests_total",
        "location",
        "parameter",
        service=SERVICE,
        method="POST",
        route="/items",
    )
    assert names == {
        ("body", "name"): 2,
        ("body", "quantity"): 2,
        ("body", "password"): 1,
        ("body", "tags"): 1,
        ("body", "meta"): 1,
    }
    assert ("query", "token") in _family(
        m, "api_parameter_requests_total", "location", "parameter", route="/items"
    )
    assert "apiusage.feedback" in forwarded and "apiusage.request.body_fields" in forwarded
    for secret in CHECKED:
        assert secret not in metrics, f"{secret} is in /metrics"
        assert secret not in forwarded, f"{secret} was forwarded to the trace backend"
