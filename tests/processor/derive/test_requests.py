"""Deriver: scanned span tuples in, exact ApiRequests and data-quality counts out."""

from __future__ import annotations

import time

from apiusage.processor.config import DataQualityConfig, UsageConfig
from apiusage.processor.derive.requests import SPAN_FIELDS, ApiRequest, Deriver
from apiusage.processor.telemetry import PipelineStats

NOW = time.time_ns()
TID, SID = bytes(range(1, 17)), bytes(range(1, 9))


def span(
    kind: int = 2, start: int = NOW - 50_000_000, end: int = NOW, tracestate: str = "", **fields: object
) -> tuple:
    unknown = set(fields) - set(SPAN_FIELDS)
    assert not unknown, unknown
    return (0, kind, start, end, TID, SID, tracestate, 0, *(fields.get(f) for f in SPAN_FIELDS))


def derive(
    *spans: tuple, config: UsageConfig | None = None, service: object = "orders-api"
) -> tuple[list[ApiRequest], PipelineStats]:
    stats = PipelineStats()
    return Deriver(config or UsageConfig(), stats).derive([(service,)], list(spans)), stats


def test_full_business_context() -> None:
    [r], stats = derive(
        span(
            method="get",
            route="/v1/orders/{id}",
            status_code=200,
            consumer_id="c1",
            plan_tier="pro",
            client_name="orders-sdk",
            client_version="1.2.0",
            api_version="v1",
            feature="orders",
            deprecated=True,
            schema_version=1,
            tracestate="ot=th:8",
        )
    )
    assert r == ApiRequest(
        "orders-api",
        "GET",
        "/v1/orders/{id}",
        "200",
        "pro",
        "true",
        "orders-sdk",
        "1.2.0",
        "v1",
        "orders",
        "c1",
        0.05,
        2.0,
        NOW,
        TID,
        SID,
    )
    assert sum(stats.data_quality_issues.values()) == 0


def test_fallbacks_and_data_quality() -> None:
    [r], stats = derive(
        span(
            method="PROPFIND",
            path="/v1/users/42?key=secret",
            user_agent="orders-cli/0.9 (x)",
            status_code="503",
            deprecated="false",
            schema_version=3,
        ),
        service=None,
    )
    assert r[:11] == (
        "unknown_service",
        "_OTHER",
        "/v1/users/{id}",
        "503",
        "unknown",
        "false",
        "orders-cli",
        "0.9",
        None,
        None,
        None,
    )
    assert {k: v for k, v in stats.data_quality_issues.items() if v} == {
        "missing_route": 1,
        "missing_consumer": 1,
        "unknown_schema_version": 1,
    }


def test_explicit_client_wins_over_user_agent() -> None:
    # The User-Agent's version belongs to its own product, not to the named client.
    [r], _ = derive(
        span(method="GET", route="/x", status_code=200, client_name="sdk", user_agent="other/9.9")
    )
    assert (r.client_name, r.client_version) == ("sdk", "unknown")
    config = UsageConfig(user_agent_fallback=False, default_plan_tier="free")
    [r], _ = derive(span(method="GET", route="/x", status_code=200, user_agent="other/9.9"), config=config)
    assert (r.client_name, r.client_version, r.plan_tier) == ("unknown", "unknown", "free")


def test_non_server_and_non_http_spans_are_ignored_and_counted() -> None:
    requests, stats = derive(
        span(kind=1, method="GET"),
        span(kind=3, method="GET"),
        span(method=None, route="/x"),
        span(method="GET", route="/x"),
    )
    assert len(requests) == 1
    assert dict(stats.spans_ignored) == {"not_server": 2, "not_http": 1}


def test_timestamps_checked_but_kept() -> None:
    day = 86_400 * 10**9
    config = UsageConfig(data_quality=DataQualityConfig(max_future_skew=60, max_past_age=86_400))
    requests, stats = derive(
        span(method="GET", route="/x", status_code=200, start=NOW, end=NOW - 1),
        span(method="GET", route="/x", status_code=200, start=NOW + day, end=NOW + day),
        span(method="GET", route="/x", status_code=200, start=NOW - 2 * day, end=NOW - 2 * day),
        span(method="GET", route="/x"),
        config=config,
    )
    assert [r.duration for r in requests] == [-1.0, 0.0, 0.0, 0.05]
    assert [r.status_code for r in requests] == ["200", "200", "200", "unknown"]
    assert {k: v for k, v in stats.data_quality_issues.items() if v} == {
        "end_before_start": 1,
        "timestamp_future": 1,
        "timestamp_past": 1,
        "missing_consumer": 4,
        "missing_status_code": 1,
    }


def test_non_string_attribute_values_become_text() -> None:
    [r], _ = derive(
        span(
            method="GET",
            route=7,
            status_code=200.0,
            plan_tier=3,
            client_name=True,
            client_version=2.5,
            consumer_id=99,
            feature=False,
            api_version=1,
        )
    )
    assert r[:11] == ("orders-api", "GET", "7", "200", "3", "false", "True", "2.5", "1", "false", "99")
