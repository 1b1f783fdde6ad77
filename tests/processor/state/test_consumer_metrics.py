"""The scripted scenario through a running processor: exact business metrics from the state store,
on SQLite and on PostgreSQL shared by two replicas."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from tests.support import usage_scenario as sc
from tests.support.postgres import postgres_server
from tests.support.processor import matching, running_processor, sample

SPANS = sc.SPANS
config = sc.processor_config


def settle(*running) -> list[dict]:
    """Wait for derivation, flush every replica, then read the store as of NOW."""
    for r in running:
        r.processor.state.flush()
    # The replica holding the refresh lease computes and publishes; the others load that.
    for r in sorted(running, key=lambda r: not r.processor.state.health.leader):
        r.processor.state.refresh(now_ms=sc.NOW_MS)
    return [r.scrape() for r in running]


def by(samples, name: str, *labels: str) -> dict[tuple, float]:
    """{label values in the given order: value} for every sample of `name`."""
    return {tuple(dict(lb)[k] for k in labels): v for lb, v in matching(samples, name).items()}


S = sc.SERVICE


def assert_scenario(m) -> None:
    assert by(m, "api_active_consumers", "plan_tier", "window") == {
        ("pro", "1d"): 1,
        ("enterprise", "1d"): 2,
        ("pro", "7d"): 2,
        ("free", "7d"): 1,
        ("enterprise", "7d"): 2,
        ("pro", "30d"): 2,
        ("free", "30d"): 1,
        ("enterprise", "30d"): 2,
    }
    assert by(m, "api_new_consumers_total", "service", "plan_tier") == {
        (S, "pro"): 2,
        (S, "free"): 1,
        (S, "enterprise"): 2,
    }

    def ttfs(suffix: str, **labels: str) -> float | None:
        return sample(m, f"api_time_to_first_success_seconds_{suffix}", service=S, **labels)

    assert ttfs("count", plan_tier="pro") == 2 and ttfs("sum", plan_tier="pro") == 0
    assert ttfs("bucket", plan_tier="pro", le="1.0") == 2
    assert ttfs("count", plan_tier="free") == 1 and ttfs("sum", plan_tier="free") == 7200
    assert ttfs("bucket", plan_tier="free", le="3600.0") == 0
    assert ttfs("bucket", plan_tier="free", le="21600.0") == 1
    assert ttfs("count", plan_tier="enterprise") == 1  # erin; dave never succeeded

    assert by(m, "api_endpoint_consumers", "method", "route", "window") == {
        ("GET", "/v1/orders", "1d"): 2,
        ("GET", "/v1/orders", "7d"): 2,
        ("GET", "/v1/orders", "30d"): 4,
        ("DELETE", sc.V1_DELETE, "7d"): 1,
        ("DELETE", sc.V1_DELETE, "30d"): 2,
        ("DELETE", sc.V2_DELETE, "7d"): 1,
        ("DELETE", sc.V2_DELETE, "30d"): 1,
        ("GET", "/v1/reports", "1d"): 1,
        ("GET", "/v1/reports", "7d"): 1,
        ("GET", "/v1/reports", "30d"): 1,
    }
    assert by(m, "api_feature_consumers", "feature", "window") == {
        ("orders", "1d"): 2,
        ("orders", "7d"): 4,
        ("orders", "30d"): 4,
        ("reports", "1d"): 1,
        ("reports", "7d"): 1,
        ("reports", "30d"): 1,
    }
    assert by(m, "api_feature_adoption_ratio", "feature", "plan_tier", "window") == {
        ("orders", "pro", "1d"): 1.0,
        ("orders", "enterprise", "1d"): 0.5,
        ("orders", "pro", "7d"): 1.0,
        ("orders", "free", "7d"): 1.0,
        ("orders", "enterprise", "7d"): 0.5,
        ("orders", "pro", "30d"): 1.0,
        ("orders", "free", "30d"): 1.0,
        ("orders", "enterprise", "30d"): 0.5,
        ("reports", "enterprise", "1d"): 0.5,
        ("reports", "enterprise", "7d"): 0.5,
        ("reports", "enterprise", "30d"): 0.5,
    }
    assert by(m, "api_client_version_consumers", "client_name", "client_version", "window") == {
        ("orders-sdk", "1.2.0", "1d"): 2,
        ("orders-sdk", "1.2.0", "7d"): 3,
        ("orders-sdk", "1.2.0", "30d"): 3,
        ("orders-sdk", "1.0.0", "7d"): 1,
        ("orders-sdk", "1.0.0", "30d"): 1,
        ("curl", "8.5.0", "1d"): 1,
        ("curl", "8.5.0", "7d"): 1,
        ("curl", "8.5.0", "30d"): 1,
    }
    assert by(m, "api_deprecated_endpoint_consumers", "method", "route", "window") == {
        ("DELETE", sc.V1_DELETE, "1d"): 0,
        ("DELETE", sc.V1_DELETE, "7d"): 1,
        ("DELETE", sc.V1_DELETE, "30d"): 2,
    }
    assert by(m, "api_endpoint_sunset_timestamp_seconds", "method", "route") == {
        ("DELETE", sc.V1_DELETE): sc.sunset_timestamp()
    }
    # bob called v1 within 30 days and v2 since; carol (7d) never moved.
    assert by(m, "api_migrated_consumers", "method", "route", "window") == {
        ("DELETE", sc.V1_DELETE, "1d"): 0,
        ("DELETE", sc.V1_DELETE, "7d"): 0,
        ("DELETE", sc.V1_DELETE, "30d"): 1,
    }
    assert by(m, "api_unused_endpoints", "service") == {(S,): 1}  # GET /v1/legacy-report
    assert by(m, "api_endpoint_last_called_timestamp_seconds", "method", "route") == {
        ("GET", "/v1/orders"): sc.at(1, 10) / 1000,
        ("DELETE", sc.V1_DELETE): sc.at(2, 12) / 1000,
        ("DELETE", sc.V2_DELETE): sc.at(5, 5) / 1000,
    }
    assert by(m, "api_cohort_retention_ratio", "cohort_week", "weeks_since") == pytest.approx(
        sc.expected_cohorts()
    )
    # carol: 1 call in the last 7 days against 67.5 a week before; nobody else fell.
    assert by(m, "api_consumers_at_risk", "plan_tier") == {("pro",): 1, ("free",): 0, ("enterprise",): 0}

    assert sample(m, "apiusage_state_flushes_total", outcome="failure") == 0


def assert_request_counters(m) -> None:
    """Request-level metrics honour the catalog's deprecation and the plan lookup too."""
    assert by(m, "api_deprecated_requests_total", "plan_tier", "client_name", "client_version") == {
        ("free", "orders-sdk", "1.0.0"): 2,
        ("pro", "orders-sdk", "1.2.0"): 1,
    }
    assert (
        sample(
            m,
            "api_requests_total",
            service=S,
            method="GET",
            route="/v1/orders",
            status_code="200",
            plan_tier="enterprise",
            deprecated="false",
        )
        == 1
    )  # erin
    assert sum(matching(m, "api_requests_total").values()) == SPANS


def test_scenario_on_sqlite(tmp_path: Path) -> None:
    with running_processor(config(tmp_path)) as running:
        sc.send(running.http_endpoint, sc.calls())
        running.wait_processed(SPANS)
        [m] = settle(running)
        assert_scenario(m)
        assert_request_counters(m)


@pytest.mark.live
def test_scenario_on_postgres_shared_by_two_replicas(tmp_path: Path) -> None:
    with postgres_server() as pg, contextlib.ExitStack() as stack:
        state = {"postgres": {"dsn": pg.dsn}}
        replicas = [stack.enter_context(running_processor(config(tmp_path, state))) for _ in range(2)]
        calls = sc.calls()
        # Every consumer's calls are split across both replicas, as a load balancer would.
        for i, replica in enumerate(replicas):
            sc.send(replica.http_endpoint, calls[i::2], chunk=37)
        for i, replica in enumerate(replicas):
            replica.wait_processed(len(calls[i::2]))
        scrapes = settle(*replicas)
        for m in scrapes:
            assert_scenario(m)  # each replica reports the distinct counts of the whole
        # Request counters are per replica: their sum is the single-replica result.
        summed: dict = {}
        for m in scrapes:
            for key, value in m.items():
                if key[0].startswith(("api_requests_total", "api_deprecated_requests_total")):
                    summed[key] = summed.get(key, 0) + value
        assert_request_counters(summed)


def test_consumer_metrics_keep_the_busiest_values_past_the_label_limit(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    cfg["processors"]["limits"] = {"max_label_values": {"route": 2}}
    with running_processor(cfg) as running:
        sc.send(running.http_endpoint, sc.calls())
        running.wait_processed(SPANS)
        [m] = settle(running)
    endpoints = by(m, "api_endpoint_consumers", "method", "route", "window")
    assert {k[1] for k in endpoints} == {"/v1/orders", sc.V1_DELETE, "__other__"}
    # The folded routes (V2_DELETE: bob; /v1/reports: dave) count their distinct consumers.
    assert {k: v for k, v in endpoints.items() if k[1] == "__other__"} == {
        ("DELETE", "__other__", "7d"): 1,
        ("DELETE", "__other__", "30d"): 1,
        ("GET", "__other__", "1d"): 1,
        ("GET", "__other__", "7d"): 1,
        ("GET", "__other__", "30d"): 1,
    }
    assert (
        sample(m, "apiusage_consumer_metric_values_dropped", metric="api_endpoint_consumers", label="route")
        == 2
    )
