"""API design families: exact weighted values, bucket placement, label bounds and expiry."""

from __future__ import annotations

import time

from apiusage.processor.config import DEFAULT_SIZE_BUCKETS, LimitsConfig
from apiusage.processor.derive.design_metrics import DesignMetrics
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.derive.series import OVERFLOW_VALUE
from apiusage.processor.telemetry import PipelineStats

TID, SID = bytes(16), bytes(8)
LATENCY = (0.01, 0.1)


def req(
    route: str = "/v2/orders",
    code: str = "200",
    duration: float = 0.02,
    weight: float = 1.0,
    client: str = "sdk",
    service: str = "orders",
    **design: object,
) -> ApiRequest:
    return ApiRequest(
        service,
        "POST",
        route,
        code,
        "pro",
        "false",
        client,
        "1.0",
        None,
        None,
        "c1",
        duration,
        weight,
        0,
        TID,
        SID,
    )._replace(**design)


def metrics(**limits: object) -> tuple[DesignMetrics, PipelineStats]:
    stats = PipelineStats()
    return DesignMetrics(LimitsConfig(**limits), LATENCY, DEFAULT_SIZE_BUCKETS, stats), stats


def test_default_size_buckets_are_powers_of_four_from_64_bytes_to_64_mib() -> None:
    assert DEFAULT_SIZE_BUCKETS == (
        64.0,
        256.0,
        1024.0,
        4096.0,
        16384.0,
        65536.0,
        262144.0,
        1048576.0,
        4194304.0,
        16777216.0,
        67108864.0,
    )


def test_size_histograms_place_each_size_in_its_bucket() -> None:
    m, _ = metrics()
    sizes = [0, 64, 65, 256, 1 << 20, (1 << 20) + 1, 1 << 26, (1 << 26) + 1, 10**12]
    m.consume([req(request_size=s, response_size=s, weight=2.0 if s == 0 else 1.0) for s in sizes])
    m.consume([req(request_size=None, response_size=100)])  # a response size alone
    snap = m.snapshot()
    key = ("orders", "POST", "/v2/orders")
    counts, count, total = snap.histograms["api_request_body_size_bytes"][key]
    # le=64 holds 0 (weight 2) and exactly 64; 65 goes to le=256 with 256 itself; +Inf the last two.
    assert counts == [3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 2.0]
    assert count == 10.0
    assert total == float(sum(sizes))
    counts, count, _ = snap.histograms["api_response_body_size_bytes"][key]
    assert counts[1] == 3.0 and count == 11.0
    assert snap.buckets["api_request_body_size_bytes"] == DEFAULT_SIZE_BUCKETS


def test_parameters_validation_errors_and_errors_exactly() -> None:
    m, _ = metrics()
    m.consume(
        [
            req(query_parameters=("limit", "offset"), body_fields=("sku",), weight=4.0),
            req(query_parameters=("limit",), body_fields=("limit",)),
            req(
                code="422",
                validation_errors=(
                    ("body.quantity", "int_parsing"),
                    ("body", "missing"),
                    ("query.limit", "missing"),
                ),
            ),
            req(code="422", validation_errors=(("body.items.0.quantity", "int_parsing"),)),
            req(code="500", error_type="TimeoutError", weight=2.0),
            req(code="503", error_type="TimeoutError"),
            req(),  # carries nothing of schema 2: counted only by the client and region families
        ]
    )
    c = m.snapshot().counters
    ep = ("orders", "POST", "/v2/orders")
    assert c["api_parameter_requests"] == {
        (*ep, "query", "limit"): 5.0,
        (*ep, "query", "offset"): 4.0,
        (*ep, "body", "sku"): 4.0,
        (*ep, "body", "limit"): 1.0,  # the same name in the body is another parameter
    }
    assert c["api_validation_errors"] == {
        (*ep, "body", "quantity", "int_parsing"): 1.0,
        (*ep, "body", "", "missing"): 1.0,
        (*ep, "query", "limit", "missing"): 1.0,
        (*ep, "body", "items.0.quantity", "int_parsing"): 1.0,
    }
    assert c["api_errors"] == {(*ep, "TimeoutError"): 3.0}


def test_region_families_with_unknown_for_missing_regions() -> None:
    m, _ = metrics()
    m.consume(
        [
            req(client_region="DE", server_region="eu-west-1", duration=0.005),
            req(client_region="DE", server_region="eu-west-1", code="404", duration=0.05, weight=3.0),
            req(server_region="eu-west-1", duration=0.5),
            req(duration=-1.0),  # end before start: counted, no latency
            req(service="billing", client_region="US"),
        ]
    )
    snap = m.snapshot()
    assert snap.counters["api_region_requests"] == {
        ("orders", "DE", "eu-west-1", "2xx"): 1.0,
        ("orders", "DE", "eu-west-1", "4xx"): 3.0,
        ("orders", "unknown", "eu-west-1", "2xx"): 1.0,
        ("orders", "unknown", "unknown", "2xx"): 1.0,
        ("billing", "US", "unknown", "2xx"): 1.0,
    }
    hists = snap.histograms["api_region_request_duration_seconds"]
    assert hists[("orders", "DE")] == ([1.0, 3.0, 0.0], 4.0, 0.005 + 3 * 0.05)
    assert hists[("orders", "unknown")] == ([0.0, 0.0, 1.0], 1.0, 0.5)
    assert hists[("billing", "US")] == ([0.0, 1.0, 0.0], 1.0, 0.02)
    assert set(hists) == {("orders", "DE"), ("orders", "unknown"), ("billing", "US")}


def test_client_endpoint_family_comes_from_the_request_counters() -> None:
    stats = PipelineStats()
    m = RequestMetrics(LimitsConfig(), LATENCY, stats)
    m.consume(
        [
            req(client="go-sdk", code="200", weight=2.0),
            req(client="go-sdk", code="201"),
            req(client="go-sdk", code="422"),
            req(client="py-sdk", code="422", route="/v2/orders/{id}"),
            req(client="py-sdk", code="999"),
        ]
    )
    assert m.snapshot().counters["api_client_endpoint_requests"] == {
        ("orders", "go-sdk", "POST", "/v2/orders", "2xx"): 3.0,
        ("orders", "go-sdk", "POST", "/v2/orders", "4xx"): 1.0,
        ("orders", "py-sdk", "POST", "/v2/orders/{id}", "4xx"): 1.0,
        ("orders", "py-sdk", "POST", "/v2/orders", "unknown"): 1.0,
    }
    assert m.series_counts()["api_client_endpoint_requests"] == 4


def test_100000_distinct_parameter_names_fold_into_other_and_are_counted() -> None:
    m, stats = metrics()
    names = [f"p{i}" for i in range(100_000)]
    routes = [f"/v2/r{i}" for i in range(40)]
    for i in range(0, len(names), 500):  # batches of 500 requests of 1 name each, weight 1
        m.consume(
            [req(route=routes[(i + j) % 40], query_parameters=(n,)) for j, n in enumerate(names[i : i + 500])]
        )
    series = m.snapshot().counters["api_parameter_requests"]
    assert len(series) == 2000 + 40  # the default limit of parameter, and __other__ per route
    others = sum(v for k, v in series.items() if k[4] == OVERFLOW_VALUE)
    assert others == 98_000.0
    assert series[("orders", "POST", "/v2/r39", "query", "p1999")] == 1.0
    assert not any(k[4] == "p2000" for k in series)
    assert stats.label_overflow[("api_parameter_requests", "parameter")] == 98_000.0
    assert m.series_counts()["api_parameter_requests"] == 2040


def test_one_noisy_route_cannot_crowd_out_the_names_of_every_other_route() -> None:
    m, stats = metrics()
    m.consume([req(route="/v2/noisy", query_parameters=(f"id-{i}",)) for i in range(100_000)])
    m.consume([req(route="/v2/orders", query_parameters=("limit", "cursor"), body_fields=("quantity",))])
    c = m.snapshot().counters["api_parameter_requests"]
    ep = ("orders", "POST", "/v2/orders")
    assert c[(*ep, "query", "limit")] == 1.0
    assert c[(*ep, "query", "cursor")] == 1.0
    assert c[(*ep, "body", "quantity")] == 1.0
    noisy = {k: v for k, v in c.items() if k[2] == "/v2/noisy"}
    assert len(noisy) == 101  # max_names_per_route (100) names and __other__
    assert noisy[("orders", "POST", "/v2/noisy", "query", OVERFLOW_VALUE)] == 99_900.0
    assert stats.label_overflow[("api_parameter_requests", "parameter")] == 99_900.0


def test_names_per_route_is_configurable_and_bounds_validation_fields_too() -> None:
    m, stats = metrics(max_names_per_route=2)
    m.consume(
        [
            req(route="/a", validation_errors=((f"body.f{i}", "missing"),), query_parameters=(f"q{i}",))
            for i in range(5)
        ]
        + [req(route="/b", validation_errors=(("body.f4", "missing"),), query_parameters=("q4",))]
    )
    c = m.snapshot().counters
    assert sorted(k[2:] for k in c["api_parameter_requests"]) == [
        ("/a", "query", OVERFLOW_VALUE),
        ("/a", "query", "q0"),
        ("/a", "query", "q1"),
        ("/b", "query", "q4"),  # a name another route folded is still this route's own
    ]
    assert c["api_validation_errors"][("orders", "POST", "/a", "body", OVERFLOW_VALUE, "missing")] == 3.0
    assert c["api_validation_errors"][("orders", "POST", "/b", "body", "f4", "missing")] == 1.0
    assert stats.label_overflow[("api_validation_errors", "field")] == 3.0


def test_expired_series_give_their_place_under_the_per_route_bound_back() -> None:
    stats = PipelineStats()
    limits = LimitsConfig(series_ttl=1, max_names_per_route=1)
    m = DesignMetrics(limits, LATENCY, DEFAULT_SIZE_BUCKETS, stats, sweep_interval=0.05)
    m.consume([req(query_parameters=("old",))])
    time.sleep(1.1)
    m.snapshot()  # a scrape sweeps "old" away
    m.consume([req(query_parameters=("new",))])
    assert list(m.snapshot().counters["api_parameter_requests"]) == [
        ("orders", "POST", "/v2/orders", "query", "new")
    ]
    assert m.tables["api_parameter_requests"]._scope_values == {("orders", "POST", "/v2/orders"): {"new": 1}}


def test_configured_limits_bound_each_new_label() -> None:
    m, stats = metrics(max_label_values={"location": 1, "field": 2, "error_type": 1, "client_region": 1})
    m.consume(
        [
            req(validation_errors=(("body.a", "missing"), ("body.b", "missing"), ("body.c", "missing"))),
            req(validation_errors=(("query.a", "x"),)),
            req(error_type="A"),
            req(error_type="B"),
            req(client_region="DE"),
            req(client_region="FR"),
        ]
    )
    c = m.snapshot().counters
    ep = ("orders", "POST", "/v2/orders")
    assert c["api_validation_errors"] == {
        (*ep, "body", "a", "missing"): 1.0,
        (*ep, "body", "b", "missing"): 1.0,
        (*ep, "body", OVERFLOW_VALUE, "missing"): 1.0,
        (*ep, OVERFLOW_VALUE, "a", OVERFLOW_VALUE): 1.0,  # "a" is a known field already
    }
    assert c["api_errors"] == {(*ep, "A"): 1.0, (*ep, OVERFLOW_VALUE): 1.0}
    assert {k[1] for k in c["api_region_requests"]} == {"unknown", OVERFLOW_VALUE}
    assert stats.label_overflow[("api_validation_errors", "field")] == 1.0
    assert stats.label_overflow[("api_validation_errors", "location")] == 1.0
    assert stats.label_overflow[("api_errors", "error_type")] == 1.0


def test_idle_series_expire_after_the_ttl() -> None:
    stats = PipelineStats()
    m = DesignMetrics(LimitsConfig(series_ttl=1), LATENCY, DEFAULT_SIZE_BUCKETS, stats, sweep_interval=0.05)
    m.consume([req(query_parameters=("old",), request_size=10, error_type="E", client_region="DE")])
    assert m.series_counts()["api_parameter_requests"] == 1
    time.sleep(1.1)
    m.consume([req(query_parameters=("new",))])
    snap = m.snapshot()
    assert list(snap.counters["api_parameter_requests"]) == [("orders", "POST", "/v2/orders", "query", "new")]
    assert snap.counters["api_errors"] == {}
    assert snap.histograms["api_request_body_size_bytes"] == {}
    assert list(snap.histograms["api_region_request_duration_seconds"]) == [("orders", "unknown")]
