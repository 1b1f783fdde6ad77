"""TLS (with and without client certificates) and bearer tokens on the receivers and /metrics,
over real handshakes with certificates made for the test."""

from __future__ import annotations

import ssl
import subprocess
import urllib.error
import urllib.request

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from tests.support.otlp import request_with_spans
from tests.support.processor import apiusage_command, get, running_processor, sample
from tests.support.tls import Certs, make_certs

TOKEN = "orders-token-0123456789abcdef"
ANY_TOKEN = "collector-token-0123456789abcdef"
METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def tls(certs: Certs, client_ca: bool = False) -> dict:
    out = {"cert_file": str(certs.server_cert), "key_file": str(certs.server_key)}
    if client_ca:
        out["client_ca_file"] = str(certs.ca)
    return out


def post(
    url: str, body: bytes, context: ssl.SSLContext | None = None, token: str | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/x-protobuf"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(f"{url}/v1/traces", data=body, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5, context=context) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def client_context(certs: Certs, with_cert: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(certs.ca))
    if with_cert:
        context.load_cert_chain(str(certs.client_cert), str(certs.client_key))
    return context


def test_https_receiver_with_a_real_handshake(certs: Certs) -> None:
    config = {"receivers": {"otlp": {"protocols": {"http": {"tls": tls(certs)}}}}}
    with running_processor(config) as running:
        url = running.http_endpoint.replace("http://", "https://")
        body = request_with_spans(3).SerializeToString()
        assert post(url, body, client_context(certs)) == (200, b"")
        with pytest.raises(urllib.error.URLError):  # a client that does not trust our CA
            post(url, body, ssl.create_default_context(cafile=str(certs.other_ca)))
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP to a TLS port
            post(running.http_endpoint, body)
        running.wait_processed(3)


def test_client_certificates_are_required_when_configured(certs: Certs) -> None:
    config = {"receivers": {"otlp": {"protocols": {"http": {"tls": tls(certs, client_ca=True)}}}}}
    with running_processor(config) as running:
        url = running.http_endpoint.replace("http://", "https://")
        body = request_with_spans(2).SerializeToString()
        with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
            post(url, body, client_context(certs))
        assert post(url, body, client_context(certs, with_cert=True)) == (200, b"")
        running.wait_processed(2)


def test_grpc_tls_with_the_sdk_exporter(certs: Certs) -> None:
    config = {"receivers": {"otlp": {"protocols": {"grpc": {"tls": tls(certs)}}}}}
    with running_processor(config) as running:
        credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes())
        exporter = GrpcExporter(endpoint=running.grpc_endpoint, credentials=credentials)
        provider = TracerProvider(resource=Resource.create({"service.name": "orders-api"}))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        provider.get_tracer("t").start_span(
            "GET /x",
            kind=SpanKind.SERVER,
            attributes={"http.request.method": "GET", "http.route": "/x", "http.response.status_code": 200},
        ).end()
        provider.shutdown()
        m = running.wait_processed(1)
        assert (
            sample(
                m,
                "api_requests_total",
                service="orders-api",
                method="GET",
                route="/x",
                status_code="200",
                plan_tier="unknown",
                deprecated="false",
            )
            == 1
        )


AUTH = {
    "receivers": {
        "otlp": {"auth": {"tokens": [{"token": TOKEN, "service": "orders-api"}, {"token": ANY_TOKEN}]}}
    }
}


def test_bearer_tokens_on_http(tmp_path) -> None:
    with running_processor(AUTH) as running:
        body = request_with_spans(2).SerializeToString()
        status, reply = post(running.http_endpoint, body)
        assert status == 401
        status, _ = post(running.http_endpoint, body, token="wrong-token-0123456789abcdef")
        assert status == 401
        assert post(running.http_endpoint, body, token=TOKEN) == (200, b"")
        # a service-bound token cannot report for another service
        other = request_with_spans(3, service="billing-api").SerializeToString()
        status, reply = post(running.http_endpoint, other, token=TOKEN)
        response = ExportTraceServiceResponse.FromString(reply)
        assert (status, response.partial_success.rejected_spans) == (200, 3)
        assert response.partial_success.error_message == (
            "3 of 3 spans rejected: their service.name is not 'orders-api', the only service "
            "this token may send for"
        )
        assert post(running.http_endpoint, other, token=ANY_TOKEN) == (200, b"")
        m = running.wait_processed(5)
        assert sample(m, "apiusage_export_requests_total", transport="http", outcome="unauthenticated") == 2
        assert sample(m, "apiusage_spans_rejected_total", reason="unauthorized_service") == 3


def test_bearer_tokens_on_grpc() -> None:
    with running_processor(AUTH) as running:
        channel = grpc.insecure_channel(running.grpc_endpoint)
        export = channel.unary_unary(
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            request_serializer=ExportTraceServiceRequest.SerializeToString,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as info:
            export(request_with_spans(1), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = export(request_with_spans(2), timeout=5, metadata=[("authorization", f"Bearer {TOKEN}")])
        assert reply == ExportTraceServiceResponse()
        channel.close()
        running.wait_processed(2)


def test_metrics_behind_a_token_from_a_file_health_stays_open(tmp_path) -> None:
    secret = tmp_path / "metrics.token"
    secret.write_text(METRICS_TOKEN + "\n")
    config = {"exporters": {"prometheus": {"auth": {"token_file": str(secret)}}}}
    with running_processor(config) as running:
        base = running.metrics_url.removesuffix("/metrics")
        assert get(running.metrics_url)[0] == 401
        status, body, _ = get(running.metrics_url, {"Authorization": f"Bearer {METRICS_TOKEN}"})
        assert status == 200 and b"apiusage_build_info" in body
        assert get(f"{base}/healthz")[0] == 200 and get(f"{base}/readyz")[0] == 200


def test_secrets_are_never_logged_and_bad_ones_stop_start_up(tmp_path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"""
receivers: {{otlp: {{protocols: {{http: {{endpoint: "127.0.0.1:0"}}}},
            auth: {{tokens: [{{token: "{TOKEN}"}}]}}}}}}
exporters: {{prometheus: {{endpoint: "127.0.0.1:0",
             auth: {{token_file: "{tmp_path / "missing.token"}"}}}}}}
state: {{sqlite: {{path: "{tmp_path / "s.db"}"}}}}
""")
    result = subprocess.run(
        [*apiusage_command(), "--log-level", "DEBUG", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.endswith(
        f"exporters.prometheus.auth.token_file: no such file: {tmp_path / 'missing.token'}\n"
    )
    assert TOKEN not in result.stdout + result.stderr
