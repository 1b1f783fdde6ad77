"""The release families: per service.version counts and latency, and the bounded version window."""

from __future__ import annotations

import pytest
from apiusage.processor.config import ConfigError, LimitsConfig, parse_config
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.derive.series import OVERFLOW_VALUE
from apiusage.processor.exporters.exposition import render_request_metrics
from apiusage.processor.telemetry import PipelineStats

TID, SID = bytes(16), bytes(8)


def req(
    version: str | None,
    code: str = "200",
    duration: float = 0.02,
    weight: float = 1.0,
    route: str = "/v1/orders",
    service: str = "orders",
) -> ApiRequest:
    return ApiRequest(
        service, "GET", route, code, "pro", "false", "sdk", "1.0", None, None, "c1",
        duration, weight, 0, TID, SID, service_version=version,
    )  # fmt: skip


def metrics(**limits: object) -> tuple[RequestMetrics, PipelineStats]:
    stats = PipelineStats()
    return RequestMetrics(LimitsConfig(**limits), (0.01, 0.1), stats), stats


def test_weighted_counts_and_histogram_per_version() -> None:
    m, stats = metrics()
    m.consume(
        [
            req("1.4.2", weight=2.0),
            req("1.4.2", code="503", duration=0.5),
            req("1.5.0", code="404", duration=0.005),
            req("1.5.0", duration=-1.0),  # counted, not observed
            req(None),  # no service.version: no release series
        ]
    )
    snap = m.snapshot()
    assert snap.counters["api_release_requests"] == {
        ("orders", "1.4.2", "GET", "/v1/orders", "2xx"): 2.0,
        ("orders", "1.4.2", "GET", "/v1/orders", "5xx"): 1.0,
        ("orders", "1.5.0", "GET", "/v1/orders", "4xx"): 1.0,
        ("orders", "1.5.0", "GET", "/v1/orders", "2xx"): 1.0,
    }
    assert snap.release_histograms == {
        ("orders", "1.4.2"): ([0.0, 2.0, 1.0], 3.0, 0.54),
        ("orders", "1.5.0"): ([1.0, 0.0, 0.0], 1.0, 0.005),
    }
    # The request families are unchanged by the version: one series, every request in it.
    assert snap.counters["api_requests"] == {
        ("orders", "GET", "/v1/orders", "200", "pro", "false"): 4.0,
        ("orders", "GET", "/v1/orders", "503", "pro", "false"): 1.0,
        ("orders", "GET", "/v1/orders", "404", "pro", "false"): 1.0,
    }
    buckets, count, _, _ = snap.histograms[("orders", "GET", "/v1/orders", "pro")]
    assert (buckets, count) == ([1.0, 3.0, 1.0], 5.0)
    # a second batch hits the cached cells
    m.consume([req("1.4.2", weight=3.0)])
    series = m.snapshot().counters["api_release_requests"]
    assert series[("orders", "1.4.2", "GET", "/v1/orders", "2xx")] == 5.0
    assert stats.label_overflow == {}


def test_exposition_lines() -> None:
    m, _ = metrics()
    m.consume([req("1.5.0", duration=0.05), req("1.5.0", code="500", duration=0.2)])
    text = render_request_metrics(m.snapshot(), openmetrics=False)
    lines = [line for line in text.splitlines() if "api_release" in line]
    assert lines == [
        "# HELP api_release_requests_total API requests per release (resource service.version), endpoint "
        "and status class.",
        "# TYPE api_release_requests_total counter",
        'api_release_requests_total{service="orders",version="1.5.0",method="GET",route="/v1/orders",'
        'status_class="2xx"} 1.0',
        'api_release_requests_total{service="orders",version="1.5.0",method="GET",route="/v1/orders",'
        'status_class="5xx"} 1.0',
        "# HELP api_release_request_duration_seconds Server-side duration of API requests per release "
        "(service.version).",
        "# TYPE api_release_request_duration_seconds histogram",
        'api_release_request_duration_seconds_bucket{service="orders",version="1.5.0",le="0.01"} 0.0',
        'api_release_request_duration_seconds_bucket{service="orders",version="1.5.0",le="0.1"} 1.0',
        'api_release_request_duration_seconds_bucket{service="orders",version="1.5.0",le="+Inf"} 2.0',
        'api_release_request_duration_seconds_count{service="orders",version="1.5.0"} 2.0',
        'api_release_request_duration_seconds_sum{service="orders",version="1.5.0"} 0.25',
    ]


def test_newest_versions_keep_their_series_for_ever() -> None:
    """1,000 releases one after the other: the newest max_releases are live, each new one gets its
    own series (never __other__), the pushed-out ones leave and their late traffic is counted."""
    m, stats = metrics(max_releases=3)
    for i in range(1000):
        m.consume([req(f"1.{i}.0"), req("other-service-1", service="billing")])
    snap = m.snapshot()
    versions = sorted({k[1] for k in snap.counters["api_release_requests"] if k[0] == "orders"})
    assert versions == ["1.997.0", "1.998.0", "1.999.0"]
    assert sorted(snap.release_histograms) == [
        ("billing", "other-service-1"),
        ("orders", "1.997.0"),
        ("orders", "1.998.0"),
        ("orders", "1.999.0"),
    ]
    assert m.releases_retired == 997
    assert snap.series_counts["api_release_requests"] == 4
    assert stats.label_overflow == {}
    # Late traffic of a pushed-out version folds into __other__, counted; it pushes nothing out.
    m.consume([req("1.3.0", weight=2.0), req("1.3.0", weight=5.0, code="500")])
    m.consume([req("1.3.0", weight=1.0)])  # again, past the combo cache
    snap = m.snapshot()
    series = snap.counters["api_release_requests"]
    assert series[("orders", OVERFLOW_VALUE, "GET", "/v1/orders", "2xx")] == 3.0
    assert series[("orders", OVERFLOW_VALUE, "GET", "/v1/orders", "5xx")] == 5.0
    assert snap.release_histograms[("orders", OVERFLOW_VALUE)][1] == 8.0
    assert ("orders", "1.997.0") in snap.release_histograms
    assert stats.label_overflow == {("api_release_requests", "version"): 8.0}


@pytest.mark.slow
def test_hostile_versions() -> None:
    """100,000 distinct versions in one batch, control characters and long values: bounded."""
    m, _ = metrics(max_releases=5)
    # (The deriver sanitises service.version; some raw control characters and long values too.)
    m.consume([req(f"v{i}" if i % 100 else f"v{i}\x00\n" + "x" * 300) for i in range(100_000)])
    snap = m.snapshot()
    assert snap.series_counts["api_release_requests"] == 5
    # Versions pushed out within the batch observe their latency in __other__ (weight not counted
    # twice: the overflow counts the requests of versions already pushed out at their count).
    assert snap.series_counts["api_release_request_duration_seconds"] == 6
    assert snap.release_histograms[("orders", OVERFLOW_VALUE)][1] == 99_995.0
    assert m.releases_retired == 99_995
    for key in snap.counters["api_release_requests"]:
        assert key[1].isprintable() and len(key[1]) <= 128
    assert sum(snap.counters["api_release_requests"].values()) == 5.0
    assert sum(snap.counters["api_requests"].values()) == 100_000.0


def test_config_bounds_the_releases_and_the_version_label() -> None:
    config = parse_config({"processors": {"limits": {"max_label_values": {"version": 2}, "max_releases": 3}}})
    limits = config.processors.limits
    assert (limits.max_releases, limits.label_limit("version")) == (3, 2)
    assert LimitsConfig().max_releases == 5 and LimitsConfig().label_limit("version") == 500
    with pytest.raises(ConfigError) as info:
        parse_config({"processors": {"limits": {"max_releases": 1}}})
    assert str(info.value) == "(inline) is invalid:\n  processors.limits.max_releases: must be at least 2"
    # The family-wide limit applies across services: two versions, then __other__ (counted).
    stats = PipelineStats()
    m = RequestMetrics(limits, (0.01, 0.1), stats)
    m.consume([req("1.0", service="a"), req("2.0", service="b"), req("3.0", service="c")])
    assert sorted(k[:2] for k in m.snapshot().counters["api_release_requests"]) == [
        ("a", "1.0"),
        ("b", "2.0"),
        ("c", OVERFLOW_VALUE),
    ]
    assert stats.label_overflow == {
        ("api_release_requests", "version"): 1.0,
        ("api_release_request_duration_seconds", "version"): 1.0,
    }
