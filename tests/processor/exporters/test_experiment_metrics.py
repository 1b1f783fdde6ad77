"""api_experiment_requests_total and api_experiment_request_duration_seconds: the exact text of
both families through prometheus_client's registry and the processor's /metrics encoder, weights,
label bounds and series expiry."""

from __future__ import annotations

import time

import pytest
from apiusage.processor.config import LimitsConfig
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.exporters.experiment_metrics import ExperimentMetrics
from apiusage.processor.exporters.exposition import exposition
from apiusage.processor.telemetry import PipelineStats
from prometheus_client import CollectorRegistry

BUCKETS = (0.05, 0.25, 1.0)
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def x(
    experiment: str = "checkout-v2",
    variant: str = "control",
    status: str = "200",
    duration: float = 0.1,
    weight: float = 1.0,
    service: str = "orders-api",
) -> Exposure:
    return Exposure(
        service,
        experiment,
        variant,
        "POST",
        "/v1/orders",
        status,
        "pro",
        "orders-sdk",
        None,
        "c-1",
        duration,
        weight,
        1_764_000_000_000_000_000,
    )


def render(metrics: ExperimentMetrics, accept: str = "") -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics)
    body, _ = exposition(registry, None, accept)
    return body.decode()


def test_both_families_exact_text_weighted_by_adjusted_count() -> None:
    m = ExperimentMetrics(LimitsConfig(), BUCKETS, PipelineStats())
    m.consume_exposures(
        [
            x(duration=0.01),
            x(duration=0.3, weight=4.0),  # a sampled span standing for 4 requests
            x(variant="treatment", status="404", duration=0.05),  # on a bound: le="0.05"
            x(variant="treatment", status="503", duration=2.0),
            x(variant="treatment", status="unknown", duration=-1.0),  # counted, not observed
        ]
    )
    m.consume_exposures([x(variant="treatment", status="201", duration=0.2)])
    assert render(m) == (
        "# HELP api_experiment_requests_total API requests exposed to an experiment "
        "(experiments.yaml), per variant, weighted.\n"
        "# TYPE api_experiment_requests_total counter\n"
        'api_experiment_requests_total{experiment="checkout-v2",service="orders-api",'
        'status_class="2xx",variant="control"} 5.0\n'
        'api_experiment_requests_total{experiment="checkout-v2",service="orders-api",'
        'status_class="2xx",variant="treatment"} 1.0\n'
        'api_experiment_requests_total{experiment="checkout-v2",service="orders-api",'
        'status_class="4xx",variant="treatment"} 1.0\n'
        'api_experiment_requests_total{experiment="checkout-v2",service="orders-api",'
        'status_class="5xx",variant="treatment"} 1.0\n'
        'api_experiment_requests_total{experiment="checkout-v2",service="orders-api",'
        'status_class="unknown",variant="treatment"} 1.0\n'
        "# HELP api_experiment_request_duration_seconds Server-side duration of API requests "
        "exposed to an experiment, per variant.\n"
        "# TYPE api_experiment_request_duration_seconds histogram\n"
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="0.05",'
        'service="orders-api",variant="control"} 1.0\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="0.25",'
        'service="orders-api",variant="control"} 1.0\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="1.0",'
        'service="orders-api",variant="control"} 5.0\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="+Inf",'
        'service="orders-api",variant="control"} 5.0\n'
        'api_experiment_request_duration_seconds_count{experiment="checkout-v2",'
        'service="orders-api",variant="control"} 5.0\n'
        'api_experiment_request_duration_seconds_sum{experiment="checkout-v2",'
        'service="orders-api",variant="control"} 1.21\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="0.05",'
        'service="orders-api",variant="treatment"} 1.0\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="0.25",'
        'service="orders-api",variant="treatment"} 2.0\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="1.0",'
        'service="orders-api",variant="treatment"} 2.0\n'
        'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",le="+Inf",'
        'service="orders-api",variant="treatment"} 3.0\n'
        'api_experiment_request_duration_seconds_count{experiment="checkout-v2",'
        'service="orders-api",variant="treatment"} 3.0\n'
        'api_experiment_request_duration_seconds_sum{experiment="checkout-v2",'
        'service="orders-api",variant="treatment"} 2.25\n'
    )


def test_openmetrics_text_has_the_unit_and_no_total_in_the_family_name() -> None:
    m = ExperimentMetrics(LimitsConfig(), BUCKETS, PipelineStats())
    m.consume_exposures([x(duration=0.5, weight=2.0)])
    text = render(m, OPENMETRICS)
    head = 'experiment="checkout-v2"'
    tail = 'service="orders-api",variant="control"'
    d = "api_experiment_request_duration_seconds"
    assert text.splitlines() == [
        "# HELP api_experiment_requests API requests exposed to an experiment (experiments.yaml), "
        "per variant, weighted.",
        "# TYPE api_experiment_requests counter",
        f'api_experiment_requests_total{{{head},service="orders-api",status_class="2xx",'
        'variant="control"} 2.0',
        "# HELP api_experiment_request_duration_seconds Server-side duration of API requests exposed "
        "to an experiment, per variant.",
        "# TYPE api_experiment_request_duration_seconds histogram",
        "# UNIT api_experiment_request_duration_seconds seconds",
        f'{d}_bucket{{{head},le="0.05",{tail}}} 0.0',
        f'{d}_bucket{{{head},le="0.25",{tail}}} 0.0',
        f'{d}_bucket{{{head},le="1.0",{tail}}} 2.0',
        f'{d}_bucket{{{head},le="+Inf",{tail}}} 2.0',
        f"{d}_count{{{head},{tail}}} 2.0",
        f"{d}_sum{{{head},{tail}}} 1.0",
        "# EOF",
    ]


def test_no_exposure_yet_gives_empty_families() -> None:
    text = render(ExperimentMetrics(LimitsConfig(), BUCKETS, PipelineStats()))
    assert text == (
        "# HELP api_experiment_requests_total API requests exposed to an experiment "
        "(experiments.yaml), per variant, weighted.\n"
        "# TYPE api_experiment_requests_total counter\n"
        "# HELP api_experiment_request_duration_seconds Server-side duration of API requests "
        "exposed to an experiment, per variant.\n"
        "# TYPE api_experiment_request_duration_seconds histogram\n"
    )


@pytest.mark.slow
def test_experiment_and_variant_are_bounded_by_the_limits_and_the_fold_counted() -> None:
    stats = PipelineStats()
    limits = LimitsConfig(max_label_values={"experiment": 2, "variant": 3})
    m = ExperimentMetrics(limits, BUCKETS, stats)
    m.consume_exposures([x(experiment=f"exp-{i}", weight=2.0) for i in range(5)])
    # 100,000 distinct variants (a flag whose variant is a user id): three places, then __other__.
    m.consume_exposures([x(experiment="exp-0", variant=f"v{i}") for i in range(100_000)])
    counters = {k: c[1] for k, c in m.requests.series.items()}
    assert counters == {
        ("orders-api", "exp-0", "control", "2xx"): 2.0,
        ("orders-api", "exp-1", "control", "2xx"): 2.0,
        ("orders-api", "__other__", "control", "2xx"): 6.0,
        ("orders-api", "exp-0", "v0", "2xx"): 1.0,
        ("orders-api", "exp-0", "v1", "2xx"): 1.0,
        ("orders-api", "exp-0", "__other__", "2xx"): 99_998.0,
    }
    assert len(m.durations.series) == 6
    assert stats.label_overflow == {
        ("api_experiment_requests", "experiment"): 6.0,
        ("api_experiment_request_duration_seconds", "experiment"): 6.0,
        ("api_experiment_requests", "variant"): 99_998.0,
        ("api_experiment_request_duration_seconds", "variant"): 99_998.0,
    }


def test_control_characters_in_labels_are_printable_in_the_text() -> None:
    m = ExperimentMetrics(LimitsConfig(), BUCKETS, PipelineStats())
    m.consume_exposures([x(service='or"ders\napi\x00', variant="con\\trol\x1b")])
    line = [ln for ln in render(m).splitlines() if ln.startswith("api_experiment_requests_total{")]
    assert line == [
        'api_experiment_requests_total{experiment="checkout-v2",service="or\\"ders api ",'
        'status_class="2xx",variant="con\\\\trol "} 1.0'
    ]


def test_idle_series_expire_after_the_series_ttl() -> None:
    m = ExperimentMetrics(LimitsConfig(series_ttl=1), BUCKETS, PipelineStats(), sweep_interval=0.01)  # type: ignore[arg-type]
    m.consume_exposures([x()])
    assert m.series_counts() == {"api_experiment_requests": 1, "api_experiment_request_duration_seconds": 1}
    time.sleep(1.1)
    assert "api_experiment_requests_total{" not in render(m)
    assert m.series_counts() == {"api_experiment_requests": 0, "api_experiment_request_duration_seconds": 0}
