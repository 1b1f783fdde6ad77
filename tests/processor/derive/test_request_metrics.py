"""Aggregation into bounded, expiring series: exact values, overflow folding and TTL."""

from __future__ import annotations

import time

from apiusage.processor.config import LimitsConfig
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.derive.series import OVERFLOW_VALUE, sanitize_label_value
from apiusage.processor.telemetry import PipelineStats

TID, SID = bytes(16), bytes(8)


def req(
    route: str = "/v1/orders",
    code: str = "200",
    duration: float = 0.02,
    weight: float = 1.0,
    plan: str = "pro",
    deprecated: str = "false",
    client: tuple[str, str] = ("sdk", "1.0"),
    service: str = "orders",
) -> ApiRequest:
    return ApiRequest(
        service,
        "GET",
        route,
        code,
        plan,
        deprecated,
        *client,
        None,
        None,
        "c1",
        duration,
        weight,
        0,
        TID,
        SID,
    )


def metrics(**limits: object) -> tuple[RequestMetrics, PipelineStats]:
    stats = PipelineStats()
    return RequestMetrics(LimitsConfig(**limits), (0.01, 0.1), stats), stats


def test_weighted_counts_and_histogram() -> None:
    m, _ = metrics()
    m.consume(
        [
            req(weight=2.0),
            req(duration=0.5),
            req(code="503", duration=0.005),
            req(duration=-1.0),
            req(deprecated="true", client=("old", "0.1")),
        ]
    )
    snap = m.snapshot()
    assert snap.counters["api_requests"] == {
        ("orders", "GET", "/v1/orders", "200", "pro", "false"): 4.0,
        ("orders", "GET", "/v1/orders", "503", "pro", "false"): 1.0,
        ("orders", "GET", "/v1/orders", "200", "pro", "true"): 1.0,
    }
    assert snap.counters["api_client_requests"] == {
        ("orders", "sdk", "1.0", "2xx"): 4.0,
        ("orders", "sdk", "1.0", "5xx"): 1.0,
        ("orders", "old", "0.1", "2xx"): 1.0,
    }
    assert snap.counters["api_deprecated_requests"] == {
        ("orders", "GET", "/v1/orders", "pro", "old", "0.1"): 1.0
    }
    buckets, count, total, _ = snap.histograms[("orders", "GET", "/v1/orders", "pro")]
    # the span whose end precedes its start is counted as a request but not observed
    assert (buckets, count) == ([1.0, 3.0, 1.0], 5.0)
    assert abs(total - (0.04 + 0.5 + 0.005 + 0.02)) < 1e-12


def test_label_values_past_the_limit_fold_into_other() -> None:
    m, stats = metrics(max_label_values={"route": 2})
    m.consume([req(route="/a"), req(route="/b"), req(route="/c"), req(route="/d", weight=3.0)])
    m.consume([req(route="/a"), req(route="/e")])
    counters = m.snapshot().counters["api_requests"]
    assert {k[2]: v for k, v in counters.items()} == {"/a": 2.0, "/b": 1.0, OVERFLOW_VALUE: 5.0}
    assert stats.label_overflow[("api_requests", "route")] == 5.0
    assert stats.label_overflow[("api_deprecated_requests", "route")] == 0
    assert stats.label_overflow[("api_request_duration_seconds", "route")] == 5.0


def test_idle_series_expire_and_free_their_label_values() -> None:
    m, _ = metrics(max_label_values={"route": 1}, series_ttl=1)
    m.consume([req(route="/old")])
    m._sweep(time.monotonic() + 5)  # as if 5 s passed with no traffic on /old
    m.consume([req(route="/new")])
    snap = m.snapshot()
    assert [k[2] for k in snap.counters["api_requests"]] == ["/new"]
    assert snap.series_counts == {
        "api_requests": 1,
        "api_client_requests": 1,
        "api_deprecated_requests": 0,
        "api_request_duration_seconds": 1,
        "api_client_endpoint_requests": 1,  # /old expired here too
        "api_release_requests": 0,  # no service.version
        "api_release_request_duration_seconds": 0,
    }


def test_label_values_are_sanitized_and_capped() -> None:
    assert sanitize_label_value("a\nb\x00c", 128) == "a b c"
    assert sanitize_label_value("x" * 200, 10) == "xxxxxxxxx…"
    assert sanitize_label_value("bad \udcff surrogate", 128) == "bad   surrogate"
    assert sanitize_label_value("c1\x85 and\u2028line", 128) == "c1  and line"
    m, _ = metrics(max_label_length=16)
    m.consume([req(route="/" + "r" * 40 + "\t")])
    [key] = m.snapshot().counters["api_requests"]
    assert key[2] == "/rrrrrrrrrrrrrr…"


def test_a_folded_key_counts_its_overflow_at_every_batch() -> None:
    # Keys whose labels all fit are remembered with their cells; a folding one never is.
    m, stats = metrics(max_label_values={"client_name": 1})
    for _ in range(3):
        m.consume([req(client=("a", "1")), req(client=("b", "1"), weight=2.0)])
    c = m.snapshot().counters
    assert c["api_client_requests"] == {
        ("orders", "a", "1", "2xx"): 3.0,
        ("orders", OVERFLOW_VALUE, "1", "2xx"): 6.0,
    }
    assert c["api_requests"] == {("orders", "GET", "/v1/orders", "200", "pro", "false"): 9.0}
    assert stats.label_overflow[("api_client_requests", "client_name")] == 6.0
    assert stats.label_overflow[("api_client_endpoint_requests", "client_name")] == 6.0
    assert stats.label_overflow[("api_deprecated_requests", "client_name")] == 0.0


def test_remembered_cells_are_forgotten_when_series_expire() -> None:
    m, _ = metrics(series_ttl=1)
    m.consume([req(route="/a")])
    m._sweep(time.monotonic() + 5)  # /a expires
    m.consume([req(route="/a", weight=2.0)])
    assert m.snapshot().counters["api_requests"] == {("orders", "GET", "/a", "200", "pro", "false"): 2.0}
    assert m.snapshot().counters["api_client_endpoint_requests"] == {
        ("orders", "sdk", "GET", "/a", "2xx"): 2.0
    }
