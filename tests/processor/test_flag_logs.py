"""Feature-flag evaluations sent as OTLP log events (``feature_flag.evaluation``) reach the sinks that
define consume_flag_evaluations as exact FlagEvaluations: read from protobuf and OTLP/JSON beside
feedback, bounded, sanitised, refused and counted without a key or variant, and never carrying
the targeting key."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Sequence

import grpc
import httpx
import pytest
from apiusage.processor.config import OtlpForwarder, UsageConfig
from apiusage.processor.derive.feedback import Feedback
from apiusage.processor.derive.flags import EvaluationRecord, FlagEvaluation, extract_evaluations
from apiusage.processor.derive.requests import Deriver, span_field_sources
from apiusage.processor.exporters.otlp_forward import Forwarder
from apiusage.processor.pipeline import FeedbackBatch, FlagEvaluationBatch, SpanQueue, Worker
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.receivers.intake import Intake
from apiusage.processor.receivers.passthrough import (
    MAX_FLAG_RECORDS,
    feedback_in_protobuf,
    logs_events_in_json,
    logs_in_protobuf,
)
from apiusage.processor.receivers.payload import PayloadTooLarge
from apiusage.processor.telemetry import ExportOutcome, PipelineStats
from fastapi import FastAPI
from openfeature import api as openfeature
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.feedback import ORDERS, fb
from tests.support.flag_log_events import (
    CONTEXT_ID,
    KEY,
    PROVIDER,
    VARIANT,
    FlagSink,
    LogEventHook,
    flag_record,
    flag_request,
    processor_with_sink,
)
from tests.support.polling import wait_until
from tests.support.processor import get, sample, wait_for

T = 1_700_000_000_123_456_789
TRACE, SPAN = bytes(range(1, 17)), bytes(range(1, 9))
TARGETING_KEY = "user-42@example.com"


def rec(key: object = "new-checkout", variant: object = "on", **kw: object) -> EvaluationRecord:
    attributes = {k: v for k, v in ((KEY, key), (VARIANT, variant)) if v is not None}
    fields = {"service": "orders-api", "event_name": "feature_flag.evaluation", "attributes": attributes}
    fields |= {"time_unix_nano": T, "observed_time_unix_nano": 0, "trace_id": TRACE, "span_id": SPAN}
    return EvaluationRecord(**(fields | kw))  # type: ignore[arg-type]


# --- extraction -----------------------------------------------------------------------------------


def test_evaluations_are_kept_sanitised_and_those_without_key_or_variant_refused() -> None:
    records = [
        rec(),
        rec("theme", None, attributes={KEY: "theme", "feature_flag.result.value": '"blue"'}),
        rec(None),  # no key
        rec(""),  # empty key
        rec(7),  # a key that is not a string
        rec("dark-mode", None),  # no variant
        rec("dark-mode", ""),  # empty variant, and no value to fall back on
        rec("new\x00check\nout", "o\x1bn"),  # control characters become spaces
        rec("x" * 500, "v"),  # cut at the label length
        rec(service=None, trace_id=b"\x01\x02\x03", span_id=b"\x01\x02\x03", time_unix_nano=0),
        rec(trace_id=bytes(16), span_id=bytes(8), time_unix_nano=0, observed_time_unix_nano=5),
        rec(event_name="orders.placed"),  # another event: left alone, not refused
        rec(event_name="", attributes={"event.name": "feature_flag.evaluation", KEY: "old", VARIANT: "b"}),
    ]
    evaluations, refused = extract_evaluations(records, max_label_length=16, now_ns=42)
    assert evaluations == [
        FlagEvaluation("orders-api", "new-checkout", "on", TRACE, SPAN, T),
        FlagEvaluation("orders-api", "theme", "blue", TRACE, SPAN, T),
        FlagEvaluation("orders-api", "new check out", "o n", TRACE, SPAN, T),
        FlagEvaluation("orders-api", "x" * 15 + "…", "v", TRACE, SPAN, T),
        FlagEvaluation("unknown_service", "new-checkout", "on", b"", b"", 42),
        FlagEvaluation("orders-api", "new-checkout", "on", b"", b"", 5),
        FlagEvaluation("orders-api", "old", "b", TRACE, SPAN, T),
    ]
    assert refused == 5


# --- reading off the wire -------------------------------------------------------------------------


def test_protobuf_logs_give_feedback_and_evaluations_from_one_body() -> None:
    body = flag_request(
        (
            ORDERS,
            [
                {"body": "feature_flag.evaluation took 3 ms", "attributes": {KEY: "noise"}},  # a log line
                fb(),
                flag_record(),
                flag_record("theme", "red", old_style=True, trace_id=b"\x01\x02\x03", span_id=b"\xff" * 3),
                flag_record("dark-mode", None, **{PROVIDER: "flagd", "feature_flag.result.value": "true"}),
            ],
        ),
        ({"service.name": "billing-api"}, [flag_record("beta", "off", trace_id=b"", span_id=b"")]),
    ).SerializeToString()
    feedback, records = logs_in_protobuf(body)
    assert [f.event_name for f in feedback] == ["apiusage.feedback"]
    assert feedback == feedback_in_protobuf(body)  # reading flags too changes nothing of feedback
    assert records == [
        rec(),
        rec(
            "theme",
            "red",
            event_name="",
            attributes={KEY: "theme", VARIANT: "red", "event.name": "feature_flag.evaluation"},
            trace_id=b"\x01\x02\x03",
            span_id=b"\xff" * 3,
        ),
        rec("dark-mode", None, attributes={KEY: "dark-mode", "feature_flag.result.value": "true"}),
        rec("beta", "off", service="billing-api", trace_id=b"", span_id=b""),
    ]
    assert all(CONTEXT_ID not in r.attributes for r in records)  # the targeting key is never decoded
    evaluations, refused = extract_evaluations(records)
    assert evaluations == [
        FlagEvaluation("orders-api", "new-checkout", "on", TRACE, SPAN, T),
        FlagEvaluation("orders-api", "theme", "red", b"", b"", T),
        FlagEvaluation("orders-api", "dark-mode", "true", TRACE, SPAN, T),
        FlagEvaluation("billing-api", "beta", "off", b"", b"", T),
    ]
    assert refused == 0
    assert logs_in_protobuf(body, flags=False)[1] == []


@pytest.mark.slow  # two bodies of 100,000 records built in Python
def test_the_records_read_per_request_are_bounded_and_a_log_flood_costs_no_decoding() -> None:
    plain = [{"body": f"order {i} placed", "attributes": {"i": i}} for i in range(100_000)]
    for i in (3, 60_000, 99_998):
        plain[i] = flag_record(f"flag-{i}")
    _, records = logs_in_protobuf(flag_request((ORDERS, plain)).SerializeToString())
    assert [r.attributes[KEY] for r in records] == ["flag-3", "flag-60000", "flag-99998"]
    flood = flag_request((ORDERS, [flag_record(f"f{i}", "v") for i in range(100_000)])).SerializeToString()
    message = (
        "more than 10000 feature-flag evaluation log records ('feature_flag.evaluation') in one "
        "request; send smaller batches"
    )
    with pytest.raises(PayloadTooLarge) as raised:
        logs_in_protobuf(flood)
    assert str(raised.value) == message
    assert MAX_FLAG_RECORDS == 10_000
    exact = flag_request((ORDERS, [flag_record(f"f{i}") for i in range(11)])).SerializeToString()
    assert len(logs_in_protobuf(exact, max_flags=11)[1]) == 11
    with pytest.raises(PayloadTooLarge, match="more than 10 feature-flag"):
        logs_in_protobuf(exact, max_flags=10)
    # Feedback has its own bound: 11 flag records do not count against it.
    assert logs_in_protobuf(exact, max_feedback=1)[0] == []
    as_json = _json([_json_record(f"f{i}", "v") for i in range(11)])
    with pytest.raises(PayloadTooLarge, match="more than 10 feature-flag"):
        logs_events_in_json(as_json, max_flags=10)


def _kv(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


def _json_record(key: str, variant: str, **fields: object) -> dict:
    attributes = [_kv(KEY, {"stringValue": key}), _kv(VARIANT, {"stringValue": variant})]
    attributes.append(_kv(CONTEXT_ID, {"stringValue": TARGETING_KEY}))
    return {
        "eventName": "feature_flag.evaluation",
        "timeUnixNano": str(T),
        "attributes": attributes,
        **fields,
    }


def _json(records: list[dict], service: str = "orders-api") -> bytes:
    resource = {"attributes": [_kv("service.name", {"stringValue": service})]}
    return json.dumps(
        {"resourceLogs": [{"resource": resource, "scopeLogs": [{"logRecords": records}]}]}
    ).encode()


def test_json_logs_give_evaluations_with_hex_ids() -> None:
    body = _json(
        [
            _json_record("new-checkout", "on", traceId=TRACE.hex(), spanId=SPAN.hex().upper()),
            _json_record("theme", "red", trace_id=TRACE.hex(), span_id="0102"),  # a 2-byte span id
            _json_record("beta", "off", traceId="not hex at all, 32 characters!!", spanId=12),
            {
                "event_name": "",
                "attributes": [
                    _kv("event.name", {"stringValue": "feature_flag.evaluation"}),
                    _kv(KEY, {"stringValue": "old"}),
                ],
            },  # no variant: refused
            {"eventName": ["feature_flag.evaluation"], "attributes": []},  # not a name: not read
            {
                "eventName": "apiusage.feedback",
                "attributes": [_kv("apiusage.feedback.score", {"intValue": 5})],
            },
        ]
    )
    services, feedback, records = logs_events_in_json(body)
    assert services == ["orders-api"] and len(feedback) == 1
    assert [(r.attributes.get(KEY), r.trace_id, r.span_id) for r in records] == [
        ("new-checkout", TRACE, SPAN),
        ("theme", TRACE, b"\x01\x02"),
        ("beta", b"", b""),
        ("old", b"", b""),
    ]
    evaluations, refused = extract_evaluations(records)
    assert evaluations == [
        FlagEvaluation("orders-api", "new-checkout", "on", TRACE, SPAN, T),
        FlagEvaluation("orders-api", "theme", "red", TRACE, b"", T),
        FlagEvaluation("orders-api", "beta", "off", b"", b"", T),
    ]
    assert refused == 1
    assert TARGETING_KEY not in repr(records)


# --- the worker -----------------------------------------------------------------------------------

EVALUATIONS = [
    FlagEvaluation("orders-api", "new-checkout", "on", TRACE, SPAN, T),
    FlagEvaluation("orders-api", "poison", "on", TRACE, SPAN, T),
    FlagEvaluation("orders-api", "theme", "red", b"", b"", T),
]


class Picky:
    """A flag sink that cannot take the flag "poison"."""

    def __init__(self) -> None:
        self.seen: list[FlagEvaluation] = []

    def consume_flag_evaluations(self, evaluations: Sequence[FlagEvaluation]) -> None:
        if any(e.flag == "poison" for e in evaluations):
            raise RuntimeError("poison")
        self.seen.extend(evaluations)


def test_evaluations_reach_flag_sinks_only_and_a_failing_one_costs_only_itself() -> None:
    stats = PipelineStats()
    queue = SpanQueue(100)
    picky, keeper = Picky(), FlagSink()
    worker = Worker(queue, Deriver(UsageConfig(), stats), [picky, keeper], stats)
    worker.start()
    try:
        assert queue.reserve(3 + 1)
        assert queue.depth == 4
        queue.put_flag_evaluations(EVALUATIONS, refused=2)
        feedback = [Feedback("orders-api", "", "docs", "5", None, T)]
        queue.put_feedback(feedback)
        wait_until(lambda: queue.depth == 0, 5, "the worker took both batches")
        wait_until(lambda: stats.processing_errors == 1, 5, "the poison evaluation was counted")
    finally:
        worker.stop(5)
    assert picky.seen == [EVALUATIONS[0], EVALUATIONS[2]]
    assert keeper.evaluations == EVALUATIONS  # the other sink lost nothing
    assert keeper.feedback == feedback
    assert stats.data_quality_issues["invalid_flag_evaluation"] == 2
    assert stats.spans_processed == 0


def test_a_sink_cannot_be_added_once_the_worker_runs() -> None:
    stats = PipelineStats()
    worker = Worker(SpanQueue(10), Deriver(UsageConfig(), stats), [], stats)
    worker.start()
    try:
        with pytest.raises(RuntimeError, match="add_sink after start"):
            worker.add_sink(FlagSink())
    finally:
        worker.stop(5)


# --- the intake: the queue's room ------------------------------------------------------------------


def _intake(queue: SpanQueue, stats: PipelineStats, forward: object = None) -> Intake:
    scanner = FieldScanner(span_field_sources(UsageConfig()), [("service.name",)])
    return Intake(scanner, queue, stats, forward)  # type: ignore[arg-type]


def test_feedback_and_evaluations_of_one_request_share_the_room_of_spans() -> None:
    stats = PipelineStats()
    queue = SpanQueue(max_spans=10)
    intake = _intake(queue, stats)
    body = flag_request((ORDERS, [fb(), flag_record(), flag_record("theme", "red"), flag_record("x", None)]))
    assert intake.pass_through("logs", body.SerializeToString(), "http").kind is ExportOutcome.SUCCESS
    assert queue.depth == 3
    assert queue.take(0)[1] == FeedbackBatch([Feedback("orders-api", "", "docs", "4", None, T)], 0)
    evaluations = [
        FlagEvaluation("orders-api", "new-checkout", "on", TRACE, SPAN, T),
        FlagEvaluation("orders-api", "theme", "red", TRACE, SPAN, T),
    ]
    assert queue.take(0)[1] == FlagEvaluationBatch(evaluations, 1)
    assert queue.take(0) is None
    queue.done(3)
    # Refused records alone take no room, and still reach the worker to be counted.
    queue.offer([("orders-api",)], [object()] * 10)
    only_refused = flag_request((ORDERS, [flag_record("x", None)])).SerializeToString()
    assert intake.pass_through("logs", only_refused, "grpc").kind is ExportOutcome.SUCCESS
    queue.take(0)
    assert queue.take(0)[1] == FlagEvaluationBatch([], 1)
    # With the room taken, evaluations are refused retryably; logs without them pass as before.
    refused = intake.pass_through("logs", body.SerializeToString(), "grpc")
    assert (refused.kind, refused.message) == (
        ExportOutcome.QUEUE_FULL,
        "the processing queue is full; retry later",
    )
    plain = flag_request((ORDERS, [{"body": "feature_flag.evaluation failed"}])).SerializeToString()
    assert intake.pass_through("logs", plain, "grpc").kind is ExportOutcome.SUCCESS
    assert queue.depth == 10 and queue.take(0) is None
    assert stats.export_requests == {
        ("http", "logs_not_forwarded"): 1,
        ("grpc", "logs_not_forwarded"): 2,
        ("grpc", "queue_full"): 1,
    }


def test_a_body_the_forwarder_drops_leaves_no_evaluation_queued() -> None:
    """The forward queue (one request, never sent: its thread is not started) drops the second
    body; the client retries it, so its evaluations must not have been queued already."""
    stats = PipelineStats()
    queue = SpanQueue(max_spans=100)
    forwarder = Forwarder(OtlpForwarder(endpoint="http://127.0.0.1:9", max_queue_requests=1))
    intake = _intake(queue, stats, forwarder.forward)
    body = flag_request((ORDERS, [fb(), flag_record(), flag_record()])).SerializeToString()
    assert intake.pass_through("logs", body, "http").kind is ExportOutcome.SUCCESS
    assert queue.depth == 3
    assert intake.pass_through("logs", body, "http").kind is ExportOutcome.QUEUE_FULL
    assert queue.depth == 3 and len(queue._items) == 2


# --- a running processor --------------------------------------------------------------------------

PB = {"Content-Type": "application/x-protobuf"}
LOGS_EXPORT = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def grpc_export(endpoint: str, body: bytes) -> grpc.StatusCode:
    with grpc.insecure_channel(endpoint) as channel:
        call = channel.unary_unary(LOGS_EXPORT, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined]
    return grpc.StatusCode.OK


def _flag_app(client: OpenFeatureClient) -> tuple[FastAPI, InMemorySpanExporter]:
    """A FastAPI service whose GET /checkout evaluates three flags (one unknown: no variant)."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource.create({"service.name": "orders-api"}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    app = FastAPI()

    @app.get("/checkout")
    async def checkout() -> dict:
        context = EvaluationContext(targeting_key=TARGETING_KEY)
        new = client.get_boolean_value("new-checkout", False, context)
        theme = client.get_string_value("theme", "blue", context)
        client.get_boolean_value("missing-flag", False, context)  # FLAG_NOT_FOUND: no variant
        return {"new": new, "theme": theme}

    FastAPIInstrumentor.instrument_app(app, tracer_provider=tracer_provider)
    return app, spans


async def _call(app: FastAPI, path: str) -> object:
    """One request through the app's ASGI interface, as a server would make it."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://orders") as client:
        response = await client.get(path)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_openfeature_log_events_from_a_fastapi_request_reach_the_sink_exactly(transport: str) -> None:
    sink = FlagSink()
    with processor_with_sink(sink) as running:
        if transport == "grpc":
            exporter = GrpcLogExporter(endpoint=f"http://{running.grpc_endpoint}", insecure=True, timeout=5)
        else:
            exporter = HttpLogExporter(endpoint=f"{running.http_endpoint}/v1/logs", timeout=5)
        logger_provider = LoggerProvider(resource=Resource.create({"service.name": "orders-api"}))
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        hook = LogEventHook(logger_provider.get_logger("tests.flags"))
        domain = f"flaglogs-{transport}"
        flags = {
            "new-checkout": InMemoryFlag("on", {"on": True, "off": False}),
            "theme": InMemoryFlag("red", {"red": "red", "blue": "blue"}),
        }
        openfeature.set_provider(InMemoryProvider(flags), domain=domain)
        client = openfeature.get_client(domain)
        client.add_hooks([hook])  # hooks are per client object
        app, spans = _flag_app(client)
        assert asyncio.run(_call(app, "/checkout")) == {"new": True, "theme": "red"}
        assert logger_provider.force_flush(10_000)
        logger_provider.shutdown()
        (server,) = [s for s in spans.get_finished_spans() if s.kind is SpanKind.SERVER]
        trace_id = server.context.trace_id.to_bytes(16, "big")
        span_id = server.context.span_id.to_bytes(8, "big")
        assert [(k, v) for k, v, _ in hook.emitted] == [
            ("new-checkout", "on"),
            ("theme", "red"),
            ("missing-flag", None),
        ]
        m = wait_for(running, "apiusage_data_quality_issues_total", 1, check="invalid_flag_evaluation")
        wait_until(lambda: len(sink.evaluations) >= 2, 5, "the evaluations reached the sink")
        assert sink.evaluations == [
            FlagEvaluation("orders-api", key, variant, trace_id, span_id, ts)
            for key, variant, ts in hook.emitted
            if variant
        ]
        assert sink.feedback == []
        assert TARGETING_KEY not in repr(sink.evaluations)
        assert TARGETING_KEY not in get(running.metrics_url)[1].decode()
        assert (
            sample(m, "apiusage_export_requests_total", transport=transport, outcome="logs_not_forwarded")
            == 1
        )
        assert sample(m, "apiusage_spans_processed_total") == 0


@pytest.mark.slow
def test_hostile_flag_log_requests_are_bounded_sanitised_and_still_delivered() -> None:
    sink = FlagSink()
    flood = flag_request((ORDERS, [flag_record(f"f{i}", "v") for i in range(100_000)])).SerializeToString()
    odd = flag_request(
        (
            ORDERS,
            [
                flag_record("new\x00check\x1bout\u2028", "o\nn\x7f"),
                flag_record("theme", "red", trace_id=b"\x01\x02\x03\x04\x05", span_id=b"\x01\x02\x03"),
                flag_record("no-variant", None),
                fb(),  # feedback and flags in one request: both delivered
            ],
        )
    ).SerializeToString()
    with processor_with_sink(sink) as running:
        url = f"{running.http_endpoint}/v1/logs"
        status, body = post(url, flood, PB)
        assert status == 413
        assert b"more than 10000 feature-flag evaluation log records ('feature_flag.evaluation')" in body
        assert grpc_export(running.grpc_endpoint, flood) is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert post(url, odd, PB) == (200, b"")
        assert grpc_export(running.grpc_endpoint, odd) is grpc.StatusCode.OK
        as_json = _json([_json_record("j\u0007son", "on", traceId=TRACE.hex(), spanId="abcdef")])
        assert post(url, as_json, {"Content-Type": "application/json"}) == (200, b"{}")
        m = wait_for(running, "apiusage_data_quality_issues_total", 2, check="invalid_flag_evaluation")
        wait_until(lambda: len(sink.evaluations) >= 5, 5, "the evaluations reached the sink")
        wait_until(lambda: len(sink.feedback) >= 2, 5, "the feedback reached the sink")
        once = [
            FlagEvaluation("orders-api", "new check out ", "o n ", TRACE, SPAN, T),
            FlagEvaluation("orders-api", "theme", "red", b"", b"", T),
        ]
        assert sink.evaluations == [*once, *once, FlagEvaluation("orders-api", "j son", "on", TRACE, b"", T)]
        assert [f.score for f in sink.feedback] == ["4", "4"]
        m = wait_for(
            running, "api_feedback_total", 2, service="orders-api", route="", category="docs", score="4"
        )
        assert sample(m, "apiusage_export_requests_total", transport="http", outcome="too_large") == 1
        assert sample(m, "apiusage_export_requests_total", transport="grpc", outcome="too_large") == 1
        assert TARGETING_KEY not in repr(sink.evaluations) + repr(sink.feedback)


def test_a_backlogged_state_store_does_not_hold_back_logs_that_carry_flag_evaluations() -> None:
    """Regression: a logs body with one application log line and one flag evaluation was refused
    (STATE_BACKLOG) and not forwarded while the store lagged, so a service using OpenFeature's
    hook had all its logs delayed. Feedback still waits for the store; evaluations do not."""
    from apiusage.processor.pipeline import SpanQueue
    from apiusage.processor.receivers.intake import Intake
    from apiusage.processor.telemetry import PipelineStats
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportLogsServiceRequest()
    resource = request.resource_logs.add()
    resource.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="shop")))
    scope = resource.scope_logs.add()
    scope.log_records.add().body.string_value = "an ordinary application log line"
    record = scope.log_records.add()
    record.event_name = "feature_flag.evaluation"
    record.attributes.extend(
        [
            KeyValue(key="feature_flag.key", value=AnyValue(string_value="some-flag")),
            KeyValue(key="feature_flag.result.variant", value=AnyValue(string_value="on")),
        ]
    )
    record.trace_id, record.span_id = b"\x02" * 16, b"\x01" * 8
    body = request.SerializeToString()
    forwarded: list[bytes] = []

    def forward(payload: bytes, *rest: object) -> str:
        forwarded.append(payload)
        return "queued"

    queue = SpanQueue(1000)
    intake = Intake(None, queue, PipelineStats(), forward, None, lambda: True)
    outcome = intake.pass_through("logs", body, "http")
    assert forwarded == [body], outcome
    assert queue.depth == 1  # the evaluation is queued for the join
