"""Metrics and logs sent by the real OpenTelemetry SDK exporters pass through to exporters.otlp.

An SDK pointed at the processor's base endpoint sends /v1/metrics and /v1/logs (MetricsService,
LogsService) besides traces. The processor forwards them unchanged, as a Collector pipeline would,
and without an exporter answers them with success; every existing protection stays in front.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import (
    InMemoryLogRecordExporter,
    LogRecordExportResult,
    SimpleLogRecordProcessor,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult
from opentelemetry.sdk.resources import Resource

from tests.support.otlp import request_with_spans
from tests.support.otlp_sink import OtlpSink
from tests.support.processor import running_processor, sample, wait_for

pytestmark = pytest.mark.slow  # the real SDK exporters, a processor and a backend per test

TOKEN = "orders-api-token-0123456789"
OTHER_TOKEN = "billing-api-token-0123456789"
AUTH = {
    "receivers": {
        "otlp": {
            "auth": {
                "tokens": [
                    {"token": TOKEN, "service": "orders-api"},
                    {"token": OTHER_TOKEN, "service": "billing-api"},
                ]
            }
        }
    }
}


def sdk_metrics(service: str = "orders-api"):
    """MetricsData from the real SDK: 3 data points (orders by plan: pro 5, free 2; one histogram)."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader], resource=Resource.create({"service.name": service}))
    meter = provider.get_meter("tests.forward")
    orders = meter.create_counter("orders")
    orders.add(1, {"plan": "pro"})
    orders.add(2, {"plan": "free"})
    orders.add(4, {"plan": "pro"})
    latency = meter.create_histogram("latency", unit="ms")
    for ms in (3, 30, 300):
        latency.record(ms)
    data = reader.get_metrics_data()
    provider.shutdown()
    return data


def sdk_logs(n: int = 5, service: str = "orders-api"):
    """`n` log records from the real SDK logging pipeline."""
    memory = InMemoryLogRecordExporter()
    provider = LoggerProvider(resource=Resource.create({"service.name": service}))
    provider.add_log_record_processor(SimpleLogRecordProcessor(memory))
    logger = provider.get_logger("tests.forward")
    for i in range(n):
        logger.emit(body=f"order {i} placed", severity_number=SeverityNumber.INFO, attributes={"i": i})
    logs = memory.get_finished_logs()
    provider.shutdown()
    return logs


def points(request: ExportMetricsServiceRequest) -> dict[str, list]:
    """Per metric name, its data points as (attributes, value or count), sorted."""
    out: dict[str, list] = {}
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.HasField("sum"):
                    found = [
                        (tuple((a.key, a.value.string_value) for a in p.attributes), p.as_int)
                        for p in metric.sum.data_points
                    ]
                else:
                    found = [((), (p.count, p.sum)) for p in metric.histogram.data_points]
                out.setdefault(metric.name, []).extend(sorted(found))
    return out


WANT_POINTS = {"orders": [((("plan", "free"),), 2), ((("plan", "pro"),), 5)], "latency": [((), (3, 333.0))]}


def log_bodies(request: ExportLogsServiceRequest) -> list[str]:
    return [
        r.body.string_value for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records
    ]


def exporters(transport: str, running, **kwargs):
    if transport == "grpc":
        target = f"http://{running.grpc_endpoint}"
        return (
            GrpcMetricExporter(endpoint=target, insecure=True, timeout=5, **kwargs),
            GrpcLogExporter(endpoint=target, insecure=True, timeout=5, **kwargs),
        )
    return (
        HttpMetricExporter(endpoint=f"{running.http_endpoint}/v1/metrics", timeout=5, **kwargs),
        HttpLogExporter(endpoint=f"{running.http_endpoint}/v1/logs", timeout=5, **kwargs),
    )


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/x-protobuf", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def metrics_body(service: str = "orders-api") -> bytes:
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    kv = rm.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = "orders"
    for i in range(4):
        metric.gauge.data_points.add().as_int = i
    return request.SerializeToString()


def export_requests(m, transport: str) -> dict[str, float]:
    return {
        dict(labels)["outcome"]: v
        for (name, labels), v in m.items()
        if name == "apiusage_export_requests_total" and dict(labels)["transport"] == transport
    }


def forwarded(m, signal: str) -> dict[str, float | None]:
    return {
        o: sample(m, "apiusage_forwarded_requests_total", signal=signal, outcome=o)
        for o in ("success", "failure", "dropped")
    }


@pytest.mark.parametrize("compression", [None, "gzip"])
@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_sdk_metrics_and_logs_reach_the_backend_exactly(transport: str, compression: str | None) -> None:
    sink = OtlpSink()
    kwargs = {}
    if compression:
        kwargs["compression"] = grpc.Compression.Gzip if transport == "grpc" else Compression.Gzip
    try:
        with running_processor({"exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            metric_exporter, log_exporter = exporters(transport, running, **kwargs)
            assert metric_exporter.export(sdk_metrics()) is MetricExportResult.SUCCESS
            assert log_exporter.export(sdk_logs(5)) is LogRecordExportResult.SUCCESS
            metric_exporter.shutdown()
            log_exporter.shutdown()
            got = sink.wait(2)
            m = wait_for(running, "apiusage_forwarded_requests_total", 1, signal="logs", outcome="success")
    finally:
        sink.close()
    assert [r.path for r in got] == ["/v1/metrics", "/v1/logs"]
    assert points(got[0].message()) == WANT_POINTS
    assert log_bodies(got[1].message()) == [f"order {i} placed" for i in range(5)]
    # gRPC inflates a compressed message itself; an HTTP body goes on as it came, gzip included.
    encoding = "gzip" if compression and transport == "http" else None
    assert {(r.content_type, r.content_encoding) for r in got} == {("application/x-protobuf", encoding)}
    assert export_requests(m, transport) == {"metrics_forwarded": 1, "logs_forwarded": 1}
    assert forwarded(m, "metrics") == forwarded(m, "logs") == {"success": 1, "failure": 0, "dropped": 0}
    assert forwarded(m, "traces") == {"success": 0, "failure": 0, "dropped": 0}
    assert sample(m, "apiusage_spans_received_total", transport=transport) is None


def test_http_bodies_are_forwarded_byte_for_byte_with_their_encoding() -> None:
    sink = OtlpSink()
    body = metrics_body()
    as_json = json.dumps(
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "ä\u2028"}}]}]}]}
    ).encode()
    squeezed = gzip.compress(body)
    try:
        with running_processor({"exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            base = running.http_endpoint
            assert post(f"{base}/v1/metrics", body)[0] == 200
            assert post(f"{base}/v1/logs", as_json, {"Content-Type": "application/json"})[:3:2] == (
                200,
                b"{}",
            )
            assert post(f"{base}/v1/metrics", squeezed, {"Content-Encoding": "gzip"})[0] == 200
            got = sink.wait(3)
    finally:
        sink.close()
    assert [(r.path, r.content_type, r.content_encoding, r.body) for r in got] == [
        ("/v1/metrics", "application/x-protobuf", None, body),
        ("/v1/logs", "application/json", None, as_json),
        ("/v1/metrics", "application/x-protobuf", "gzip", squeezed),
    ]
    assert log_bodies(got[1].message()) == ["ä\u2028"]


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_without_an_exporter_the_sdk_is_answered_success_and_each_signal_counted(
    transport: str, caplog
) -> None:
    with running_processor() as running:
        metric_exporter, log_exporter = exporters(transport, running)
        for _ in range(3):
            assert metric_exporter.export(sdk_metrics()) is MetricExportResult.SUCCESS
        assert log_exporter.export(sdk_logs(2)) is LogRecordExportResult.SUCCESS
        metric_exporter.shutdown()
        log_exporter.shutdown()
        m = running.scrape()
    assert export_requests(m, transport) == {"metrics_not_forwarded": 3, "logs_not_forwarded": 1}
    assert not [r for r in caplog.records if r.name.startswith("opentelemetry") and r.levelname != "DEBUG"]
    assert not any(name == "apiusage_forwarded_requests_total" for name, _ in m)


def test_a_backend_that_never_answers_blocks_no_receiver_and_the_excess_is_refused_retryably() -> None:
    sink = OtlpSink()
    sink.hold.clear()  # accepts, reads, never answers (until the end)
    config = {"exporters": {"otlp": {"endpoint": sink.endpoint, "timeout": "30s", "max_queue_requests": 4}}}
    body = metrics_body()
    try:
        with running_processor(config) as running:
            url = f"{running.http_endpoint}/v1/metrics"
            assert post(url, body)[0] == 200
            assert sink.arrived.wait(10), "the forwarder never reached the backend"
            started = time.monotonic()
            answers = [post(url, body) for _ in range(19)]
            # Traces go on, and are forwarded: metrics and logs take at most half of the queue.
            traces = post(f"{running.http_endpoint}/v1/traces", request_with_spans(2).SerializeToString())
            took = time.monotonic() - started
            m = running.wait_processed(2)
            sink.hold.set()
    finally:
        sink.close()
    assert took < 5
    # One request is with the backend, two wait in the queue (half of it); the rest are told to retry.
    assert [status for status, _, _ in answers] == [200, 200] + [503] * 17
    assert {headers["Retry-After"] for _, headers, _ in answers[2:]} == {"5"}
    assert traces[0] == 200
    assert export_requests(m, "http") == {"metrics_forwarded": 3, "queue_full": 17, "success": 1}
    assert forwarded(m, "metrics") == {"success": 0, "failure": 0, "dropped": 17}
    assert forwarded(m, "traces") == {"success": 0, "failure": 0, "dropped": 0}
    assert sample(m, "apiusage_forward_queue_requests") == 3
    trace_bytes = len(request_with_spans(2).SerializeToString())
    assert sample(m, "apiusage_forward_queue_bytes") == 3 * len(body) + trace_bytes


def test_a_backend_that_is_down_is_counted_as_failures_and_the_sdk_still_succeeds() -> None:
    config = {"exporters": {"otlp": {"endpoint": "http://127.0.0.1:1", "timeout": "1s"}}}
    with running_processor(config) as running:
        metric_exporter, _ = exporters("grpc", running)
        started = time.monotonic()
        assert metric_exporter.export(sdk_metrics()) is MetricExportResult.SUCCESS
        assert time.monotonic() - started < 2
        metric_exporter.shutdown()
        m = wait_for(running, "apiusage_forwarded_requests_total", 1, signal="metrics", outcome="failure")
    assert export_requests(m, "grpc") == {"metrics_forwarded": 1}
    assert forwarded(m, "metrics") == {"success": 0, "failure": 1, "dropped": 0}


def test_oversize_and_undecodable_bodies_are_refused_as_before_and_never_forwarded() -> None:
    sink = OtlpSink()
    config = {
        "exporters": {"otlp": {"endpoint": sink.endpoint}},
        "receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": "64KiB"}}}},
    }
    bomb = gzip.compress(b"\x0a\x80\x80\x04" + bytes(1 << 16))  # inflates past the limit
    try:
        with running_processor(config) as running:
            base = running.http_endpoint
            too_big = post(f"{base}/v1/metrics", bytes(65 * 1024))
            inflated = post(f"{base}/v1/logs", bomb, {"Content-Encoding": "gzip"})
            truncated = post(f"{base}/v1/metrics", metrics_body()[:-3])
            not_gzip = post(f"{base}/v1/logs", b"plain", {"Content-Encoding": "gzip"})
            text = post(f"{base}/v1/metrics", b"{}", {"Content-Type": "text/plain"})
            m = running.scrape()
    finally:
        sink.close()
    assert [r[0] for r in (too_big, inflated, truncated, not_gzip, text)] == [413, 413, 400, 400, 415]
    assert sink.received == []
    assert export_requests(m, "http") == {"too_large": 2, "invalid": 2, "unsupported": 1}


def test_a_grpc_message_over_the_size_limit_is_refused_by_grpc() -> None:
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"max_recv_msg_size_mib": 1}}}}}
    with running_processor(config) as running, grpc.insecure_channel(running.grpc_endpoint) as channel:
        export = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        with pytest.raises(grpc.RpcError) as refused:
            export(bytes(2 << 20), timeout=5)
        assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert export(metrics_body(), timeout=5) == b""
        m = wait_for(running, "apiusage_export_requests_total", 1, transport="grpc", outcome="cancelled")
    assert export_requests(m, "grpc") == {"cancelled": 1, "metrics_not_forwarded": 1}


def test_over_the_memory_limit_metrics_are_refused_retryably() -> None:
    limiter = {"limit_mib": 2, "spike_limit_mib": 1, "check_interval": "10ms"}
    with running_processor({"processors": {"memory_limiter": limiter}}) as running:
        wait_for(running, "apiusage_memory_over_limit", 1)
        status, headers, _ = post(f"{running.http_endpoint}/v1/metrics", metrics_body())
        m = running.scrape()
    assert (status, headers["Retry-After"]) == (503, "5")
    assert export_requests(m, "http") == {"memory_limit": 1}


def test_without_a_valid_token_nothing_is_forwarded() -> None:
    sink = OtlpSink()
    try:
        with running_processor({**AUTH, "exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            url = f"{running.http_endpoint}/v1/metrics"
            none = post(url, metrics_body())
            wrong = post(url, metrics_body(), {"Authorization": "Bearer not-a-token-at-all-000"})
            metric_exporter, log_exporter = exporters("grpc", running)
            assert metric_exporter.export(sdk_metrics()) is MetricExportResult.FAILURE
            metric_exporter.shutdown()
            m = running.scrape()
    finally:
        sink.close()
    assert (none[0], wrong[0]) == (401, 401)
    assert sink.received == []
    assert export_requests(m, "http") == {"unauthenticated": 2}
    assert export_requests(m, "grpc") == {"unauthenticated": 1}


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_service_bound_token_forwards_its_own_service_only(transport: str) -> None:
    sink = OtlpSink()
    bearer = {"authorization": f"Bearer {TOKEN}"}
    try:
        with running_processor({**AUTH, "exporters": {"otlp": {"endpoint": sink.endpoint}}}) as running:
            metric_exporter, log_exporter = exporters(transport, running, headers=bearer)
            assert metric_exporter.export(sdk_metrics("orders-api")) is MetricExportResult.SUCCESS
            assert log_exporter.export(sdk_logs(3, "orders-api")) is LogRecordExportResult.SUCCESS
            assert metric_exporter.export(sdk_metrics("billing-api")) is MetricExportResult.FAILURE
            assert log_exporter.export(sdk_logs(3, "billing-api")) is LogRecordExportResult.FAILURE
            metric_exporter.shutdown()
            log_exporter.shutdown()
            got = sink.wait(2)
            m = running.scrape()
    finally:
        sink.close()
    assert [r.path for r in got] == ["/v1/metrics", "/v1/logs"]
    assert log_bodies(got[1].message()) == [f"order {i} placed" for i in range(3)]
    assert export_requests(m, transport) == {
        "metrics_forwarded": 1,
        "logs_forwarded": 1,
        "unauthorized_service": 2,
    }


def test_a_service_bound_token_is_checked_in_json_bodies_too() -> None:
    def logs(service: str) -> bytes:
        resource = {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}
        return json.dumps({"resourceLogs": [{"resource": resource, "scopeLogs": []}]}).encode()

    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"}
    with running_processor(AUTH) as running:
        url = f"{running.http_endpoint}/v1/logs"
        own = post(url, logs("orders-api"), headers)
        other = post(url, logs("billing-api"), headers)
        broken = post(url, b'{"resourceLogs": [', headers)
        m = running.scrape()
    assert own[::2] == (200, b"{}")
    assert other[0] == 403
    assert json.loads(other[2]) == {
        "code": 7,
        "message": "1 of 1 resources have a service.name other than 'orders-api', the only service "
        "this token may send for; nothing was forwarded",
    }
    assert broken[0] == 400
    assert export_requests(m, "http") == {"logs_not_forwarded": 1, "unauthorized_service": 1, "invalid": 1}


def test_an_unknown_path_is_still_not_found() -> None:
    with running_processor() as running:
        status, _, body = post(
            f"{running.http_endpoint}/v1/profiles", b"", {"Content-Type": "application/json"}
        )
        m = running.scrape()
    assert status == 404
    assert json.loads(body)["message"] == (
        "no such path '/v1/profiles'; OTLP/HTTP exports go to /v1/traces (metrics to /v1/metrics, "
        "logs to /v1/logs)"
    )
    assert export_requests(m, "http") == {"not_found": 1}


def test_a_grpc_call_without_its_message_is_invalid_and_named_for_its_signal() -> None:
    with running_processor() as running, grpc.insecure_channel(running.grpc_endpoint) as channel:
        export = channel.stream_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
        with pytest.raises(grpc.RpcError) as refused:
            export(iter(()), timeout=5)
        m = running.scrape()
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == "the call ended without an ExportLogsServiceRequest message"
    assert export_requests(m, "grpc") == {"invalid": 1}


def test_signals_left_out_of_the_exporter_are_answered_and_not_forwarded() -> None:
    sink = OtlpSink()
    config = {"exporters": {"otlp": {"endpoint": sink.endpoint, "signals": ["traces"]}}}
    try:
        with running_processor(config) as running:
            base = running.http_endpoint
            assert post(f"{base}/v1/metrics", metrics_body())[0] == 200
            assert post(f"{base}/v1/traces", request_with_spans(1).SerializeToString())[0] == 200
            got = sink.wait(1)
            m = wait_for(running, "apiusage_forwarded_requests_total", 1, signal="traces", outcome="success")
    finally:
        sink.close()
    assert [r.path for r in got] == ["/v1/traces"]
    assert export_requests(m, "http") == {"metrics_not_forwarded": 1, "success": 1}
    assert forwarded(m, "metrics") == {"success": None, "failure": None, "dropped": None}


def test_traces_left_out_are_not_forwarded_while_logs_are() -> None:
    sink = OtlpSink()
    config = {"exporters": {"otlp": {"endpoint": sink.endpoint, "signals": ["logs"]}}}
    try:
        with running_processor(config) as running:
            base = running.http_endpoint
            assert post(f"{base}/v1/traces", request_with_spans(1).SerializeToString())[0] == 200
            log_exporter = exporters("http", running)[1]
            assert log_exporter.export(sdk_logs(2)) is LogRecordExportResult.SUCCESS
            log_exporter.shutdown()
            got = sink.wait(1)
            m = running.wait_processed(1)
    finally:
        sink.close()
    assert [r.path for r in got] == ["/v1/logs"]
    assert export_requests(m, "http") == {"logs_forwarded": 1, "success": 1}
