"""The consumer-state families under hostile label values (issue 12, items 11 and 12): every family
respects `processors.limits` and folds the rest into `__other__`, /metrics stays small and quick,
and label values are sanitized before they are stored. Real processor, real HTTP, real SQLite."""

from __future__ import annotations

import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics

from tests.support.derivation import export_request, post, span
from tests.support.postgres import postgres_server
from tests.support.processor import matching, parse_metrics, running_processor, sample

pytestmark = pytest.mark.slow

SERVICE = "orders-api"
OTHER = "__other__"
WINDOWS = ("1d", "7d", "30d")
CONSUMERS = 50_000
DEPRECATED_ROUTES = 20_000


def state_config(tmp_path: Path) -> dict:
    return {
        "state": {
            "sqlite": {"path": str(tmp_path / "state.db")},
            "flush_interval": "1h",
            "refresh_interval": "1h",
        }
    }


def plan_of(i: int) -> str:
    return "pro" if i < 100 else "free" if i < 150 else f"tier-{i:05d}"


def settle(running, spans: int) -> None:
    running.wait_processed(spans, timeout=30)
    assert running.processor.state.flush()
    running.processor.state.refresh()


def timed_scrape(url: str) -> tuple[float, bytes]:
    start = time.monotonic()
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
    return time.monotonic() - start, body


def run(tmp_path: Path, calls: list[dict]) -> dict:
    """Send `calls` to a real processor, flush and refresh its state; the samples of one scrape,
    which must take under 2 s (Prometheus gives up after 10 s) and stay small."""
    with running_processor(state_config(tmp_path)) as running:
        for k in range(0, len(calls), 5000):
            assert post(running.http_endpoint, export_request(calls[k : k + 5000])) == 200
        settle(running, len(calls))
        seconds, body = timed_scrape(running.metrics_url)
    assert seconds < 2.0, f"scrape took {seconds:.2f}s"
    assert len(body) < 4_000_000, len(body)  # 77 MB before
    return parse_metrics(body.decode())


def series(m: dict, name: str) -> int:
    return len(matching(m, name))


def test_fifty_thousand_plan_tiers_fold_into_other(tmp_path: Path) -> None:
    # Consumer c<i> has plan pro (100 of them), free (50) or a tier of its own (49,850).
    m = run(tmp_path, [span(consumer=f"c{i}", plan=plan_of(i)) for i in range(CONSUMERS)])
    # Default limit: 20 plan tiers. The busiest stay (ties: by value); a sum is exact here.
    kept_tiers = ["pro", "free"] + [f"tier-{i:05d}" for i in range(150, 168)]
    folded = CONSUMERS - 150 - 18
    expected = {"pro": 100, "free": 50, **{t: 1 for t in kept_tiers[2:]}, OTHER: folded}
    for window in WINDOWS:
        assert {
            dict(lb)["plan_tier"]: v for lb, v in matching(m, "api_active_consumers", window=window).items()
        } == expected
    assert series(m, "api_active_consumers") == 21 * 3
    assert {dict(lb)["plan_tier"]: v for lb, v in matching(m, "api_new_consumers_total").items()} == expected
    assert sample(m, "api_time_to_first_success_seconds_count", service=SERVICE, plan_tier=OTHER) == folded
    assert series(m, "api_time_to_first_success_seconds_count") == 21
    assert series(m, "api_consumers_at_risk") <= 21
    # What was folded is said: values at the last refresh, and series folded per refresh.
    assert (
        sample(m, "apiusage_consumer_metric_values_dropped", metric="api_active_consumers", label="plan_tier")
        == folded
    )
    assert (
        sample(m, "apiusage_label_overflow_total", metric="api_active_consumers", label="plan_tier")
        == folded * 3
    )
    assert sample(m, "apiusage_label_overflow_total", metric="api_new_consumers", label="plan_tier") == folded
    assert len(m) < 5_000, Counter(name for name, _ in m).most_common(3)


def test_twenty_thousand_deprecated_routes_fold_into_other(tmp_path: Path) -> None:
    # c0…c9 call 20,000 distinct routes flagged deprecated by their spans; c0…c99 call /v1/orders.
    calls = [span(consumer=f"c{i}", plan="pro") for i in range(100)]
    calls += [
        span(consumer=f"c{j % 10}", plan="pro", route=f"/v1/old/{j:05d}", deprecated=True)
        for j in range(DEPRECATED_ROUTES)
    ]
    m = run(tmp_path, calls)
    # Default limit: 1,000 routes. /v1/orders and the first 999 old routes stay; the other 19,001
    # fold, and __other__ counts their distinct consumers (c0…c9), as the store does again.
    for window in WINDOWS:
        assert (
            sample(
                m, "api_endpoint_consumers", service=SERVICE, method="GET", route="/v1/orders", window=window
            )
            == 100
        )
        assert (
            sample(
                m,
                "api_endpoint_consumers",
                service=SERVICE,
                method="GET",
                route="/v1/old/00998",
                window=window,
            )
            == 1
        )
        assert (
            sample(m, "api_endpoint_consumers", service=SERVICE, method="GET", route=OTHER, window=window)
            == 10
        )
        # Among deprecated endpoints only, the first 1,000 old routes stay.
        assert (
            sample(
                m,
                "api_deprecated_endpoint_consumers",
                service=SERVICE,
                method="GET",
                route="/v1/old/00999",
                window=window,
            )
            == 1
        )
        assert (
            sample(
                m,
                "api_deprecated_endpoint_consumers",
                service=SERVICE,
                method="GET",
                route=OTHER,
                window=window,
            )
            == 10
        )
    assert (
        sample(m, "api_endpoint_consumers", service=SERVICE, method="GET", route="/v1/old/00999", window="1d")
        is None
    )
    assert series(m, "api_endpoint_consumers") == 1001 * 3
    assert series(m, "api_deprecated_endpoint_consumers") == 1001 * 3
    assert (
        sample(
            m,
            "apiusage_consumer_metric_values_dropped",
            metric="api_deprecated_endpoint_consumers",
            label="route",
        )
        == DEPRECATED_ROUTES - 1000
    )
    assert (
        sample(m, "apiusage_label_overflow_total", metric="api_endpoint_consumers", label="route")
        == (DEPRECATED_ROUTES - 999) * 3
    )
    # Spans flagging 20k routes gave 60k consumer series; with the request metrics now ~25k samples.
    assert len(m) < 25_000, Counter(name for name, _ in m).most_common(3)


def test_consumer_label_values_are_sanitized_before_they_are_stored(tmp_path: Path) -> None:
    # Plans differing only in a control or separator character sanitize to the same "pro ":
    # sanitized after the SQL aggregation they were 8 series with one name (Prometheus kept 1).
    odd = ["pro ", "pro\x00", "pro\r", "pro\n", "pro\u2028", "pro\x07", "pro\t", "pro\u200b"]
    long_plan = "x" * 5000
    calls = [span(consumer=f"c{i}", plan=plan) for i, plan in enumerate([*odd, long_plan])]
    with running_processor(state_config(tmp_path)) as running:
        assert post(running.http_endpoint, export_request(calls)) == 200
        settle(running, len(calls))
        text = running.scrape
        request = urllib.request.Request(
            running.metrics_url, headers={"Accept": "application/openmetrics-text"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            om = response.read().decode()
        m = text()
    cut = "x" * 127 + "…"
    for window in WINDOWS:
        assert sample(m, "api_active_consumers", service=SERVICE, plan_tier="pro ", window=window) == 8
        assert sample(m, "api_active_consumers", service=SERVICE, plan_tier=cut, window=window) == 1
    assert {dict(lb)["plan_tier"]: v for lb, v in matching(m, "api_new_consumers_total").items()} == {
        "pro ": 8,
        cut: 1,
    }
    assert sample(m, "api_time_to_first_success_seconds_count", service=SERVICE, plan_tier="pro ") == 8
    # OpenMetrics output parses whole (duplicate series made it invalid) and holds nothing raw.
    families = {f.name: f for f in openmetrics(om)}
    for family in families.values():
        for s in family.samples:
            for value in s.labels.values():
                assert value.isprintable() and len(value) <= 128, (s.name, value[:40])
    active = [s for s in families["api_active_consumers"].samples if s.labels["window"] == "1d"]
    assert sorted((s.labels["plan_tier"], s.value) for s in active) == [("pro ", 8), (cut, 1)]


def test_folding_counts_distinct_consumers_on_postgres_and_nul_cannot_jam_the_store() -> None:
    # The same SQL on PostgreSQL, which refuses NUL in text: a NUL in a consumer id (hashed now)
    # or a plan (sanitized now) made every flush fail, so the store never caught up again.
    calls = [
        span(
            consumer=f"c{i}",
            route=f"/r/{i % 8}",
            plan="pro" if i < 10 else "free" if i < 20 else "gold" if i < 25 else f"t{i}",
        )
        for i in range(30)
    ]
    calls += [
        span(consumer="c5", plan="pro", route="/r/6"),
        span(consumer="bad\x00id", plan="gold\x00", route="/r/0"),
    ]
    limits = {"max_label_values": {"plan_tier": 4, "route": 5}}
    with postgres_server() as pg:
        config = {
            "state": {"postgres": {"dsn": pg.dsn}, "flush_interval": "1h", "refresh_interval": "1h"},
            "processors": {"limits": limits},
        }
        with running_processor(config) as running:
            assert post(running.http_endpoint, export_request(calls)) == 200
            settle(running, len(calls))
            m = running.scrape()
    assert sample(m, "apiusage_state_flushes_total", outcome="failure") == 0
    # Plans: pro 10, free 10, gold 5, "gold " (from gold\x00) 1, five of their own: 4 stay.
    assert {
        dict(lb)["plan_tier"]: v for lb, v in matching(m, "api_active_consumers", window="1d").items()
    } == {"pro": 10, "free": 10, "gold": 5, "gold ": 1, OTHER: 5}
    # Routes /r/0 … /r/6 have 4 consumers each (/r/0 5), /r/7 3; /r/0 … /r/4 stay. The folded
    # /r/5, /r/6 and /r/7 have 4 + 4 + 3 callers, c5 among both of the first two: 10 distinct.
    assert {dict(lb)["route"]: v for lb, v in matching(m, "api_endpoint_consumers", window="1d").items()} == {
        "/r/0": 5,
        "/r/1": 4,
        "/r/2": 4,
        "/r/3": 4,
        "/r/4": 4,
        OTHER: 10,
    }
