"""The design families on /metrics: both exposition formats parse, with exact values and escaping."""

from __future__ import annotations

from apiusage.processor.config import DEFAULT_SIZE_BUCKETS, LimitsConfig
from apiusage.processor.derive.design_metrics import COUNTERS, HISTOGRAMS, DesignMetrics
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.exporters.exposition import HELP, exposition, render_design_metrics
from apiusage.processor.exporters.prometheus import build_registry
from apiusage.processor.telemetry import PipelineStats
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_families
from prometheus_client.parser import text_string_to_metric_families

from tests.support.processor import parse_metrics, sample

OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def request(**design: object) -> ApiRequest:
    base = ApiRequest(
        "orders",
        "POST",
        "/v2/orders",
        "400",
        "pro",
        "false",
        "sdk",
        "1",
        None,
        None,
        None,
        0.02,
        1.5,
        0,
        bytes(16),
        bytes(8),
    )
    return base._replace(**design)  # type: ignore[arg-type]


def filled(weight: float = 1.5) -> DesignMetrics:
    m = DesignMetrics(LimitsConfig(), (0.1,), DEFAULT_SIZE_BUCKETS, PipelineStats())
    m.consume(
        [
            request(
                query_parameters=('we"ird\\name',),
                validation_errors=(("body.a.b", "missing"),),
                request_size=100,
                client_region="DE",
                weight=weight,
            )
        ]
    )
    return m


def test_text_format_has_every_family_and_exact_values() -> None:
    text = render_design_metrics(filled().snapshot(), openmetrics=False)
    names = {f.name for f in text_string_to_metric_families(text)}
    assert names == set(COUNTERS) | set(HISTOGRAMS)
    assert set(HELP) >= names
    m = parse_metrics(text)
    labels = dict(service="orders", method="POST", route="/v2/orders")
    assert (
        sample(m, "api_parameter_requests_total", **labels, location="query", parameter='we"ird\\name') == 1.5
    )
    assert (
        sample(m, "api_validation_errors_total", **labels, location="body", field="a.b", error_type="missing")
        == 1.5
    )
    assert sample(m, "api_request_body_size_bytes_bucket", **labels, le="64.0") == 0
    assert sample(m, "api_request_body_size_bytes_bucket", **labels, le="256.0") == 1.5
    assert sample(m, "api_request_body_size_bytes_bucket", **labels, le="+Inf") == 1.5
    assert sample(m, "api_request_body_size_bytes_sum", **labels) == 150
    region = dict(service="orders", client_region="DE", server_region="unknown", status_class="4xx")
    assert sample(m, "api_region_requests_total", **region) == 1.5
    assert (
        sample(
            m, "api_region_request_duration_seconds_bucket", service="orders", client_region="DE", le="0.1"
        )
        == 1.5
    )
    assert 'parameter="we\\"ird\\\\name"' in text


def test_openmetrics_parses_strictly_with_units() -> None:
    # Whole weights: the strict parser refuses fractional bucket counts (sampled spans can make them,
    # in api_request_duration_seconds too; Prometheus reads them).
    body, content_type = exposition(build_registry(), None, OPENMETRICS, filled(weight=2.0))
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in om_families(body.decode())}
    assert families["api_request_body_size_bytes"].unit == "bytes"
    assert families["api_region_request_duration_seconds"].unit == "seconds"
    assert families["api_parameter_requests"].type == "counter"
    assert families["api_errors"].samples == []  # no error.type sent: the family, without series


def test_empty_design_metrics_render_only_headers() -> None:
    m = DesignMetrics(LimitsConfig(), (0.1,), DEFAULT_SIZE_BUCKETS, PipelineStats())
    text = render_design_metrics(m.snapshot(), openmetrics=False)
    assert [line for line in text.splitlines() if line and not line.startswith("#")] == []
