"""Deriver, issue 16: ApiRequest.flags from feature-flag span events and ApiRequest.service_version
from the resource, from span tuples built by hand and from OTLP bytes through the real scanners."""

from __future__ import annotations

import os
import time

import pytest
from apiusage.conventions.attributes import (
    EVENT_FEATURE_FLAG,
    EVENT_FEATURE_FLAG_EVALUATION,
    FEATURE_FLAG_CONTEXT_ID,
    FEATURE_FLAG_KEY,
    FEATURE_FLAG_PROVIDER,
    FEATURE_FLAG_RESULT_VALUE,
    FEATURE_FLAG_VARIANT,
    FEATURE_FLAG_VARIANT_OLD,
)
from apiusage.processor.config import Config, UsageConfig
from apiusage.processor.derive.flags import EVALUATION_EVENT_NAMES
from apiusage.processor.derive.requests import (
    FLAG_EVENT_KEYS,
    MAX_FLAG_EVALUATIONS,
    SPAN_FIELDS,
    ApiRequest,
    Deriver,
    resource_field_sources,
    span_field_sources,
)
from apiusage.processor.receivers import scan
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.telemetry import PipelineStats
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

NOW = time.time_ns()
TID, SID = bytes(range(1, 17)), bytes(range(1, 9))
BASE = {"method": "GET", "route": "/v1/orders", "status_code": 200, "consumer_id": "c1"}
ON = (EVENT_FEATURE_FLAG_EVALUATION, "new-checkout", "on", None, None)


def span(*events: tuple, resource: int = 0, **fields: object) -> tuple:
    """A span tuple as the processor's scanner returns it: the fields, then the flag events."""
    values = {**BASE, **fields}
    return (resource, 2, NOW - 5_000_000, NOW, TID, SID, "", 0, *(values.get(f) for f in SPAN_FIELDS), events)


def derive(
    *spans: tuple, resources: list[tuple] | None = None, max_label_length: int = 16
) -> tuple[list[ApiRequest], dict[str, int]]:
    stats = PipelineStats()
    out = Deriver(UsageConfig(), stats, max_label_length=max_label_length).derive(
        resources or [("orders-api", None, "1.5.0")], list(spans)
    )
    return out, {k: v for k, v in stats.data_quality_issues.items() if v}


def test_each_flag_event_gives_its_key_and_variant_in_wire_order() -> None:
    [r], issues = derive(
        span(
            ON,
            (EVENT_FEATURE_FLAG, "old-flag", None, "blue", None),  # the older variant attribute
            (EVENT_FEATURE_FLAG_EVALUATION, "dark-mode", None, None, True),  # a boolean value
            (EVENT_FEATURE_FLAG_EVALUATION, "colour", None, None, '"green"'),  # a JSON string value
            (EVENT_FEATURE_FLAG_EVALUATION, "limit", None, None, "10"),
            (EVENT_FEATURE_FLAG_EVALUATION, "both", "v2", "v1", "x"),  # the new variant wins
            ON,  # evaluated twice: counted twice
        )
    )
    assert r.flags == (
        ("new-checkout", "on"),
        ("old-flag", "blue"),
        ("dark-mode", "true"),
        ("colour", "green"),
        ("limit", "10"),
        ("both", "v2"),
        ("new-checkout", "on"),
    )
    assert r.service_version == "1.5.0"
    assert issues == {}


def test_an_event_without_a_key_or_a_variant_is_refused_and_counted() -> None:
    [r, other], issues = derive(
        span(
            (EVENT_FEATURE_FLAG_EVALUATION, None, "on", None, None),  # no key
            (EVENT_FEATURE_FLAG_EVALUATION, "", "on", None, None),  # an empty key
            (EVENT_FEATURE_FLAG_EVALUATION, 7, "on", None, None),  # a key that is no string
            (EVENT_FEATURE_FLAG_EVALUATION, "a", None, None, None),  # no variant
            (EVENT_FEATURE_FLAG_EVALUATION, "b", "", None, '{"x": 1}'),  # an object is no variant
            (EVENT_FEATURE_FLAG_EVALUATION, "c", None, None, 3),  # an int value is no variant
            (EVENT_FEATURE_FLAG_EVALUATION,),  # a scanner built without event keys
            (EVENT_FEATURE_FLAG_EVALUATION, "kept", None, "off", None),
        ),
        span(
            (EVENT_FEATURE_FLAG_EVALUATION, "a", None, None, None),
            route="/v1/other",
        ),
    )
    assert r.flags == (("kept", "off"),)
    assert other.flags is None
    assert issues == {"invalid_flag_evaluation": 8}


def test_no_flag_events_is_none() -> None:
    plain = (0, 2, NOW - 5_000_000, NOW, TID, SID, "", 0, *(BASE.get(f) for f in SPAN_FIELDS))
    [a, b, c], issues = derive(span(), plain, span((EVENT_FEATURE_FLAG, "a", None, None, None)))
    assert (a.flags, b.flags, c.flags) == (None, None, None)  # none left after refusal: None too
    assert issues == {"invalid_flag_evaluation": 1}


def test_flag_keys_and_variants_are_bounded_printable_label_values() -> None:
    [r], issues = derive(
        span(
            (EVENT_FEATURE_FLAG_EVALUATION, "checkout\n\x00flow", "variant-" + "x" * 40, None, None),
            (EVENT_FEATURE_FLAG_EVALUATION, "ü" * 20, "\u202eon", None, None),
        )
    )
    assert r.flags == (("checkout  flow", "variant-xxxxxxx…"), ("ü" * 15 + "…", " on"))
    assert issues == {}


def test_a_cut_event_list_keeps_the_first_and_counts_once() -> None:
    events = [
        (EVENT_FEATURE_FLAG_EVALUATION, f"f{i}", "on", None, None) for i in range(MAX_FLAG_EVALUATIONS + 1)
    ]
    [r, s], issues = derive(span(*events), span(*events[:MAX_FLAG_EVALUATIONS]))
    assert r.flags == tuple((f"f{i}", "on") for i in range(MAX_FLAG_EVALUATIONS))
    assert s.flags == r.flags
    assert issues == {"flag_evaluations_truncated": 1}
    stats = PipelineStats()
    [t] = Deriver(UsageConfig(), stats, max_flag_evaluations=2).derive([("svc",)], [span(*events[:3])])
    assert t.flags == (("f0", "on"), ("f1", "on"))
    assert stats.data_quality_issues["flag_evaluations_truncated"] == 1


def test_service_version_from_the_resource() -> None:
    resources = [
        ("orders-api", "eu-west-1", "1.5.0"),
        ("orders-api", None, None),
        ("orders-api", None, ""),
        ("orders-api", None, 2),
        ("orders-api", None, "1.5.0+build." + "9" * 40 + "\n"),
        ("orders-api", None),  # a scanner built without the version group
        ("orders-api",),
    ]
    out, issues = derive(*(span(resource=i) for i in range(len(resources))), resources=resources)
    assert [r.service_version for r in out] == ["1.5.0", None, None, "2", "1.5.0+build.999…", None, None]
    assert out[0].server_region == "eu-west-1"
    assert issues == {}


# --------------------------------------------------------------------------
# From OTLP bytes, through the scanner the processor builds


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def request(events: list[Span.Event], version: str | None = "1.5.0") -> bytes:
    resource = [kv("service.name", string_value="orders-api")]
    if version is not None:
        resource.append(kv("service.version", string_value=version))
    attributes = [
        kv("http.request.method", string_value="GET"),
        kv("http.route", string_value="/v1/orders"),
        kv("http.response.status_code", int_value=200),
        kv("apiusage.consumer.id", string_value="c1"),
    ]
    spans = [
        Span(
            trace_id=TID,
            span_id=SID,
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=NOW - 5_000_000,
            end_time_unix_nano=NOW,
            attributes=attributes,
            events=events,
        )
    ]
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(resource=Resource(attributes=resource), scope_spans=[ScopeSpans(spans=spans)])
        ]
    ).SerializeToString()


@pytest.fixture(params=["c", "python"])
def processor_scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> FieldScanner:
    """The FieldScanner as processor/app.py builds it, over either scanner."""
    if request.param == "c":
        if scan.CScanner is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"C scanner extension not importable: {scan.C_IMPORT_ERROR}")
            pytest.skip("C scanner extension not importable")
        monkeypatch.setattr(scan, "Scanner", scan.CScanner)
    else:
        monkeypatch.setattr(scan, "Scanner", scan.PyScanner)
    from apiusage.processor.app import Processor

    processor = Processor(Config())
    inner = processor.scanner._scanner
    assert inner.__class__ is scan.Scanner
    assert inner.event_names == EVALUATION_EVENT_NAMES
    assert inner.event_keys == FLAG_EVENT_KEYS
    assert inner.max_events == MAX_FLAG_EVALUATIONS
    usage = UsageConfig()
    return FieldScanner(
        span_field_sources(usage),
        resource_field_sources(usage),
        event_names=EVALUATION_EVENT_NAMES,
        event_keys=FLAG_EVENT_KEYS,
        max_events=MAX_FLAG_EVALUATIONS,
    )


def test_flags_from_otlp_span_events(processor_scanner: FieldScanner) -> None:
    Event = Span.Event
    body = request(
        [
            Event(name="exception", attributes=[kv(FEATURE_FLAG_KEY, string_value="not-a-flag")]),
            Event(
                time_unix_nano=NOW - 1_000_000,
                name=EVENT_FEATURE_FLAG_EVALUATION,
                attributes=[
                    kv(FEATURE_FLAG_KEY, string_value="new-checkout"),
                    kv(FEATURE_FLAG_PROVIDER, string_value="InMemoryProvider"),
                    kv(FEATURE_FLAG_VARIANT, string_value="treatment"),
                    kv(FEATURE_FLAG_CONTEXT_ID, string_value="user-42@example.com"),
                ],
            ),
            Event(
                name=EVENT_FEATURE_FLAG,
                attributes=[
                    kv(FEATURE_FLAG_KEY, string_value="legacy"),
                    kv(FEATURE_FLAG_VARIANT_OLD, string_value="b"),
                ],
            ),
            Event(
                name=EVENT_FEATURE_FLAG_EVALUATION,
                attributes=[
                    kv(FEATURE_FLAG_KEY, string_value="dark"),
                    kv(FEATURE_FLAG_RESULT_VALUE, bool_value=False),
                ],
            ),
            Event(
                name=EVENT_FEATURE_FLAG_EVALUATION,
                attributes=[kv(FEATURE_FLAG_KEY, string_value="no-variant")],
            ),
        ]
    )
    stats = PipelineStats()
    [r] = Deriver(UsageConfig(), stats).derive(*processor_scanner.scan(body))
    assert r.flags == (("new-checkout", "treatment"), ("legacy", "b"), ("dark", "false"))
    assert r.service_version == "1.5.0"
    assert (r.service, r.route, r.status_code) == ("orders-api", "/v1/orders", "200")
    assert {k: v for k, v in stats.data_quality_issues.items() if v} == {"invalid_flag_evaluation": 1}
    # the targeting key is read by nobody: it is in no field of the request
    assert "user-42@example.com" not in repr(r)


def test_twenty_flag_events_through_the_scanner_are_cut_at_sixteen(processor_scanner: FieldScanner) -> None:
    events = [
        Span.Event(
            name=EVENT_FEATURE_FLAG_EVALUATION,
            attributes=[
                kv(FEATURE_FLAG_KEY, string_value=f"f{i}"),
                kv(FEATURE_FLAG_VARIANT, string_value="on"),
            ],
        )
        for i in range(20)
    ]
    stats = PipelineStats()
    [r] = Deriver(UsageConfig(), stats).derive(*processor_scanner.scan(request(events, version=None)))
    assert r.flags == tuple((f"f{i}", "on") for i in range(16))
    assert r.service_version is None
    assert {k: v for k, v in stats.data_quality_issues.items() if v} == {"flag_evaluations_truncated": 1}
