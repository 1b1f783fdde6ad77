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
from apiusage.demo.traffic import population, region_of
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


def test_every_span_stands_for_at_least_one_call_even_early_in_the_day():
    # 36 minutes into a UTC day today's stretches are short: ~120 shares under one call, which a
    # sampled span cannot say (the processor counted each as 1, 58 calls more than the history).
    early = (int(NOW) // DAY) * DAY + 36 * 60
    h = Backfill(PLANS, PSEUDONYM_KEY, days=42, rate=20.0, seed=7, live_duration=1200.0, now=early)
    assert min(c.count for c in h.calls) >= 1.0
    assert sum(adjusted_count(_tracestate(c.count)) for c in h.calls) == pytest.approx(
        sum(c.count for c in h.calls), rel=1e-9
    )


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


def _decoded(history: Backfill, calls_: list) -> list[dict]:
    from google.protobuf.json_format import MessageToDict

    body = encode(calls_, history.pseudonym, now=history.now, upgraded=history.upgraded)
    request = ExportTraceServiceRequest.FromString(body)
    resource = {a.key: a.value.string_value for a in request.resource_spans[0].resource.attributes}
    assert resource["cloud.region"] == "eu-west-1"
    return [
        {a.key: MessageToDict(a.value) for a in s.attributes}
        for s in request.resource_spans[0].scope_spans[0].spans
    ]


def _strings(value: dict) -> list[str]:
    return [v["stringValue"] for v in value["arrayValue"].get("values", [])]


def test_spans_before_the_upgrade_are_version_1_and_after_it_version_2_with_the_design(history):
    before = [c for c in history.calls if c.at < history.upgraded]
    after = [c for c in history.calls if c.at >= history.upgraded]
    assert before and after and history.upgraded == NOW - 28 * DAY
    for attrs in _decoded(history, before[-200:]):
        assert attrs["apiusage.schema_version"] == {"intValue": "1"}
        assert not any(
            k.startswith(("apiusage.request.", "apiusage.validation.", "http.")) and "body" in k
            for k in attrs
        )
        assert "apiusage.client.region" not in attrs and "apiusage.request.query_parameters" not in attrs
    decoded = _decoded(history, after)
    assert all(a["apiusage.schema_version"] == {"intValue": "2"} for a in decoded)
    by_call = list(zip(after, decoded, strict=True))
    for c, attrs in by_call:
        assert attrs["apiusage.client.region"] == {"stringValue": region_of(c.member.key)}
        assert int(attrs["http.response.body.size"]["intValue"]) > 0
        if c.status >= 500:
            want = "LedgerUnavailable" if c.route == "/v2/invoices/{invoice_id}" and c.status == 500 else None
            assert attrs["error.type"]["stringValue"] in ({want} if want else {str(c.status)})
        else:
            assert "error.type" not in attrs
    lists = {
        c.member.client: tuple(_strings(a["apiusage.request.query_parameters"]))
        for c, a in by_call
        if (c.method, c.route) == ("GET", "/v2/orders") and c.member.client
    }
    assert lists == {
        "shop-sdk-python": ("cursor", "limit"),
        "shop-sdk-js": ("expand", "limit"),
        "shop-cli": ("limit",),
    }  # curl consumers send the bare URL: no attribute at all
    assert not any(
        "apiusage.request.query_parameters" in a
        for c, a in by_call
        if c.route == "/v2/orders" and not c.member.client
    )
    errors = Counter(
        (
            c.member.client,
            tuple(
                zip(
                    _strings(a["apiusage.validation.error_locations"]),
                    _strings(a["apiusage.validation.error_types"]),
                    strict=True,
                )
            ),
        )
        for c, a in by_call
        if c.status == 422 and not c.first_try
    )
    assert set(errors) <= {
        ("shop-sdk-js", (("body.lines.*.quantity", "int_parsing"),)),
        ("shop-cli", (("body.since", "missing"),)),
        *((sdk, (("body.lines", "too_short"),)) for sdk in ("shop-sdk-python", "shop-cli", None)),
    }
    assert ("shop-sdk-js", (("body.lines.*.quantity", "int_parsing"),)) in errors


def test_one_sdk_fails_one_endpoint_many_times_more_than_the_others(history):
    def ratio(client_is_js: bool) -> float:
        mine = [
            c
            for c in history.calls
            if (c.method, c.route) == ("POST", "/v2/orders")
            and (c.member.client == "shop-sdk-js") == client_is_js
        ]
        return sum(c.count for c in mine if 400 <= c.status < 500) / sum(c.count for c in mine)

    assert ratio(True) > 0.2 and ratio(False) < 0.02


def test_export_downloads_grow_week_over_week(history):
    from apiusage.demo.app import EXPORT_BASE_BYTES
    from apiusage.demo.launch.backfill import EXPORT_WEEKLY_GROWTH, export_size_at

    assert export_size_at(NOW, NOW) == EXPORT_BASE_BYTES
    assert export_size_at(NOW - 7 * DAY, NOW) == int(EXPORT_BASE_BYTES / EXPORT_WEEKLY_GROWTH)
    downloads = [c for c in history.calls if c.route.endswith("/download") and c.status == 200]
    sizes = dict(
        (c.at, int(a["http.response.body.size"]["intValue"]))
        for c, a in zip(downloads, _decoded(history, downloads), strict=True)
        if c.at >= history.upgraded
    )
    assert sizes and all(size == export_size_at(at, NOW) for at, size in sizes.items())
    last, before = (
        [s for at, s in sizes.items() if NOW - (w + 1) * 7 * DAY <= at < NOW - w * 7 * DAY] for w in (0, 1)
    )
    assert min(last) > max(before)


def test_feedback_events_follow_each_consumers_opinion(history):
    from apiusage.demo.launch.backfill import encode_feedback
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    events = history.feedback
    assert len(events) > 100
    assert [f.at for f in events] == sorted(f.at for f in events) and all(f.at < NOW for f in events)
    assert {f.member.key for f in events} <= {m.key for m in history.members if m.onboarding is not None}
    assert all(1 <= f.score <= 5 for f in events)
    js = [f for f in events if f.member.client == "shop-sdk-js"]
    assert Counter(f.category for f in js).most_common(1)[0][0] == "errors"
    request = ExportLogsServiceRequest.FromString(encode_feedback(events[:10], history.pseudonym))
    records = request.resource_logs[0].scope_logs[0].log_records
    assert [r.event_name for r in records] == ["apiusage.feedback"] * 10
    assert [r.time_unix_nano for r in records] == [int(f.at * 1e9) for f in events[:10]]
    for r, f in zip(records, events[:10], strict=True):
        attrs = {a.key: a.value for a in r.attributes}
        assert attrs["apiusage.feedback.score"].int_value == f.score
        assert attrs["apiusage.feedback.category"].string_value == f.category
        assert attrs["apiusage.consumer.id"].string_value == history.pseudonym(f.member.key)
        assert "demo-" not in attrs["apiusage.consumer.id"].string_value


@pytest.mark.slow
def test_the_history_fills_the_design_families_exactly():
    """The version 2 part of the history, through a real processor: the parameter, size, validation,
    error, region and feedback families hold exactly what the spans and log records say."""
    from demo_support import needs_issue15

    needs_issue15("catalog", "derive", "feedback")
    from apiusage.demo.launch.backfill import design

    history = Backfill(PLANS, PSEUDONYM_KEY, days=42, rate=20.0, seed=7, live_duration=1200.0)
    config = {
        "catalog": str(CATALOG),
        "state": {"flush_interval": "100ms", "refresh_interval": "200ms"},
        "processors": {"usage": {"data_quality": {"max_past_age": "44d"}}},
    }
    v2 = [(c, design(c, history.now)) for c in history.calls if c.at >= history.upgraded]
    params: Counter = Counter()
    errors: Counter = Counter()
    error_types: Counter = Counter()
    regions: Counter = Counter()
    sizes: Counter = Counter()
    for c, attrs in v2:
        weight = max(c.count, 1.0)  # a span standing for one call or less has no threshold: 1
        for location, key in (
            ("query", "apiusage.request.query_parameters"),
            ("body", "apiusage.request.body_fields"),
        ):
            for name in attrs.get(key) or ():
                params[c.method, c.route, location, name] += weight
        for loc, kind in zip(
            attrs.get("apiusage.validation.error_locations") or (),
            attrs.get("apiusage.validation.error_types") or (),
            strict=True,
        ):
            location, _, field = loc.partition(".")
            errors[c.method, c.route, location, field, kind] += weight
        if "error.type" in attrs:
            error_types[c.method, c.route, attrs["error.type"]] += weight
        regions[attrs["apiusage.client.region"], f"{c.status // 100}xx"] += weight
        sizes[c.method, c.route] += weight
    for c in history.calls:
        if c.at < history.upgraded:  # version 1: no client region
            regions["unknown", f"{c.status // 100}xx"] += max(c.count, 1.0)
    feedback = Counter((f.route or "", f.category, str(f.score)) for f in history.feedback)

    with running_processor(config) as processor:
        result = history.send(f"{processor.http_endpoint}/v1/traces")
        assert result.feedback == len(history.feedback) > 0
        processor.wait_processed(result.spans, timeout=60)

        def settled(samples) -> bool:
            return (
                sum(matching(samples, "api_feedback_total").values()) == len(history.feedback)
                and sample(samples, "api_feedback_consumers", service="orders-api", window="30d") is not None
                and sample(
                    samples, "api_unused_parameters", service="orders-api", method="GET", route="/v2/orders"
                )
                is not None
            )

        deadline = time.monotonic() + 20
        while not settled(samples := processor.scrape()) and time.monotonic() < deadline:
            time.sleep(0.2)

    def family(name: str, *labels: str) -> dict:
        out: Counter = Counter()
        for lb, value in matching(samples, name, service="orders-api").items():
            out[tuple(dict(lb)[n] for n in labels)] += value
        return out

    def close(got: dict, want: dict) -> None:
        assert set(got) == set(want), set(got) ^ set(want)
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=1e-6), key

    close(family("api_parameter_requests_total", "method", "route", "location", "parameter"), params)
    close(family("api_validation_errors_total", "method", "route", "location", "field", "error_type"), errors)
    close(family("api_errors_total", "method", "route", "error_type"), error_types)
    close(family("api_region_requests_total", "client_region", "status_class"), regions)
    assert set(family("api_region_requests_total", "server_region")) == {("eu-west-1",)}
    close(
        {k: v for k, v in family("api_response_body_size_bytes_count", "method", "route").items()},
        sizes,
    )
    assert family("api_feedback_total", "route", "category", "score") == feedback

    def gave_feedback(days: int) -> int:
        return len({f.member.key for f in history.feedback if f.at >= history.now - days * DAY})

    # Windows are whole days: between the consumers of the last 29 and of the last 31 days.
    got = sample(samples, "api_feedback_consumers", service="orders-api", window="30d")
    assert gave_feedback(29) <= got <= gave_feedback(31) and got > 20, (
        got,
        gave_feedback(29),
        gave_feedback(31),
    )
    assert (
        sample(samples, "api_unused_parameters", service="orders-api", method="GET", route="/v2/orders") == 1
    )
    assert (
        sample(samples, "api_unused_parameters", service="orders-api", method="GET", route="/v2/search") == 1
    )
    assert (
        sum(matching(samples, "apiusage_data_quality_issues_total", check="unknown_schema_version").values())
        == 0
    )
