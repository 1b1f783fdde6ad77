"""The demo's simulated history: who is in it, what it sends, and what a real processor makes of it."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest
from apiusage.demo import CATALOG
from apiusage.demo.app import load_plans
from apiusage.demo.launch.backfill import DAY, Backfill, _tracestate, calls, encode, plan
from apiusage.demo.launch.demo import PSEUDONYM_KEY
from apiusage.demo.traffic import population
from apiusage.processor.derive.sampling import adjusted_count
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.processor import matching, running_processor, sample

NOW = 1_795_600_000.0
PLANS = load_plans()


@pytest.fixture(scope="module")
def history() -> Backfill:
    return Backfill(PLANS, PSEUDONYM_KEY, days=42, rate=20.0, seed=7, live_duration=1200.0, now=NOW)


def test_the_consumers_are_the_live_ones_with_a_past_plus_former_ones(history):
    live = population(PLANS, 1200.0, random.Random(7))
    keys = {m.key for m in history.members}
    late = {c.key for c in live if c.joins_at > 0}
    assert late and not late & keys  # they join during the live run, as new consumers
    assert {c.key for c in live if c.joins_at == 0} <= keys
    former = [m for m in history.members if m.key.startswith("demo-former-")]
    assert len(former) == 14 and all(m.churned is not None and m.churned < NOW for m in former)
    assert any(m.onboarding is None for m in former)  # gave up before a first success
    by_key = {c.key: c for c in live}
    for m in history.members:
        assert NOW - 42 * DAY <= m.joined < NOW
        if m.key in by_key:  # same tier, SDK and routes as in the live traffic
            c = by_key[m.key]
            assert (m.tier, m.client, m.new_version, m.api) == (c.tier, c.client, c.version, c.api)
    assert sorted(m.tier for m in history.members if m.at_risk) == ["enterprise", "free", "pro"]
    migrated = [m for m in history.members if m.migrated is not None]
    assert migrated and all(
        m.api_at(m.migrated - 1) == "v1" and m.api_at(m.migrated) == "v2" for m in migrated
    )


def test_spans_are_past_ordered_weighted_and_follow_the_story(history):
    spans = history.calls
    assert all(c.at < NOW for c in spans)
    assert [c.at for c in spans] == sorted(c.at for c in spans)
    statuses = Counter(c.status for c in spans)
    assert {200, 201, 202, 400, 403, 404, 422, 500, 503} <= set(statuses)
    deprecated = {(c.method, c.route) for c in spans if c.deprecated}
    assert deprecated == {("DELETE", "/v1/orders/{order_id}"), ("GET", "/v1/reports/{report_id}")}
    for c in spans:  # after an upgrade, no more v1 calls (feedback has only the one version)
        if c.member.migrated is not None and c.at > c.member.migrated + 1 and c.count > 1:
            assert c.route.startswith("/v2/") or c.route == "/v1/feedback", c
        if c.member.churned is not None:
            assert c.at <= c.member.churned
    # Volumes follow the live rate: on the last full day, about rate x 86400 calls in all.
    day = int(NOW // DAY) - 1
    total = sum(c.count for c in spans if int(c.at // DAY) == day)
    assert 0.3 * 20 * DAY < total < 2 * 20 * DAY, total
    # Free-tier webhooks are refused, as the live API does.
    assert {c.status for c in spans if c.route == "/v2/webhooks" and c.member.tier == "free"} == {403}


@pytest.mark.parametrize("count", [1.0, 2.0, 7.5, 64.0, 12345.6])
def test_a_span_stands_for_its_calls_through_the_sampling_threshold(count):
    state = _tracestate(count)
    assert (state == "") if count == 1.0 else state.startswith("ot=th:")
    assert adjusted_count(state) == pytest.approx(count, rel=1e-9)


def test_encoded_spans_carry_what_the_instrumentation_sets(history):
    body = encode(history.calls[:50], history.pseudonym)
    request = ExportTraceServiceRequest.FromString(body)
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "orders-api"
    span = request.resource_spans[0].scope_spans[0].spans[0]
    attrs = {a.key for a in span.attributes}
    assert {
        "http.request.method",
        "http.route",
        "http.response.status_code",
        "apiusage.consumer.id",
        "apiusage.consumer.plan_tier",
        "apiusage.schema_version",
        "apiusage.endpoint.deprecated",
    } <= attrs
    assert span.kind == 2 and span.end_time_unix_nano > span.start_time_unix_nano
    ids = {
        a.value.string_value
        for s in request.resource_spans[0].scope_spans[0].spans
        for a in s.attributes
        if a.key == "apiusage.consumer.id"
    }
    assert all(len(i) == 32 and "demo-" not in i for i in ids)  # pseudonyms, never the API keys


def test_the_same_seed_plans_the_same_history():
    a = plan(PLANS, seed=3, live_duration=600, days=21, now=NOW, rng=random.Random(4))
    b = plan(PLANS, seed=3, live_duration=600, days=21, now=NOW, rng=random.Random(4))
    assert a == b
    assert calls(a, rate=5, days=21, now=NOW, rng=random.Random(1))[-1].at < NOW


@pytest.mark.slow
def test_a_real_processor_turns_the_history_into_weeks_of_consumer_metrics():
    history = Backfill(PLANS, PSEUDONYM_KEY, days=42, rate=20.0, seed=7, live_duration=1200.0)
    config = {
        "catalog": str(CATALOG),
        "state": {"flush_interval": "100ms", "refresh_interval": "200ms"},
        "processors": {"usage": {"data_quality": {"max_past_age": "44d"}}},
    }
    with running_processor(config) as processor:
        progress = []
        result = history.send(f"{processor.http_endpoint}/v1/traces", lambda *a: progress.append(a))
        assert result.spans == len(history.calls) and progress[-1][0] == progress[-1][1] == result.spans
        processor.wait_processed(result.spans, timeout=60)
        deadline = time.monotonic() + 20
        while True:
            samples = processor.scrape()
            new = sum(matching(samples, "api_new_consumers_total").values())
            if new == len(history.members) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert new == len(history.members)
    requests = sum(matching(samples, "api_requests_total").values())
    assert requests == pytest.approx(sum(c.count for c in history.calls), rel=1e-6)
    assert sum(matching(samples, "apiusage_data_quality_issues_total", check="timestamp_past").values()) == 0
    for tier in ("enterprise", "pro", "free"):
        assert sample(samples, "api_active_consumers", service="orders-api", plan_tier=tier, window="7d") > 0
    weeks = {dict(lb)["cohort_week"] for lb in matching(samples, "api_cohort_retention_ratio")}
    assert len(weeks) >= 6, weeks
    retention = matching(samples, "api_cohort_retention_ratio")
    assert min(retention.values()) < 1.0  # some consumers left
    endpoint = {"method": "DELETE", "route": "/v1/orders/{order_id}", "window": "30d"}
    assert sum(matching(samples, "api_deprecated_endpoint_consumers", **endpoint).values()) > 0
    assert sum(matching(samples, "api_migrated_consumers", **endpoint).values()) > 0
    assert sum(matching(samples, "api_consumers_at_risk").values()) >= 3
    succeeded = sum(1 for m in history.members if m.onboarding is not None)
    assert sum(matching(samples, "api_time_to_first_success_seconds_count").values()) == succeeded
