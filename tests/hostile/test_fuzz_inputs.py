"""Hostile input, fuzzed: the OTLP/JSON decoder, and the whole span-to-metric path from bytes to
exposition. Nothing raises an unexpected exception, label values stay printable and bounded.
The scanner and the JSON decoder are also fuzzed reentered: a gc hook runs nested calls on
other fuzzed bodies in the middle of each call (tests/support/reentrancy.py).

`APIUSAGE_FUZZ_EXAMPLES=20000 pytest tests/hostile/test_fuzz_inputs.py` fuzzes for longer
(see docs/operations.md)."""

from __future__ import annotations

import math
import os
import time
import urllib.error
import urllib.request

import pytest
from apiusage.conventions.attributes import (
    ATTR_BODY_FIELDS,
    ATTR_QUERY_PARAMETERS,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
)
from apiusage.demo.otlp import ExportTraceServiceRequest, set_value
from apiusage.processor.config import LimitsConfig, UsageConfig
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import Deriver, span_field_sources
from apiusage.processor.exporters.exposition import exposition
from apiusage.processor.exporters.prometheus import UsageCollector, build_registry
from apiusage.processor.pipeline import SpanQueue, Worker
from apiusage.processor.receivers import scan
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.receivers.payload import InvalidPayload, json_to_protobuf
from apiusage.processor.receivers.scan import PyScanner, ScanError
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.state.store import SqliteStore
from apiusage.processor.telemetry import PipelineStats
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.examples import examples
from tests.support.otlp import request_with_spans
from tests.support.processor import running_processor
from tests.support.reentrancy import exact, gc_hook, outcome

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("APIUSAGE_FUZZ_EXAMPLES", "0")) or examples(150)
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KEYS = [
    "http.request.method",
    "http.route",
    "http.response.status_code",
    "url.path",
    "http.target",
    "user_agent.original",
    "apiusage.consumer.id",
    "apiusage.consumer.plan_tier",
    "apiusage.client.name",
    "apiusage.client.version",
    "apiusage.feature",
    "apiusage.endpoint.deprecated",
    "apiusage.schema_version",
    "http.method",
    "http.status_code",
]
ARRAY_KEYS = [ATTR_QUERY_PARAMETERS, ATTR_BODY_FIELDS, ATTR_VALIDATION_LOCATIONS, ATTR_VALIDATION_TYPES]
KEYS += ARRAY_KEYS
nasty_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=20),  # control characters
    st.builds(lambda n: "x" * n, st.integers(1000, 100_000)),  # huge strings
    st.sampled_from(["GET", "POST", "/v1/orders/{id}", "200", "", "\x00", "é" * 300, "../../etc"]),
)
scalars = st.one_of(
    nasty_text,
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),  # an empty AnyValue
)
# Arrays of anything (nested arrays, kvlists and bytes inside), and long ones: past max_array_items.
arrays = st.one_of(
    st.recursive(
        st.lists(st.one_of(scalars, st.binary(max_size=3)), max_size=4),
        lambda inner: st.lists(
            st.one_of(scalars, inner, st.dictionaries(st.sampled_from(["k", ""]), inner, max_size=2)),
            max_size=4,
        ),
        max_leaves=12,
    ),
    st.builds(lambda n, name: [f"{name}{i}" for i in range(n)], st.integers(60, 3000), st.text(max_size=8)),
)
values = st.one_of(scalars, arrays, st.binary(max_size=4))
timestamps = st.one_of(st.integers(0, 2**64 - 1), st.just(0), st.just(2**64 - 1), st.just(time.time_ns()))


@st.composite
def requests(draw) -> bytes:
    req = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 3))):
        rs = req.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key = "service.name"
        set_value(kv.value, draw(values))  # None: an empty AnyValue
        scope = rs.scope_spans.add()
        for _ in range(draw(st.integers(0, 6))):
            span = scope.spans.add()
            span.trace_id = draw(st.binary(min_size=16, max_size=16))
            span.span_id = draw(st.binary(min_size=8, max_size=8))
            span.kind = draw(st.sampled_from([0, 1, 2, 2, 2, 3, 99]))
            span.start_time_unix_nano = draw(timestamps)
            span.end_time_unix_nano = draw(timestamps)
            span.trace_state = draw(st.sampled_from(["", "ot=th:8", "ot=th:zz", "ot=p:99", "x=y"]))
            for key in draw(st.lists(st.sampled_from(KEYS), max_size=10)):
                kv = span.attributes.add()
                kv.key = key
                set_value(kv.value, draw(values))
    return req.SerializeToString()


def _pipeline():
    stats = PipelineStats()
    scanner = FieldScanner(span_field_sources(UsageConfig()), [("service.name",)])
    limits = LimitsConfig(max_label_length=64)
    metrics = RequestMetrics(limits, (0.1, 1.0), stats)
    activity = ConsumerActivity(400, stats)
    queue = SpanQueue(10_000)
    worker = Worker(queue, Deriver(UsageConfig(), stats), [metrics, activity], stats)
    registry = build_registry(UsageCollector(metrics, stats, queue, worker, "c", "test"))
    return scanner, Deriver(UsageConfig(), stats), metrics, activity, registry


@FUZZ
@given(body=requests())
def test_any_span_content_flows_to_metrics_without_errors(body: bytes) -> None:
    scanner, deriver, metrics, activity, registry = _pipeline()
    resources, spans = scanner.scan(body)
    derived = deriver.derive(resources, spans)
    metrics.consume(derived)
    activity.consume(derived)
    store = SqliteStore(":memory:")
    store.migrate()
    store.write(activity.drain())  # whatever the spans held, the store takes it
    assert store.query("PRAGMA integrity_check") == [("ok",)]
    store.close()
    text = exposition(registry, metrics, "")[0].decode()
    assert exposition(registry, metrics, "application/openmetrics-text")[0].endswith(b"# EOF\n")
    snapshot = metrics.snapshot()
    for series in snapshot.counters.values():
        for key, value in series.items():
            assert all(isinstance(v, str) and len(v) <= 64 and v.isprintable() for v in key)
            assert math.isfinite(value) and value > 0
    for _, count, total, _ in snapshot.histograms.values():
        assert count > 0 and math.isfinite(total) and total >= 0
    assert "api_requests_total" in text or not derived


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.sampled_from(
                [
                    "resourceSpans",
                    "scopeSpans",
                    "spans",
                    "traceId",
                    "spanId",
                    "kind",
                    "attributes",
                    "key",
                    "value",
                    "stringValue",
                    "intValue",
                    "startTimeUnixNano",
                    "links",
                    "resource",
                    "x",
                ]
            ),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=30,
)


@FUZZ
@given(doc=json_values)
def test_json_decoder_accepts_or_explains(doc) -> None:
    import json

    try:
        body = json.dumps(doc).encode()
    except ValueError:
        return
    try:
        out = json_to_protobuf(body)
    except InvalidPayload as exc:
        assert str(exc)
    else:
        assert isinstance(out, bytes)


@FUZZ
@given(body=st.binary(max_size=300))
def test_json_decoder_on_arbitrary_bytes(body: bytes) -> None:
    try:
        json_to_protobuf(body)
    except InvalidPayload:
        pass


def test_deeply_nested_values_and_bad_utf8_are_answered_not_crashed() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    try:
        json_to_protobuf(('{"resourceSpans": ' + deep + "}").encode())
    except InvalidPayload:
        pass
    good = request_with_spans(1).SerializeToString()
    bad_utf8 = good.replace(b"orders-api", b"orders\xff\xfeapi")
    with running_processor() as running:
        for body, status in ((bad_utf8, 400), (good, 200), (b"\x0a" * 5000, 400), (good, 200)):
            req = urllib.request.Request(
                f"{running.http_endpoint}/v1/traces",
                data=body,
                headers={"Content-Type": "application/x-protobuf"},
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as response:
                    assert response.status == status
            except urllib.error.HTTPError as exc:
                assert exc.code == status
        running.wait_processed(2)


def test_scanner_refuses_invalid_utf8_in_values_it_returns() -> None:
    scanner = FieldScanner(span_field_sources(UsageConfig()), [("service.name",)])
    good = request_with_spans(1).SerializeToString()
    try:
        scanner.scan(good.replace(b"/v1/orders", b"/v1/\xc3\x28rder"))  # same length
    except ScanError as exc:
        assert "invalid UTF-8" in str(exc)
    else:
        raise AssertionError("invalid UTF-8 in a returned value must be refused")


def _c_scanner_class() -> type:
    if scan.CScanner is None:
        reason = f"C scanner extension not importable: {scan.C_IMPORT_ERROR}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return scan.CScanner


FUZZ_SPAN_GROUPS = [tuple(g) for g in span_field_sources(UsageConfig()) if not set(g) & set(ARRAY_KEYS)] + [
    (k,) for k in ARRAY_KEYS
]
FUZZ_KEYS = sorted({k for g in FUZZ_SPAN_GROUPS for k in g})


@FUZZ
@given(
    body=requests(),
    max_array_items=st.sampled_from([64, 0, 1, 3]),
    array_keys=st.one_of(st.just(ARRAY_KEYS), st.lists(st.sampled_from(FUZZ_KEYS), max_size=6)),
)
def test_scanners_agree_on_fuzzed_arrays(body: bytes, max_array_items: int, array_keys: list[str]) -> None:
    """C and reference scanner: the same tuples, cut after max_array_items + 1 elements, and only
    for fields with an array key (any other field takes no array: its group's next key is tried)."""
    span_groups, resource_groups = FUZZ_SPAN_GROUPS, [("service.name",)]
    c = _c_scanner_class()(
        span_groups, resource_groups, max_array_items=max_array_items, array_keys=array_keys
    )
    got = c.scan(body)
    reference = PyScanner(
        span_groups, resource_groups, max_array_items=max_array_items, array_keys=array_keys
    )
    assert exact(got) == exact(reference.scan(body))
    limit = max_array_items + 1 if max_array_items else 0
    assert not any(isinstance(v, tuple) for row in got[0] for v in row)
    for span in got[1]:
        for group, value in zip(span_groups, span[8:], strict=True):
            if isinstance(value, tuple):
                assert set(group) & set(array_keys), (group, value)
                assert len(value) <= limit
                assert all(v is None or isinstance(v, (str, bool, int, float)) for v in value)


# --------------------------------------------------------------------------
# Reentrancy: a call started while another is suspended inside (a gc callback or finalizer runs
# mid-call) must change neither result.

SPAN_GROUPS = [tuple(g) for g in span_field_sources(UsageConfig())]
RESOURCE_GROUPS = [("service.name",)]
REFERENCE = PyScanner(SPAN_GROUPS, RESOURCE_GROUPS)


def _parses(body: bytes) -> bool:
    try:
        ExportTraceServiceRequest.FromString(body)
    except DecodeError:
        return False
    return True


def _reentered(call, outer, inners: list) -> tuple[object, list[tuple[int, object]]]:
    """call(outer)'s outcome with every collection inside it running call() on the next of inners,
    and [(index into inners, outcome)] of those nested calls."""
    nested: list[int] = []

    def nested_call() -> object:
        nested.append(len(nested) % len(inners))
        return call(inners[nested[-1]])

    with gc_hook(nested_call, limit=10) as hook:
        got = outcome(lambda: call(outer))
    return got, list(zip(nested, hook.outcomes, strict=True))


nested_bodies = st.lists(
    st.one_of(
        requests(),
        requests().flatmap(lambda b: st.integers(0, len(b)).map(lambda cut: b[:cut])),
        st.binary(max_size=200),
    ),
    min_size=1,
    max_size=2,
)


@FUZZ
@given(outer=requests(), inners=nested_bodies)
def test_scanner_reentered_mid_scan_keeps_both_results(outer: bytes, inners: list[bytes]) -> None:
    scanner = FieldScanner(SPAN_GROUPS, RESOURCE_GROUPS)  # C when the extension is built
    alone = [outcome(lambda b=b: scanner.scan(b)) for b in inners]
    got, nested = _reentered(scanner.scan, outer, inners)
    assert got == exact(REFERENCE.scan(outer))
    for i, result in nested:
        assert result == alone[i]
        if _parses(inners[i]):
            assert result == exact(REFERENCE.scan(inners[i]))


def _json_body(doc) -> bytes:
    import json

    try:
        return json.dumps(doc).encode()
    except ValueError:
        return b"{"


@FUZZ
@given(outer=json_values, inners=st.lists(json_values, min_size=1, max_size=3))
def test_json_decoder_reentered_mid_decode_keeps_both_results(outer, inners: list) -> None:
    outer_body, inner_bodies = _json_body(outer), [_json_body(d) for d in inners]
    alone_outer = outcome(lambda: json_to_protobuf(outer_body))
    alone = [outcome(lambda b=b: json_to_protobuf(b)) for b in inner_bodies]
    got, nested = _reentered(json_to_protobuf, outer_body, inner_bodies)
    assert got == alone_outer
    assert [result for _, result in nested] == [alone[i] for i, _ in nested]
