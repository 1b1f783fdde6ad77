"""The OTLP trace scanners: C extension and pure-Python reference.

Every behavioural test runs against both implementations.  With CI=true a
missing C extension fails the run instead of skipping.
"""

from __future__ import annotations

import math
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import sysconfig
import tracemalloc
from pathlib import Path

import pytest
from apiusage.processor.receivers import scan
from apiusage.processor.receivers.scan import PyScanner, ScanError
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tests.support.examples import examples


def _c_scanner() -> type:
    if scan.CScanner is None:
        reason = f"C scanner extension not importable: {scan.C_IMPORT_ERROR}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return scan.CScanner


@pytest.fixture(scope="module")
def c_required() -> None:
    """For tests that use both scanners internally (fails or skips before any example runs)."""
    _c_scanner()


@pytest.fixture(params=["c", "python"])
def impl(request: pytest.FixtureRequest) -> type:
    return _c_scanner() if request.param == "c" else PyScanner


# --------------------------------------------------------------------------
# Wire-format helpers for hand-made payloads


def varint(value: int, pad: int = 0) -> bytes:
    """Encode value (mod 2**64) as a varint, optionally with `pad` redundant bytes."""
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value or pad:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
        if not value:
            out.extend([0x80] * (pad - 1) + [0x00])
            return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint(field << 3 | wire_type)


def ld(field: int, payload: bytes) -> bytes:
    return tag(field, 2) + varint(len(payload)) + payload


def vi(field: int, value: int) -> bytes:
    return tag(field, 0) + varint(value)


def f64(field: int, value: int) -> bytes:
    return tag(field, 1) + struct.pack("<Q", value & (1 << 64) - 1)


def f32(field: int, value: int) -> bytes:
    return tag(field, 5) + struct.pack("<I", value & (1 << 32) - 1)


def one_span(span: bytes) -> bytes:
    """A request holding one ResourceSpans > ScopeSpans > Span (span at byte 6 if short)."""
    return ld(1, ld(2, ld(2, span)))


def kv_str(key: str, value: str) -> bytes:
    return ld(1, key.encode()) + ld(2, ld(1, value.encode()))


def kv(key: str, **value: object) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def parses(data: bytes) -> bool:
    try:
        ExportTraceServiceRequest.FromString(data)
    except DecodeError:
        return False
    return True


def typed(result: object) -> object:
    """Make results comparable exactly: keep types (True != 1) and float bits (NaN)."""
    if isinstance(result, (list, tuple)):
        return type(result)(typed(x) for x in result)
    if isinstance(result, float):
        return ("float", struct.pack("<d", result))
    return (type(result).__name__, result)


# --------------------------------------------------------------------------
# Well-formed requests

SPAN_KEYS = [
    "http.route",
    "str",
    "bool",
    "neg",
    "dbl",
    "arr",
    "kv",
    "bin",
    "empty",
    "novalue",
    "ключ",
    "missing",
    "max",
    "min",
]
RESOURCE_KEYS = ["service.name", "deployment.environment"]
TRACE_ID = bytes(range(16))
SPAN_ID = bytes(range(100, 108))


def full_request() -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        kv("service.name", string_value="old"),
                        kv("deployment.environment", string_value="prod"),
                        kv("host.name", string_value="h1"),
                        kv("service.name", string_value="checkout"),
                    ]
                ),
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=TRACE_ID,
                                span_id=SPAN_ID,
                                trace_state="vendor=x,other=y",
                                name="GET /orders/{id}",
                                kind=Span.SPAN_KIND_SERVER,
                                start_time_unix_nano=1_700_000_000_123_456_789,
                                end_time_unix_nano=2**64 - 1,
                                status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
                                attributes=[
                                    kv("http.route", string_value="/a"),
                                    kv("str", string_value="plain"),
                                    kv("bool", bool_value=True),
                                    kv("neg", int_value=-42),
                                    kv("dbl", double_value=3.25),
                                    kv(
                                        "arr",
                                        array_value=ArrayValue(values=[AnyValue(string_value="x")]),
                                    ),
                                    kv(
                                        "kv",
                                        kvlist_value=KeyValueList(values=[kv("inner", int_value=1)]),
                                    ),
                                    kv("bin", bytes_value=b"\x00\xff"),
                                    KeyValue(key="empty", value=AnyValue()),
                                    KeyValue(key="novalue"),
                                    kv("ключ", string_value="значение ✓ 🚀"),
                                    kv("unwanted", string_value="zzz"),
                                    kv("http.route", string_value="/b"),
                                    kv("max", int_value=2**63 - 1),
                                    kv("min", int_value=-(2**63)),
                                ],
                            ),
                            Span(),
                        ]
                    ),
                    ScopeSpans(
                        spans=[
                            Span(
                                kind=Span.SPAN_KIND_CLIENT,
                                attributes=[kv("bool", bool_value=False), kv("dbl", double_value=-0.5)],
                            )
                        ]
                    ),
                ],
            ),
            ResourceSpans(),
            ResourceSpans(
                resource=Resource(attributes=[kv("other", string_value="x")]),
                scope_spans=[
                    ScopeSpans(spans=[Span(status=Status(message="only a message"))]),
                    ScopeSpans(),
                ],
            ),
        ]
    )


EMPTY_ATTRS = (None,) * len(SPAN_KEYS)
FULL_EXPECTED = (
    [("checkout", "prod"), (None, None), (None, None)],
    [
        (
            0,
            2,
            1_700_000_000_123_456_789,
            2**64 - 1,
            TRACE_ID,
            SPAN_ID,
            "vendor=x,other=y",
            2,
            "/b",
            "plain",
            True,
            -42,
            3.25,
            None,  # "arr": not an array key
            None,
            None,
            None,
            None,
            "значение ✓ 🚀",
            None,
            2**63 - 1,
            -(2**63),
        ),
        (0, 0, 0, 0, b"", b"", "", 0) + EMPTY_ATTRS,
        (0, 3, 0, 0, b"", b"", "", 0, None, None, False, None, -0.5) + (None,) * 9,
        (2, 0, 0, 0, b"", b"", "", 0) + EMPTY_ATTRS,
    ],
)


def test_full_request(impl: type) -> None:
    data = full_request().SerializeToString()
    result = impl(SPAN_KEYS, RESOURCE_KEYS).scan(data)
    assert typed(result) == typed(FULL_EXPECTED)
    scanner = impl(SPAN_KEYS, RESOURCE_KEYS, array_keys=["arr", "str"])
    assert scanner.array_keys == ("arr", "str")
    resources, spans = scanner.scan(data)
    arr = 8 + SPAN_KEYS.index("arr")
    assert typed(spans[0]) == typed(FULL_EXPECTED[1][0][:arr] + (("x",),) + FULL_EXPECTED[1][0][arr + 1 :])
    assert typed((resources, spans[1:])) == typed((FULL_EXPECTED[0], FULL_EXPECTED[1][1:]))


def test_empty_payload_and_empty_key_lists(impl: type) -> None:
    assert impl([], []).scan(b"") == ([], [])
    data = full_request().SerializeToString()
    resources, spans = impl([], []).scan(data)
    assert resources == [(), (), ()]
    assert [s[:2] for s in spans] == [(0, 2), (0, 0), (0, 3), (2, 0)]


def test_bytes_like_input(impl: type) -> None:
    data = full_request().SerializeToString()
    scanner = impl(SPAN_KEYS, RESOURCE_KEYS)
    expected = typed(FULL_EXPECTED)
    assert typed(scanner.scan(bytearray(data))) == expected
    assert typed(scanner.scan(memoryview(data))) == expected
    with pytest.raises(TypeError):
        scanner.scan("not bytes")


def test_repeated_and_empty_wanted_keys(impl: type) -> None:
    data = one_span(ld(9, kv_str("a", "1")) + ld(9, ld(2, ld(1, b"nokey"))))
    scanner = impl(["a", "", "a", "b"], ["a", "a"])
    assert scanner.span_keys == ("a", "", "a", "b")
    assert scanner.resource_keys == ("a", "a")
    assert scanner.scan(data) == (
        [(None, None)],
        [(0, 0, 0, 0, b"", b"", "", 0, "1", "nokey", "1", None)],
    )


def test_groups_take_their_first_key_with_a_value(impl: type) -> None:
    kvlist = ld(9, ld(1, b"a") + ld(2, ld(6, b"")))  # key "a" with a kvlist value: None
    data = one_span(
        ld(9, kv_str("b", "from-b"))
        + kvlist
        + ld(9, kv_str("c", "from-c"))
        + ld(9, kv_str("d", "d1"))
        + ld(9, kv_str("d", "d2"))
    )
    scanner = impl([("a", "b"), ("c", "b2"), ("zz",), "d", ["x", "d2"]], [("a",)])
    assert scanner.span_keys == (("a", "b"), ("c", "b2"), ("zz",), "d", ("x", "d2"))
    assert scanner.scan(data) == (
        [(None,)],
        [(0, 0, 0, 0, b"", b"", "", 0, "from-b", "from-c", None, "d2", None)],
    )
    # The earlier key of a group wins whatever the wire order.
    later = one_span(ld(9, kv_str("b", "1")) + ld(9, kv_str("a", "2")))
    assert impl([("a", "b")], []).scan(later)[1][0][8] == "2"
    # An array key's array is a value, even an empty one: it is present, unlike None.
    empty = one_span(ld(9, kv_str("b", "1")) + ld(9, ld(1, b"a") + ld(2, ld(5, b""))))
    assert impl([("a", "b")], [], array_keys=["a"]).scan(empty)[1][0][8] == ()
    assert impl([("a", "b")], [], max_array_items=0, array_keys=["a"]).scan(empty)[1][0][8] == ()
    # Under any other key an array is absent: the group's next key is tried.
    assert impl([("a", "b")], []).scan(empty)[1][0][8] == "1"
    assert impl([("a", "b")], [], array_keys=["b"]).scan(empty)[1][0][8] == "1"
    novalue = one_span(ld(9, kv_str("b", "1")) + ld(9, ld(1, b"a")))  # "a" without a value: None
    assert impl([("a", "b")], []).scan(novalue)[1][0][8] == "1"


def test_many_grouped_keys(impl: type) -> None:
    # 3 x 40 span keys + 30 resource keys: more per-call value slots than the C scanner keeps on its stack
    span_groups = [(f"a{i}", f"b{i}", f"c{i}") for i in range(40)]
    resource_groups = [(f"r{i}",) for i in range(30)]
    attrs = b"".join(ld(9, kv_str(f"{k}{i}", f"{k}{i}v")) for i in range(0, 40, 3) for k in "cb")
    resource = ld(1, kv_str("r29", "last")) + ld(1, kv_str("r0", "first"))
    data = ld(1, ld(1, resource) + ld(2, ld(2, attrs)))
    expected_span = [f"b{i}v" if i % 3 == 0 else None for i in range(40)]
    resources, spans = impl(span_groups, resource_groups).scan(data)
    assert resources == [("first",) + (None,) * 28 + ("last",)]
    assert spans == [(0, 0, 0, 0, b"", b"", "", 0, *expected_span)]


def test_a_key_in_two_groups_is_refused(impl: type) -> None:
    with pytest.raises(ValueError, match="key 'b' appears in more than one group"):
        impl([("a", "b"), ("b",)], [])
    with pytest.raises(ValueError, match="a group needs at least one key"):
        impl([()], [])


def test_key_arguments_are_checked(impl: type) -> None:
    with pytest.raises(TypeError):
        impl("http.route", [])
    with pytest.raises(TypeError):
        impl([b"http.route"], [])
    with pytest.raises(TypeError):
        impl([], [1])
    with pytest.raises(UnicodeEncodeError):
        impl(["\ud800"], [])


def test_fields_out_of_order(impl: type) -> None:
    # KeyValue with value before key, span fields in reverse, resource after scope_spans.
    span = (
        ld(9, ld(2, ld(1, b"v")) + ld(1, b"a"))
        + f64(8, 20)
        + ld(15, vi(3, 1))
        + vi(6, 3)
        + f64(7, 10)
        + ld(3, b"ts=1")
        + ld(2, b"S" * 8)
        + ld(1, b"T" * 16)
    )
    resource = ld(1, kv_str("service.name", "svc"))
    data = ld(1, ld(2, ld(3, b"schema") + ld(2, span) + ld(1, b"")) + ld(1, resource))
    assert parses(data)
    assert impl(["a"], ["service.name"]).scan(data) == (
        [("svc",)],
        [(0, 3, 10, 20, b"T" * 16, b"S" * 8, "ts=1", 1, "v")],
    )


def test_duplicate_singular_messages_merge(impl: type) -> None:
    resource_1 = ld(1, kv_str("service.name", "first") + b"") + ld(1, kv_str("env", "dev"))
    resource_2 = ld(1, kv_str("service.name", "second"))
    span = (
        ld(15, vi(3, 2) + ld(2, b"msg"))
        + ld(15, ld(2, b"no code: keeps 2"))
        # KeyValue.value twice: string then empty keeps the string ...
        + ld(9, ld(1, b"a") + ld(2, ld(1, b"x")) + ld(2, b""))
        # ... string then int switches the oneof to int ...
        + ld(9, ld(1, b"b") + ld(2, ld(1, b"x")) + ld(2, vi(3, 7)))
        # ... and a key given twice uses the last one.
        + ld(9, ld(1, b"zzz") + ld(2, vi(3, 9)) + ld(1, b"c"))
        # string then string-table index: not a value we return
        + ld(9, ld(1, b"d") + ld(2, ld(1, b"x") + vi(8, 5)))
        + f64(7, 5)
        + f64(7, 6)
    )
    data = ld(1, ld(1, resource_1) + ld(2, ld(2, span)) + ld(1, resource_2))
    assert parses(data)
    assert impl(["a", "b", "c", "d", "zzz"], ["service.name", "env"]).scan(data) == (
        [("second", "dev")],
        [(0, 0, 6, 0, b"", b"", "", 2, "x", 7, 9, None, None)],
    )
    # an explicit code 0 in a later Status occurrence wins
    data = one_span(ld(15, vi(3, 2)) + ld(15, vi(3, 0)))
    assert impl([], []).scan(data)[1] == [(0, 0, 0, 0, b"", b"", "", 0)]


def test_unknown_fields_and_wrong_wire_types_are_skipped(impl: type) -> None:
    unknown = (
        vi(99, 1)
        + f64(100, 2)
        + ld(101, b"\xff\xfe not utf-8, not parsed")
        + f32(102, 3)
        + tag(103, 3)
        + vi(1, 5)
        + tag(104, 3)
        + tag(104, 4)
        + tag(103, 4)
        + tag(105, 3)
        + b"\x00\x00\x02\x00"  # field number 0 is accepted inside unknown groups
        + tag(105, 4)
        + vi(2**29 - 1, 1)
    )
    span = (
        unknown
        + ld(6, b"kind as bytes")  # known numbers, unexpected wire types
        + vi(7, 123)
        + f32(8, 4)
        + vi(9, 1)
        + vi(15, 1)
        + vi(1, 1)
        + tag(9, 3)
        + tag(9, 4)
        + ld(9, unknown + ld(1, b"a") + unknown + ld(2, unknown + vi(1, 3) + vi(3, -1)))
        + ld(9, ld(1, b"b") + ld(2, ld(2, b"") + f32(4, 1) + ld(3, b"") + vi(3, 8)))
        + ld(15, unknown + ld(3, b"") + vi(3, 1))
        + vi(6, 1)
        + b"\x8a\x80\x80\x80\x00"  # 5-byte non-canonical tag: field 1, wire type 2
        + varint(2)
        + b"id"
        + vi(16, 5)  # flags: fixed32 in the schema
    )
    resource = unknown + ld(1, unknown + kv_str("service.name", "svc"))
    data = unknown + ld(1, unknown + ld(1, resource) + ld(2, unknown + ld(2, span)) + unknown)
    assert parses(data)
    assert impl(["a", "b"], ["service.name"]).scan(data) == (
        [("svc",)],
        [(0, 1, 0, 0, b"id", b"", "", 1, -1, 8)],
    )


def test_enums_are_int32_and_varints_may_be_padded(impl: type) -> None:
    data = one_span(
        vi(6, -1)  # 10-byte varint
        + ld(15, vi(3, 2**32 + 3))
        + ld(9, ld(1, b"i") + ld(2, tag(3, 0) + varint(5, pad=4)))
        + ld(9, ld(1, b"b") + ld(2, vi(2, 2)))  # any non-zero is True
        + ld(9, ld(1, b"o") + ld(2, tag(3, 0) + b"\xff" * 9 + b"\x7f"))  # overflow bits dropped
    )
    assert parses(data)
    assert impl(["i", "b", "o"], []).scan(data)[1] == [(0, -1, 0, 0, b"", b"", "", 3, 5, True, -1)]
    data = one_span(vi(6, 2**31) + ld(15, vi(3, 2**32 - 1)))
    assert impl([], []).scan(data)[1] == [(0, -(2**31), 0, 0, b"", b"", "", -1)]


def test_special_doubles(impl: type) -> None:
    values = [float("inf"), float("-inf"), -0.0, 5e-324, float("nan")]
    data = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[Span(attributes=[kv(str(i), double_value=v) for i, v in enumerate(values)])]
                    )
                ]
            )
        ]
    ).SerializeToString()
    got = impl([str(i) for i in range(len(values))], []).scan(data)[1][0][8:]
    assert [struct.pack("<d", v) for v in got] == [struct.pack("<d", v) for v in values]
    assert math.isnan(got[-1])


def test_deep_nesting_does_not_recurse(impl: type) -> None:
    value = b""
    for _ in range(1000):  # kvlist > KeyValue > AnyValue > kvlist > ...
        value = ld(6, ld(1, ld(1, b"k") + ld(2, value)))
    data = one_span(ld(9, ld(1, b"deep") + ld(2, value)) + ld(9, kv_str("a", "ok")))
    if impl is PyScanner:
        with pytest.raises(ScanError):  # protobuf refuses more than 100 levels
            impl(["deep", "a"], []).scan(data)
    else:  # skipped by length, never looked into
        assert impl(["deep", "a"], []).scan(data)[1][0][8:] == (None, "ok")
    value = ld(1, b"in")
    for _ in range(1000):  # array > AnyValue > array > ...: only the outer array's elements are read
        value = ld(5, ld(1, value))
    data = one_span(ld(9, ld(1, b"deep") + ld(2, value)) + ld(9, kv_str("a", "ok")))
    if impl is PyScanner:
        with pytest.raises(ScanError):
            impl(["deep", "a"], [], array_keys=["deep"]).scan(data)
    else:
        assert impl(["deep", "a"], [], array_keys=["deep"]).scan(data)[1][0][8:] == ((None,), "ok")
        assert impl(["deep", "a"], []).scan(data)[1][0][8:] == (None, "ok")  # never walked

    groups = tag(99, 3) * 3000 + tag(99, 4) * 3000
    with pytest.raises(ScanError, match="nested too deeply"):
        impl([], []).scan(one_span(groups))


# --------------------------------------------------------------------------
# Array values


def element(**value: object) -> bytes:
    """One ArrayValue.values entry."""
    return ld(1, AnyValue(**value).SerializeToString())


def array_span(*values: bytes, key: bytes = b"a") -> bytes:
    """A request with one span whose attribute `key` has the AnyValue fields `values` (raw)."""
    return one_span(ld(9, ld(1, key) + ld(2, b"".join(values))))


ELEMENTS = (
    element(string_value="q")
    + element(string_value="")
    + element(string_value="ünï 🚀")
    + element(bool_value=True)
    + element(bool_value=False)
    + element(int_value=-(2**63))
    + element(double_value=-0.5)
    + element(array_value=ArrayValue(values=[AnyValue(string_value="nested")]))
    + element(kvlist_value=KeyValueList(values=[kv("k", string_value="v")]))
    + element(bytes_value=b"\x00\xff")
    + ld(1, b"")  # an empty AnyValue
    + ld(1, vi(8, 3))  # string_value_strindex
    + ld(1, ld(1, b"first") + vi(3, 7))  # two members of the oneof: the last wins
    + ld(1, ld(5, b"") + ld(1, b"last"))
    + ld(1, ld(1, b"x") + ld(5, b""))
    + ld(1, vi(99, 1) + ld(1, b"junk around") + f32(98, 0))  # unknown fields skipped
    + vi(2, 5)  # an unknown ArrayValue field
)
ELEMENTS_EXPECTED = (
    "q",
    "",
    "ünï 🚀",
    True,
    False,
    -(2**63),
    -0.5,
    None,
    None,
    None,
    None,
    None,
    7,
    "last",
    None,
    "junk around",
)


def test_array_elements_convert_like_scalar_values(impl: type) -> None:
    data = array_span(ld(5, ELEMENTS))
    assert parses(data)
    resources, spans = impl(["a", "b"], [], array_keys=["a"]).scan(data)
    assert typed(spans[0][8:]) == typed((ELEMENTS_EXPECTED, None))
    assert impl(["a", "b"], []).scan(data)[1][0][8:] == (None, None)  # "a" is not an array key
    empty = array_span(ld(5, b""))
    assert impl(["a"], [], array_keys=["a"]).scan(empty)[1][0][8:] == ((),)
    assert impl(["a"], []).scan(empty)[1][0][8:] == (None,)
    # resource keys have no array keys: a resource array is absent
    resource = ld(
        1, ld(1, ld(1, ld(1, b"r") + ld(2, ld(5, element(string_value="x") + element(int_value=2)))))
    )
    assert impl([], ["r"]).scan(resource)[0] == [(None,)]
    assert impl([], [("r", "s")]).scan(resource + ld(1, ld(1, ld(1, kv_str("s", "y")))))[0] == [
        (None,),
        ("y",),
    ]


def test_arrays_are_cut_after_max_array_items_plus_one(impl: type) -> None:
    data = array_span(ld(5, b"".join(element(int_value=i) for i in range(100))))
    for bound, length in [(64, 65), (1, 2), (98, 99), (99, 100), (100, 100), (sys.maxsize, 100)]:
        scanner = impl(["a"], [], max_array_items=bound, array_keys=["a"])
        assert scanner.scan(data)[1][0][8] == tuple(range(length))
    assert impl(["a"], [], max_array_items=0, array_keys=["a"]).scan(data)[1][0][8] == ()
    assert impl(["a"], [], array_keys=["a"]).scan(data)[1][0][8] == tuple(range(65))  # default 64
    # cut where merged array_value fields meet
    merged = array_span(*(ld(5, element(int_value=i) + element(int_value=-i)) for i in range(3)))
    assert impl(["a"], [], max_array_items=2, array_keys=["a"]).scan(merged)[1][0][8] == (0, 0, 1)


def test_array_elements_past_the_cut_are_never_converted(impl: type) -> None:
    """The C scanner skips them by length: an invalid one there is not seen (protobuf sees it)."""
    data = array_span(ld(5, element(string_value="ok") * 3 + ld(1, ld(1, b"\xff"))))
    assert not parses(data)
    with pytest.raises(ScanError, match=r"^invalid UTF-8 \(AnyValue.string_value\) at byte 37$"):
        impl(["a"], [], max_array_items=3, array_keys=["a"]).scan(data)
    if impl is PyScanner:
        with pytest.raises(ScanError, match=r"^invalid UTF-8 \(AnyValue.string_value\) at byte 37$"):
            impl(["a"], [], max_array_items=2, array_keys=["a"]).scan(data)
    else:
        assert impl(["a"], [], max_array_items=2, array_keys=["a"]).scan(data)[1][0][8] == ("ok",) * 3
        assert impl(["a"], [], max_array_items=0, array_keys=["a"]).scan(data)[1][0][8] == ()
        assert impl(["b"], []).scan(data)[1][0][8] is None  # an unwanted key's array is skipped
        assert impl(["a"], []).scan(data)[1][0][8] is None  # so is a scalar key's


A1 = ld(5, element(string_value="x"))
A2 = ld(5, element(string_value="y") + element(string_value="z"))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([A1, A2], ("x", "y", "z")),  # repeated array_value fields merge
        ([A1, ld(5, b""), A2], ("x", "y", "z")),
        ([A1, vi(99, 1), vi(5, 1), A2], ("x", "y", "z")),  # unknown fields, field 5 as a varint
        ([A1, ld(1, b"s"), A2], ("y", "z")),  # another member of the oneof starts afresh
        ([A1, vi(2, 1), A2], ("y", "z")),
        ([A1, ld(6, b""), A2], ("y", "z")),
        ([A1, ld(7, b""), A2], ("y", "z")),
        ([A1, vi(8, 0), A2], ("y", "z")),
        ([A1, ld(1, b"s")], "s"),
        ([ld(1, b"s"), A1], ("x",)),
        ([A1, ld(6, b"")], None),
    ],
)
def test_repeated_array_value_fields_merge_like_protobuf(
    impl: type, values: list[bytes], expected: object
) -> None:
    data = array_span(*values)
    scanner = impl(["a"], [], array_keys=["a"])
    assert scanner.scan(data)[1][0][8] == expected
    assert impl(["a"], []).scan(data)[1][0][8] == (None if isinstance(expected, tuple) else expected)
    # as merged KeyValue.value fields, with the key anywhere
    parts = [ld(2, v) for v in values]
    for at in range(len(parts) + 1):
        attribute = b"".join(parts[:at]) + ld(1, b"a") + b"".join(parts[at:])
        assert scanner.scan(one_span(ld(9, attribute)))[1][0][8] == expected
    # which is what protobuf makes of it
    value = KeyValue.FromString(b"".join(parts)).value
    if value.WhichOneof("value") == "array_value":
        assert tuple(v.string_value for v in value.array_value.values) == expected


def test_last_occurrence_of_a_key_wins_with_arrays(impl: type) -> None:
    arr = ld(9, ld(1, b"a") + ld(2, A2))
    for attributes, expected in [
        (arr + ld(9, kv_str("a", "s")), "s"),
        (ld(9, kv_str("a", "s")) + arr, ("y", "z")),
        (arr + ld(9, ld(1, b"a") + ld(2, ld(6, b""))), None),
        (arr + ld(9, ld(1, b"a") + ld(2, A1)), ("x",)),  # separate attributes do not merge
    ]:
        assert impl(["a"], [], array_keys=["a"]).scan(one_span(attributes))[1][0][8] == expected
        assert impl([("a", "b")], [], array_keys=["a"]).scan(one_span(attributes))[1][0][8] == expected
        # under a scalar key the last occurrence wins too, an array being absent
        scalar = None if isinstance(expected, tuple) else expected
        assert impl([("a", "b")], []).scan(one_span(attributes))[1][0][8] == scalar


def test_max_array_items_argument(impl: type) -> None:
    assert impl([], []).max_array_items == 64
    assert impl([], [], max_array_items=7).max_array_items == 7
    assert impl([], [], 5, 7).max_array_items == 7
    assert impl([], [], max_array_items=0).max_array_items == 0
    with pytest.raises(ValueError, match=r"^max_array_items must be 0 \(no array items\) or more, not -1$"):
        impl([], [], max_array_items=-1)
    with pytest.raises(TypeError):
        impl([], [], max_array_items="10")
    with pytest.raises(TypeError):
        impl([], [], max_array_items=1.5)
    with pytest.raises(OverflowError):
        impl([], [], max_array_items=2**63)


@pytest.mark.parametrize(
    "fields", [[("a", "b"), ("c",)], [("a", "b"), ("a",)]], ids=["grouped", "shared key"]
)
def test_field_scanner_passes_max_array_items_through(fields: list[tuple[str, ...]]) -> None:
    from apiusage.processor.receivers.fields import FieldScanner

    data = array_span(ld(5, b"".join(element(int_value=i) for i in range(100))))
    assert FieldScanner(fields, [])._scanner.max_array_items == 64
    assert FieldScanner(fields, [], array_fields=[0]).scan(data)[1][0][8] == tuple(range(65))
    assert FieldScanner(fields, [], max_array_items=3, array_fields=[0]).scan(data)[1][0][8] == (0, 1, 2, 3)
    assert FieldScanner(fields, [], max_array_items=0, array_fields=[0]).scan(data)[1][0][8] == ()
    assert FieldScanner(fields, []).scan(data)[1][0][8] is None  # not an array field
    with pytest.raises(ValueError, match="max_array_items must be 0"):
        FieldScanner(fields, [], max_array_items=-1)


def test_array_keys_argument(impl: type) -> None:
    assert impl(["a"], []).array_keys == ()
    assert impl(["a", ("b", "c")], [], array_keys=["c", "a", "c"]).array_keys == ("c", "a", "c")
    assert impl(["a"], [], array_keys=(k for k in ["a"])).array_keys == ("a",)
    assert impl(["a", "a"], [], array_keys={"a"}).array_keys == ("a",)  # a key repeated in span_keys
    with pytest.raises(ValueError, match=r"^array_keys: key 'r' is not one of span_keys$"):
        impl(["a"], ["r"], array_keys=["a", "r"])  # resource keys have no array keys
    with pytest.raises(ValueError, match=r"^array_keys: key 'b' is not one of span_keys$"):
        impl([("a",)], [], array_keys=["b"])
    with pytest.raises(ValueError, match=r"^array_keys: key '' is not one of span_keys$"):
        impl(["a"], [], array_keys=[""])
    with pytest.raises(TypeError, match=r"^array_keys must be a collection of str, not str$"):
        impl(["a"], [], array_keys="a")
    with pytest.raises(TypeError, match=r"^array_keys must contain str, not bytes$"):
        impl(["a"], [], array_keys=[b"a"])
    with pytest.raises(TypeError, match=r"^array_keys must contain str, not tuple$"):
        impl([("a",)], [], array_keys=[("a",)])
    with pytest.raises(UnicodeEncodeError):
        impl(["a"], [], array_keys=["\ud800"])
    with pytest.raises(TypeError):
        impl(["a"], [], array_keys=None)


def consumer_span(consumer: AnyValue, *more: KeyValue) -> bytes:
    """A SERVER span whose apiusage.consumer.id has the value `consumer`, and the attributes `more`."""
    attributes = [KeyValue(key="apiusage.consumer.id", value=consumer), *more]
    return ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[ScopeSpans(spans=[Span(kind=Span.SPAN_KIND_SERVER, attributes=attributes)])]
            )
        ]
    ).SerializeToString()


CONSUMER_ARRAY = AnyValue(
    array_value=ArrayValue(values=[AnyValue(string_value="x"), AnyValue(int_value=1), AnyValue()])
)


def test_an_array_under_a_scalar_key_falls_through_to_the_groups_next_key(impl: type) -> None:
    """An array apiusage.consumer.id counts as absent: enduser.id is the consumer (docs/attributes.md)."""
    from apiusage.conventions.attributes import ATTR_QUERY_PARAMETERS
    from apiusage.processor.config import UsageConfig
    from apiusage.processor.derive.requests import SPAN_FIELDS, span_field_sources

    groups = span_field_sources(UsageConfig())
    consumer = 8 + SPAN_FIELDS.index("consumer_id")
    assert groups[SPAN_FIELDS.index("consumer_id")][0] == "apiusage.consumer.id"
    data = consumer_span(
        CONSUMER_ARRAY,
        kv("enduser.id", string_value="u-1"),
        kv("http.route", array_value=ArrayValue(values=[AnyValue(string_value="/a")])),
        kv(ATTR_QUERY_PARAMETERS, array_value=ArrayValue(values=[AnyValue(string_value="page")])),
    )
    span = impl(groups, [("service.name",)]).scan(data)[1][0]
    assert span[consumer] == "u-1"
    assert span[8 + SPAN_FIELDS.index("route")] is None
    # an array key still returns its arrays, in the same scan as the scalar keys
    assert groups[SPAN_FIELDS.index("query_parameters")] == (ATTR_QUERY_PARAMETERS,)
    span = impl(groups, [], array_keys=[ATTR_QUERY_PARAMETERS]).scan(data)[1][0]
    assert (span[consumer], span[8 + SPAN_FIELDS.index("query_parameters")]) == ("u-1", ("page",))
    # and an array under an array key is a value: it ends the group's search
    span = impl(groups, [], array_keys=["apiusage.consumer.id"]).scan(data)[1][0]
    assert span[consumer] == ("x", 1, None)
    # an array key's scalar value is returned as it is
    scalar = consumer_span(AnyValue(string_value="c-1"), kv("enduser.id", string_value="u-1"))
    assert impl(groups, [], array_keys=["apiusage.consumer.id"]).scan(scalar)[1][0][consumer] == "c-1"
    # no other key: absent
    alone = consumer_span(CONSUMER_ARRAY)
    assert impl(groups, []).scan(alone)[1][0][consumer] is None


@pytest.fixture
def field_scanner(impl: type, monkeypatch: pytest.MonkeyPatch) -> type:
    """FieldScanner over `impl`."""
    from apiusage.processor.receivers.fields import FieldScanner

    monkeypatch.setattr(scan, "Scanner", impl)
    monkeypatch.setattr(scan, "IMPLEMENTATION", "python" if impl is PyScanner else "c")
    return FieldScanner


@pytest.mark.parametrize(
    "fields",
    [
        [("apiusage.consumer.id", "enduser.id"), ("q",), ("b", "l")],
        [("apiusage.consumer.id", "enduser.id"), ("q",), ("b", "l"), ("enduser.id",)],  # a key in two
        [("apiusage.consumer.id", "enduser.id"), ("q", "apiusage.consumer.id"), ("b", "l")],
    ],
    ids=["grouped", "shared scalar key", "key in a scalar and an array field"],
)
def test_field_scanner_array_fields(field_scanner: type, fields: list[tuple[str, ...]]) -> None:
    q_array = kv("q", array_value=ArrayValue(values=[AnyValue(string_value="p")]))
    b_array = kv("b", array_value=ArrayValue(values=[]))
    data = consumer_span(CONSUMER_ARRAY, kv("enduser.id", string_value="u-1"), q_array, b_array)
    assert field_scanner(fields, [], array_fields=[1, 2]).scan(data)[1][0][8:11] == ("u-1", ("p",), ())
    assert field_scanner(fields, []).scan(data)[1][0][8:11] == ("u-1", None, None)
    assert field_scanner(fields, [], array_fields=(i for i in [2])).scan(data)[1][0][8:11] == (
        "u-1",
        None,
        (),
    )
    if fields[1] == ("q", "apiusage.consumer.id"):
        # without q, the array field takes the shared key's array; the scalar field does not
        data = consumer_span(CONSUMER_ARRAY, kv("enduser.id", string_value="u-1"))
        assert field_scanner(fields, [], array_fields=[1]).scan(data)[1][0][8:10] == ("u-1", ("x", 1, None))


def test_an_sdk_span_with_an_array_consumer_id_derives_the_next_key(field_scanner: type) -> None:
    """Real SDK spans, OTLP-encoded by the exporter's own encoder, through FieldScanner and the Deriver."""
    from apiusage.processor.config import UsageConfig
    from apiusage.processor.derive.requests import Deriver, span_field_sources
    from apiusage.processor.telemetry import PipelineStats
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.sdk.resources import Resource as SdkResource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind

    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=SdkResource.create({"service.name": "shop"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    attributes = {"http.request.method": "GET", "http.response.status_code": 200, "enduser.id": "u-1"}
    with tracer.start_as_current_span("a", kind=SpanKind.SERVER) as span:
        span.set_attributes({**attributes, "http.route": "/a", "apiusage.consumer.id": ["x", "y"]})
    with tracer.start_as_current_span("b", kind=SpanKind.SERVER) as span:
        span.set_attributes({**attributes, "http.route": ["/b"], "http.target": "/b/1"})
    provider.shutdown()
    body = encode_spans(exporter.get_finished_spans()).SerializeToString()
    config = UsageConfig()
    stats = PipelineStats()
    requests = Deriver(config, stats).derive(
        *field_scanner(span_field_sources(config), [("service.name",)]).scan(body)
    )
    # an array route is absent too: the route comes from the path, as for a span without one
    assert [(r.service, r.route, r.consumer_id) for r in requests] == [
        ("shop", "/a", "u-1"),
        ("shop", "/b/{id}", "u-1"),
    ]


def test_field_scanner_array_fields_argument(field_scanner: type) -> None:
    fields = [("a",), ("b", "c")]
    assert field_scanner(fields, [], array_fields=[1])._scanner.array_keys == ("b", "c")
    assert field_scanner(fields, [], array_fields=[1, 0, 1])._scanner.array_keys == ("a", "b", "c")
    with pytest.raises(ValueError, match=r"^array_fields: 2 is not the index of one of the 2 span_fields$"):
        field_scanner(fields, [], array_fields=[2])
    with pytest.raises(ValueError, match=r"^array_fields: -1 is not the index of one of the 2 span_fields$"):
        field_scanner(fields, [], array_fields=[-1])
    with pytest.raises(TypeError, match=r"^array_fields must contain int, not bool$"):
        field_scanner(fields, [], array_fields=[True])
    with pytest.raises(TypeError):
        field_scanner(fields, [], array_fields=["b"])
    with pytest.raises(TypeError, match=r"^array_fields must be a collection of int, not str$"):
        field_scanner(fields, [], array_fields="1")


ARRAY_MEMORY_PROBE = """
import sys, tracemalloc
from pathlib import Path
from apiusage.processor.receivers import scan

def peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM")

def ld(field: int, payload: bytes) -> bytes:
    n, out = len(payload), bytearray([field << 3 | 2])
    while n > 0x7F:
        out.append(0x80 | n & 0x7F)
        n >>= 7
    return bytes(out) + bytes([n]) + payload

implementation = sys.argv[1]
elements = b"\\x0a\\x03\\x0a\\x01a" * ((16 << 20) // 5)  # 3.3 M one-letter strings
body = ld(1, ld(2, ld(2, ld(9, ld(1, b"a") + ld(2, ld(5, elements))))))
scanner = scan.Scanner(["a"], [], array_keys=["a"])
assert scan.IMPLEMENTATION == implementation, scan.IMPLEMENTATION
scanner.scan(ld(1, ld(2, ld(2, b""))))  # warm up
before = peak()
tracemalloc.start()
value = scanner.scan(body)[1][0][8]
objects = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print("scanned", len(body), len(value), set(value))
print("objects", objects)
print("growth", peak() - before)
"""


@pytest.mark.parametrize("implementation", ["c", "python"])
def test_a_16_mib_array_of_tiny_strings_costs_max_array_items_objects(implementation: str) -> None:
    """3.3 million elements (~180 MiB as str objects): 65 are converted, the rest skipped."""
    env = dict(os.environ)
    env.pop("APIUSAGE_PURE_PYTHON", None)
    if implementation == "c":
        _c_scanner()
    else:
        env["APIUSAGE_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", ARRAY_MEMORY_PROBE, implementation],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "scanned 16777248 65 {'a'}"  # 16 MiB - 1 of elements
    objects = int(lines[1].removeprefix("objects "))
    assert objects < 1 << 20, f"{objects} bytes of Python objects"
    growth = int(lines[2].removeprefix("growth "))
    if implementation == "c":  # protobuf's parse holds every element in its own memory
        assert growth < 8 << 20, f"peak RSS grew {growth >> 20} MiB"


# --------------------------------------------------------------------------
# Span events (event_names, event_keys, max_events)

FLAG_NAMES = ["feature_flag.evaluation", "feature_flag"]


def event(name: bytes | None = None, *attributes: bytes, more: bytes = b"") -> bytes:
    """A Span.events field: an Event with `name` (none when None) and KeyValue `attributes`."""
    body = (ld(2, name) if name is not None else b"") + b"".join(ld(3, a) for a in attributes)
    return ld(11, body + more)


def kv_int(key: str, value: int) -> bytes:
    return ld(1, key.encode()) + ld(2, vi(3, value))


def events_of(impl: type, data: bytes, **options: object) -> object:
    """The events element of the only span."""
    options.setdefault("event_names", FLAG_NAMES)
    span = impl(["a"], [], **options).scan(data)[1][0]
    assert len(span) == 8 + 1 + 1
    return span[-1]


def test_span_events_of_the_wanted_names_in_wire_order(impl: type) -> None:
    Event = Span.Event
    request = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                attributes=[kv("a", string_value="span")],
                                events=[
                                    Event(
                                        time_unix_nano=5,
                                        name="feature_flag.evaluation",
                                        attributes=[
                                            kv("feature_flag.key", string_value="new-checkout"),
                                            kv("feature_flag.result.variant", string_value="on"),
                                            kv("feature_flag.context.id", string_value="user-1"),
                                        ],
                                    ),
                                    Event(
                                        name="exception",
                                        attributes=[kv("feature_flag.key", string_value="x")],
                                    ),
                                    Event(
                                        name="feature_flag",
                                        attributes=[
                                            kv("feature_flag.key", string_value="old"),
                                            kv("feature_flag.variant", bool_value=True),
                                            kv("n", int_value=-3),
                                            kv("d", double_value=0.5),
                                            kv("feature_flag.result.variant", array_value=ArrayValue()),
                                            kv("feature_flag.key", string_value="old2"),
                                        ],
                                    ),
                                    Event(),
                                    Event(name="feature_flag.evaluation"),
                                ],
                            ),
                            Span(events=[Event(name="exception")]),
                            Span(),
                        ]
                    )
                ]
            )
        ]
    )
    data = request.SerializeToString()
    keys = ["feature_flag.key", ("feature_flag.result.variant", "feature_flag.variant"), "n", "d"]
    scanner = impl(["a"], [], event_names=FLAG_NAMES, event_keys=keys)
    assert scanner.event_names == tuple(FLAG_NAMES)
    assert scanner.event_keys == (
        "feature_flag.key",
        ("feature_flag.result.variant", "feature_flag.variant"),
        "n",
        "d",
    )
    assert scanner.max_events == 16
    resources, spans = scanner.scan(data)
    assert typed(spans) == typed(
        [
            (
                0,
                0,
                0,
                0,
                b"",
                b"",
                "",
                0,
                "span",
                (
                    ("feature_flag.evaluation", "new-checkout", "on", None, None),
                    # an array is absent: the group's next key gives the variant; the last key wins
                    ("feature_flag", "old2", True, -3, 0.5),
                    ("feature_flag.evaluation", None, None, None, None),
                ),
            ),
            (0, 0, 0, 0, b"", b"", "", 0, None, ()),
            (0, 0, 0, 0, b"", b"", "", 0, None, ()),
        ]
    )
    # No event names: the tuples are as they always were.
    assert impl(["a"], [], event_keys=keys).scan(data)[1] == [
        (0, 0, 0, 0, b"", b"", "", 0, "span"),
        (0, 0, 0, 0, b"", b"", "", 0, None),
        (0, 0, 0, 0, b"", b"", "", 0, None),
    ]
    # No event keys: the names alone; "" is the name of an event without one.
    assert events_of(impl, data, event_names=["", "exception"]) == (("exception",), ("",))


def test_an_events_last_name_counts(impl: type) -> None:
    data = one_span(
        event(b"other", kv_str("k", "1"), more=ld(2, b"feature_flag"))
        + event(b"feature_flag", more=ld(2, b"x"))
    )
    assert events_of(impl, data, event_keys=["k"]) == (("feature_flag", "1"),)


def test_events_are_cut_after_max_events_plus_one(impl: type) -> None:
    data = one_span(
        b"".join(event(b"feature_flag", kv_int("i", i)) + event(b"x", kv_int("i", -i)) for i in range(40))
    )
    assert events_of(impl, data, event_keys=["i"]) == tuple(("feature_flag", i) for i in range(17))
    assert events_of(impl, data, event_keys=["i"], max_events=3) == tuple(
        ("feature_flag", i) for i in range(4)
    )
    assert events_of(impl, data, event_keys=["i"], max_events=0) == (("feature_flag", 0),)
    assert len(events_of(impl, data, max_events=39)) == 40
    assert len(events_of(impl, data, max_events=40)) == 40


def test_events_past_the_cut_or_of_other_names_are_never_converted(impl: type) -> None:
    """The C scanner skips them by length: an invalid one there is not seen (protobuf sees it)."""
    bad = ld(1, b"k") + ld(2, ld(1, b"\xff"))
    data = one_span(
        event(b"feature_flag", kv_str("k", "ok")) + event(b"other", bad) + event(b"feature_flag", bad)
    )
    assert not parses(data)
    with pytest.raises(ScanError, match=r"^invalid UTF-8 \(AnyValue.string_value\) at byte \d+$"):
        events_of(impl, data, event_keys=["k"])
    if impl is PyScanner:
        with pytest.raises(ScanError):
            events_of(impl, data, event_keys=["k"], max_events=0)
    else:
        assert events_of(impl, data, event_keys=["k"], max_events=0) == (("feature_flag", "ok"),)
        assert impl(["a"], []).scan(data)[1][0] == (0, 0, 0, 0, b"", b"", "", 0, None)


def test_event_arguments_are_checked(impl: type) -> None:
    with pytest.raises(TypeError, match="event_names must be a sequence of str"):
        impl([], [], event_names="feature_flag")
    with pytest.raises(TypeError, match="event_names must contain str"):
        impl([], [], event_names=[("feature_flag",)])
    with pytest.raises(TypeError, match="event_names must contain str"):
        impl([], [], event_names=[b"feature_flag"])
    with pytest.raises(TypeError, match="event_keys must be a sequence of str"):
        impl([], [], event_names=["e"], event_keys="k")
    with pytest.raises(ValueError, match="event_keys: key 'k' appears in more than one group"):
        impl([], [], event_names=["e"], event_keys=[("k",), ("j", "k")])
    with pytest.raises(ValueError, match="max_events must be 0 or more, not -1"):
        impl([], [], event_names=["e"], max_events=-1)
    with pytest.raises(TypeError):
        impl([], [], 0, 64, (), ["e"])  # keyword only
    scanner = impl([], [], event_names=("e", "e"), event_keys=[["k", "j"]], max_events=sys.maxsize)
    assert (scanner.event_names, scanner.event_keys, scanner.max_events) == (
        ("e", "e"),
        (("k", "j"),),
        sys.maxsize,
    )
    data = one_span(event(b"e", kv_str("j", "1")) * 3)
    assert scanner.scan(data)[1][0][-1] == (("e", "1"),) * 3


def test_field_scanner_passes_events_through(field_scanner: type) -> None:
    data = one_span(ld(9, kv_str("a", "x")) + event(b"feature_flag", kv_str("k", "1"), kv_str("j", "2")) * 3)
    plain = field_scanner([("a",), ("b",)], [("service.name",)])
    assert plain.scan(data)[1] == [(0, 0, 0, 0, b"", b"", "", 0, "x", None)]
    scanner = field_scanner(
        [("a",), ("b",)],
        [("service.name",)],
        event_names=FLAG_NAMES,
        event_keys=[("j",), ("z", "k")],
        max_events=1,
    )
    assert scanner.scan(data)[1] == [
        (0, 0, 0, 0, b"", b"", "", 0, "x", None, (("feature_flag", "2", "1"),) * 2)
    ]
    # One key feeding two fields: the fields are resolved in Python, the events pass as they are.
    shared = field_scanner(
        [("a",), ("b", "a")], [("service.name",)], event_names=FLAG_NAMES, event_keys=[("k",)]
    )
    assert shared.scan(data)[1] == [(0, 0, 0, 0, b"", b"", "", 0, "x", "x", (("feature_flag", "1"),) * 3)]


MALFORMED_EVENTS = [
    (one_span(tag(11, 2) + varint(9) + b"ab"), "truncated length-delimited field (Span.events) at byte 6"),
    (
        one_span(ld(11, tag(2, 2) + varint(5) + b"ab")),
        "truncated length-delimited field (Event.name) at byte 8",
    ),
    (
        one_span(ld(11, ld(2, b"e") + tag(3, 2) + varint(5))),
        "truncated length-delimited field (Event.attributes) at byte 11",
    ),
    (
        one_span(ld(11, ld(2, b"e") + tag(1, 1) + b"123")),
        "truncated fixed64 field (Event.time_unix_nano) at byte 11",
    ),
    (one_span(ld(11, b"\x00\x01")), "invalid field number 0 (Event) at byte 8"),
    (one_span(ld(11, ld(2, b"e") + ld(3, ld(1, b"\xc0\xaf")))), "invalid UTF-8 (KeyValue.key) at byte 15"),
    (
        one_span(event(b"e", kv_str("k", "ok") + ld(2, ld(1, b"\xed\xa0\x80")))),
        "invalid UTF-8 (AnyValue.string_value) at byte 26",
    ),
    (
        one_span(ld(11, ld(2, b"e") + ld(3, ld(1, b"k") + ld(2, tag(4, 1) + b"\x00")))),
        "truncated fixed64 field (AnyValue.double_value) at byte 18",
    ),
    (one_span(ld(11, ld(2, b"e") + tag(99, 3))), "unterminated group (Event field 99) at byte 11"),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED_EVENTS)
def test_malformed_events(impl: type, data: bytes, message: str) -> None:
    assert not parses(data)
    with pytest.raises(ScanError) as info:
        impl(["a"], ["k"], event_names=["e"], event_keys=["k"]).scan(data)
    assert str(info.value) == message


def test_garbage_with_events_never_raises_anything_else(impl: type) -> None:
    rng = random.Random(4321)
    scanner = impl(
        SPAN_KEYS, RESOURCE_KEYS, event_names=["e", ""], event_keys=[("k", "a"), "b"], max_events=2
    )
    prefix = one_span(event(b"e", kv_str("k", "v")))[:-3]
    for _ in range(2000):
        data = prefix + bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 48)))
        try:
            scanner.scan(data)
        except ScanError:
            pass


EVENT_MEMORY_PROBE = """
import sys, time, tracemalloc
from pathlib import Path
from apiusage.processor.receivers import scan

def peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM")

def ld(field: int, payload: bytes) -> bytes:
    n, out = len(payload), bytearray([field << 3 | 2])
    while n > 0x7F:
        out.append(0x80 | n & 0x7F)
        n >>= 7
    return bytes(out) + bytes([n]) + payload

implementation, shape = sys.argv[1:]
if shape == "events":  # a million tiny events, half of them wanted
    events = (ld(11, ld(2, b"e")) + ld(11, ld(2, b"x"))) * 500_000
else:  # one wanted event with 250,000 attributes of the wanted key (each one a str made)
    events = ld(11, ld(2, b"e") + ld(3, ld(1, b"k") + ld(2, ld(1, b"v"))) * 250_000)
body = ld(1, ld(2, ld(2, events)))
scanner = scan.Scanner([], [], event_names=["e"], event_keys=["k"])
assert scan.IMPLEMENTATION == implementation, scan.IMPLEMENTATION
scanner.scan(ld(1, ld(2, ld(2, b""))))  # warm up
before = peak()
tracemalloc.start()
value = scanner.scan(body)[1][0][-1]
objects = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print("scanned", len(body), len(value), set(value))
print("objects", objects)
print("growth", peak() - before)
started = time.perf_counter()  # without tracemalloc, which slows every allocation
scanner.scan(body)
print("seconds", time.perf_counter() - started)
"""


@pytest.mark.parametrize("shape", ["events", "attributes"])
@pytest.mark.parametrize("implementation", ["c", pytest.param("python", marks=pytest.mark.slow)])
def test_a_million_tiny_events_cost_max_events_objects(implementation: str, shape: str) -> None:
    """A million events (or 250,000 attributes of one event): 17 events kept, memory bounded."""
    env = dict(os.environ)
    env.pop("APIUSAGE_PURE_PYTHON", None)
    if implementation == "c":
        _c_scanner()
    else:
        env["APIUSAGE_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", EVENT_MEMORY_PROBE, implementation, shape],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    if shape == "events":
        assert lines[0] == "scanned 5000015 17 {('e', None)}"
    else:
        assert lines[0] == "scanned 2500023 1 {('e', 'v')}"
    objects = int(lines[1].removeprefix("objects "))
    assert objects < 1 << 20, f"{objects} bytes of Python objects"
    growth = int(lines[2].removeprefix("growth "))
    seconds = float(lines[3].removeprefix("seconds "))
    if implementation == "c":  # protobuf's parse holds every event in its own memory
        assert growth < 8 << 20, f"peak RSS grew {growth >> 20} MiB"
        assert seconds < 1.0, f"{seconds:.2f} s"
    else:
        assert seconds < 15.0, f"{seconds:.2f} s"


# --------------------------------------------------------------------------
# Malformed payloads

BAD_UTF8_VALUE = one_span(ld(9, ld(1, b"a") + ld(2, ld(1, b"ok\xe2\x82"))))
# key "a" (wanted) with an array value: the ArrayValue starts at byte 15, its first element at 17
BAD_UTF8_ELEMENT = one_span(ld(9, ld(1, b"a") + ld(2, ld(5, ld(1, ld(1, b"ok")) + ld(1, ld(1, b"\xff"))))))
MALFORMED = [
    (
        ld(1, ld(2, b""))[:-1],
        "truncated length-delimited field (ExportTraceServiceRequest.resource_spans) at byte 0",
    ),
    (
        b"\x0a\xff\xff\xff\xff\x0f",
        "truncated length-delimited field (ExportTraceServiceRequest.resource_spans) at byte 0",
    ),
    (
        one_span(tag(9, 2) + varint(50) + b"abc"),
        "truncated length-delimited field (Span.attributes) at byte 6",
    ),
    (
        one_span(tag(5, 2) + varint(2**40)),
        "truncated length-delimited field (Span.name) at byte 6",
    ),
    (
        one_span(ld(9, ld(1, b"a") + tag(2, 2) + varint(2**64 - 1))),
        "truncated length-delimited field (KeyValue.value) at byte 11",
    ),
    (one_span(tag(6, 0) + b"\xff" * 10 + b"\x01"), "varint longer than 10 bytes (Span.kind) at byte 6"),
    (one_span(tag(6, 0) + b"\x80"), "truncated varint (Span.kind) at byte 6"),
    (one_span(tag(7, 1) + b"1234567"), "truncated fixed64 field (Span.start_time_unix_nano) at byte 6"),
    (one_span(tag(16, 5) + b"123"), "truncated fixed32 field (Span.flags) at byte 6"),
    (one_span(tag(99, 7)), "invalid wire type 7 (Span field 99) at byte 6"),
    (one_span(tag(99, 6)), "invalid wire type 6 (Span field 99) at byte 6"),
    (one_span(tag(99, 4)), "unexpected end-group tag (Span field 99) at byte 6"),
    (one_span(tag(99, 3) + vi(1, 1)), "unterminated group (Span field 99) at byte 6"),
    (one_span(tag(99, 3) + tag(98, 4)), "mismatched end-group tag (Span field 99) at byte 8"),
    (one_span(b"\x00\x01"), "invalid field number 0 (Span) at byte 6"),
    (one_span(b"\x88\x80\x80\x80\x80\x00\x01"), "invalid tag (Span) at byte 6"),
    (b"\xff" * 11, "invalid tag (ExportTraceServiceRequest) at byte 0"),
    (b"\x0a\x00\x80", "truncated tag (ExportTraceServiceRequest) at byte 2"),
    (BAD_UTF8_VALUE, f"invalid UTF-8 (AnyValue.string_value) at byte {len(BAD_UTF8_VALUE) - 2}"),
    (one_span(ld(9, ld(1, b"\xc0\xaf"))), "invalid UTF-8 (KeyValue.key) at byte 10"),
    (BAD_UTF8_ELEMENT, f"invalid UTF-8 (AnyValue.string_value) at byte {len(BAD_UTF8_ELEMENT) - 1}"),
    (
        one_span(ld(9, ld(1, b"a") + ld(2, ld(5, tag(1, 2) + varint(9) + b"ab")))),
        "truncated length-delimited field (ArrayValue.values) at byte 15",
    ),
    (
        one_span(ld(9, ld(1, b"a") + ld(2, ld(5, ld(1, tag(4, 1) + b"\x00"))))),
        "truncated fixed64 field (AnyValue.double_value) at byte 17",
    ),
    (
        one_span(ld(9, ld(1, b"a") + ld(2, ld(5, b"\x00\x01")))),
        "invalid field number 0 (ArrayValue) at byte 15",
    ),
    (one_span(ld(3, b"a=\xed\xa0\x80")), "invalid UTF-8 (Span.trace_state) at byte 10"),
    (
        ld(1, ld(1, ld(1, ld(1, b"k") + ld(2, tag(4, 1) + b"\x00")))),
        "truncated fixed64 field (AnyValue.double_value) at byte 11",
    ),
    (
        ld(1, ld(2, ld(2, ld(15, tag(3, 0))))),
        "truncated varint (Status.code) at byte 8",
    ),
]


@pytest.mark.parametrize(("data", "message"), MALFORMED)
def test_malformed_messages(impl: type, data: bytes, message: str) -> None:
    assert not parses(data)
    with pytest.raises(ScanError) as info:
        impl(["a"], ["k"], array_keys=["a"]).scan(data)
    assert str(info.value) == message
    assert isinstance(info.value, ValueError)


def test_every_truncation(impl: type) -> None:
    request = full_request()
    request.resource_spans.append(request.resource_spans[0])
    data = request.SerializeToString()
    scanner = impl(SPAN_KEYS, RESOURCE_KEYS)
    complete = []
    for cut in range(len(data)):
        if parses(data[:cut]):  # empty, or cut after a whole ResourceSpans
            complete.append(len(scanner.scan(data[:cut])[0]))
        else:
            with pytest.raises(ScanError, match=r"^truncated .* at byte \d+$"):
                scanner.scan(data[:cut])
    assert complete == [0, 1, 2, 3]


def test_garbage_never_raises_anything_else(impl: type) -> None:
    rng = random.Random(1234)
    scanner = impl(SPAN_KEYS, RESOURCE_KEYS)
    for _ in range(2000):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 64)))
        try:
            scanner.scan(data)
        except ScanError:
            pass


@pytest.mark.slow
def test_c_scanner_does_not_leak() -> None:
    impl = _c_scanner()
    scanner = impl(SPAN_KEYS + ["a"], RESOURCE_KEYS, array_keys=["a", "arr"])
    with_events = impl(
        SPAN_KEYS + ["a"], RESOURCE_KEYS, event_names=["e"], event_keys=[("k", "a"), "j"], max_events=1
    )
    good = full_request().SerializeToString()
    payloads = [good] + [good[:cut] for cut in range(0, len(good), 7)]
    payloads += [data for data, _message in MALFORMED + MALFORMED_EVENTS]
    flagged = one_span(event(b"e", kv_str("k", "1"), kv_str("j", "2")) * 3 + ld(9, kv_str("a", "x")))
    payloads += [flagged] + [flagged[:cut] for cut in range(len(flagged))]

    def run() -> None:
        for data in payloads:
            for s in (scanner, with_events):
                try:
                    s.scan(data)
                except ScanError:
                    pass

    for _ in range(20):
        run()
    tracemalloc.start()
    try:
        run()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(100):
            run()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 20_000, f"{grown} bytes still allocated after 100 rounds"


# --------------------------------------------------------------------------
# The per-request span bound (max_spans)


def spread_request(counts: list[list[int]]) -> bytes:
    """One ResourceSpans per entry of counts, one ScopeSpans per count, each span numbered in order."""
    request = ExportTraceServiceRequest()
    number = 0
    for r, scopes in enumerate(counts):
        rs = request.resource_spans.add()
        rs.resource.attributes.append(kv("service.name", string_value=f"svc-{r}"))
        for count in scopes:
            ss = rs.scope_spans.add()
            for _ in range(count):
                number += 1
                ss.spans.append(Span(start_time_unix_nano=number, attributes=[kv("a", int_value=number)]))
    return request.SerializeToString()


# 9 spans over 4 resources (one without scopes, one with an empty scope) and 6 scopes
SPREAD = [[2, 0, 3], [], [1], [1, 2]]
SPREAD_BODY = spread_request(SPREAD)


def test_max_spans_at_the_bound_scans(impl: type) -> None:
    unlimited = impl(["a"], ["service.name"]).scan(SPREAD_BODY)
    assert [s[2] for s in unlimited[1]] == list(range(1, 10))
    assert [s[0] for s in unlimited[1]] == [0] * 5 + [2] + [3] * 3
    assert unlimited[0] == [("svc-0",), ("svc-1",), ("svc-2",), ("svc-3",)]
    for bound in (9, 10, 1_000_000, 0):
        assert typed(impl(["a"], ["service.name"], max_spans=bound).scan(SPREAD_BODY)) == typed(unlimited)
        assert typed(impl(["a"], ["service.name"], bound).scan(SPREAD_BODY)) == typed(unlimited)


@pytest.mark.parametrize("bound", [1, 2, 3, 5, 6, 8])
def test_max_spans_one_over_raises_too_many_spans(impl: type, bound: int) -> None:
    scanner = impl(["a"], ["service.name"], max_spans=bound)
    with pytest.raises(scan.TooManySpans) as raised:
        scanner.scan(SPREAD_BODY)
    assert type(raised.value) is scan.TooManySpans
    assert str(raised.value) == f"more than {bound} spans in one request"
    assert isinstance(raised.value, ScanError)
    # the scanner stays usable, and the bound is per request
    assert len(scanner.scan(spread_request([[bound]]))[1]) == bound


def test_a_malformed_span_beyond_the_bound_is_a_scan_error(impl: type) -> None:
    """Over the bound, a malformed payload raises TooManySpans or the parse error: a ScanError either way."""
    good = ld(1, ld(2, ld(2, b"") * 3))
    assert len(impl([], [], max_spans=3).scan(good)[1]) == 3
    with pytest.raises(scan.TooManySpans, match=r"^more than 2 spans in one request$"):
        impl([], [], max_spans=2).scan(good)
    bad = ld(1, ld(2, ld(2, b"") * 2 + ld(2, tag(1, 2) + b"\x05")))  # span 3: truncated trace_id
    with pytest.raises(ScanError):
        impl([], [], max_spans=2).scan(bad)
    with pytest.raises(ScanError, match=r"^truncated length-delimited field \(Span.trace_id\) at byte 10$"):
        impl([], [], max_spans=3).scan(bad)


def test_max_spans_argument(impl: type) -> None:
    assert impl([], []).max_spans == 0
    assert impl([], [], max_spans=7).max_spans == 7
    with pytest.raises(ValueError, match=r"^max_spans must be 0 \(unlimited\) or more, not -1$"):
        impl([], [], max_spans=-1)
    with pytest.raises(TypeError):
        impl([], [], max_spans="10")
    with pytest.raises(TypeError):
        impl([], [], max_spans=1.5)
    with pytest.raises(OverflowError):
        impl([], [], max_spans=2**63)


def test_too_many_spans_is_exported() -> None:
    assert "TooManySpans" in scan.__all__
    assert issubclass(scan.TooManySpans, ScanError) and scan.TooManySpans is not ScanError


@pytest.mark.parametrize(
    "fields", [[("a", "b"), ("c",)], [("a", "b"), ("a",)]], ids=["grouped", "shared key"]
)
def test_field_scanner_passes_max_spans_through(fields: list[tuple[str, ...]]) -> None:
    from apiusage.processor.receivers.fields import FieldScanner

    body = spread_request([[2, 1]])
    scanner = FieldScanner(fields, [("service.name",)], max_spans=3)
    assert [s[8] for s in scanner.scan(body)[1]] == [1, 2, 3]
    with pytest.raises(scan.TooManySpans, match=r"^more than 2 spans in one request$"):
        FieldScanner(fields, [("service.name",)], max_spans=2).scan(body)
    assert len(FieldScanner(fields, [("service.name",)]).scan(spread_request([[50] * 3]))[1]) == 150


def test_max_spans_bounds_resource_spans_too(impl: type) -> None:
    """Empty ResourceSpans cost a tuple each as well: more of them than max_spans are refused."""
    assert len(impl([], ["service.name"], max_spans=3).scan(ld(1, b"") * 3)[0]) == 3
    with pytest.raises(scan.TooManySpans, match=r"^more than 3 resource_spans in one request$"):
        impl([], ["service.name"], max_spans=3).scan(ld(1, b"") * 4)
    # whichever bound wire order reaches first
    with pytest.raises(scan.TooManySpans, match=r"^more than 3 spans in one request$"):
        impl([], [], max_spans=3).scan(spread_request([[], [4], [], []]))
    with pytest.raises(scan.TooManySpans, match=r"^more than 3 resource_spans in one request$"):
        impl([], [], max_spans=3).scan(spread_request([[], [3], [], [], [4]]))
    assert len(impl([], [], max_spans=0).scan(ld(1, b"") * 10_000)[0]) == 10_000


def expected_bound(counts: list[list[int]], bound: int) -> str | None:
    """The TooManySpans message a scan with max_spans=bound raises for spread_request(counts), if any."""
    spans = 0
    for index, scopes in enumerate(counts):
        if bound and index >= bound:
            return f"more than {bound} resource_spans in one request"
        spans += sum(scopes)
        if bound and spans > bound:
            return f"more than {bound} spans in one request"
    return None


@pytest.mark.usefixtures("c_required")
@settings(
    max_examples=examples(200),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.lists(st.lists(st.integers(0, 4), max_size=3), max_size=6), bound=st.integers(0, 12))
def test_differential_span_bound(data: list[list[int]], bound: int) -> None:
    body = spread_request(data)
    outcomes = []
    for impl in (_c_scanner(), PyScanner):
        try:
            outcomes.append(typed(impl(["a"], ["service.name"], max_spans=bound).scan(body)))
        except scan.TooManySpans as exc:
            outcomes.append(("TooManySpans", str(exc)))
    assert outcomes[0] == outcomes[1]
    refusal = expected_bound(data, bound)
    if refusal:
        assert outcomes[0] == ("TooManySpans", refusal)
    else:
        assert len(outcomes[0][1]) == sum(map(sum, data))


@pytest.mark.usefixtures("c_required")
@settings(
    max_examples=examples(300),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    base=st.lists(st.lists(st.integers(0, 3), max_size=3), max_size=4),
    bound=st.integers(0, 6),
    draw=st.data(),
)
def test_differential_span_bound_mutated(base: list[list[int]], bound: int, draw: st.DataObject) -> None:
    """Damaged bodies: equal outcomes whenever protobuf parses them, else a ScanError or a C result."""
    data = bytearray(spread_request(base))
    for _ in range(draw.draw(st.integers(1, 3))):
        pos = draw.draw(st.integers(0, len(data)))
        op = draw.draw(st.sampled_from(["set", "insert", "delete", "dup"]))
        if op == "set" and pos < len(data):
            data[pos] = draw.draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw.draw(st.integers(1, 4))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw.draw(st.integers(1, 8))]
    outcomes = []
    for impl in (_c_scanner(), PyScanner):
        try:
            outcomes.append(typed(impl(["a"], ["service.name"], max_spans=bound).scan(bytes(data))))
        except scan.TooManySpans as exc:
            outcomes.append(("TooManySpans", str(exc)))
        except ScanError:
            outcomes.append(ScanError)
    if parses(bytes(data)):
        assert outcomes[0] == outcomes[1]
    else:
        assert outcomes[1] is ScanError or outcomes[1][0] == "TooManySpans"


MEMORY_PROBE = """
import sys
from pathlib import Path
from apiusage.processor.config import UsageConfig
from apiusage.processor.derive.requests import span_field_sources
from apiusage.processor.receivers import scan
from apiusage.processor.receivers.fields import FieldScanner

def peak() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise SystemExit("no VmHWM")

def ld(field: int, payload: bytes) -> bytes:
    n, out = len(payload), bytearray([field << 3 | 2])
    while n > 0x7F:
        out.append(0x80 | n & 0x7F)
        n >>= 7
    return bytes(out) + bytes([n]) + payload

implementation, shape, max_spans = sys.argv[1], sys.argv[2], int(sys.argv[3])
if shape == "spans":
    body = ld(1, ld(2, b"\\x12\\x00" * 2_000_000))  # 2 M empty Span messages, 2 bytes each
else:
    body = b"\\x0a\\x00" * 2_000_000  # 2 M empty ResourceSpans
scanner = FieldScanner(span_field_sources(UsageConfig()), [("service.name",)], max_spans=max_spans)
assert scanner.implementation == implementation, scanner.implementation
assert len(scanner.scan(ld(1, ld(2, b"\\x12\\x00")))[1]) == 1  # warm up
before = peak()
try:
    result = scanner.scan(body)
    print("scanned", len(body), len(result[1]))
except scan.TooManySpans as exc:
    print("refused", len(body), exc)
print("growth", peak() - before)
"""


@pytest.mark.parametrize("shape", ["spans", "resource_spans"])
@pytest.mark.parametrize("implementation", ["c", "python"])
def test_a_4_mib_body_of_2_million_empty_spans_stays_under_100_mib_with_a_bound(
    implementation: str, shape: str
) -> None:
    """Both scanners stop at the bound: peak memory is 100 000 tuples, not 2 million (~420 MiB)."""
    env = dict(os.environ)
    env.pop("APIUSAGE_PURE_PYTHON", None)
    if implementation == "c":
        _c_scanner()
    else:
        env["APIUSAGE_PURE_PYTHON"] = "1"
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, implementation, shape, "100000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    body_len = 1 + 4 + 1 + 4 + 4_000_000 if shape == "spans" else 4_000_000
    assert lines[0] == f"refused {body_len} more than 100000 {shape} in one request"
    growth = int(lines[1].removeprefix("growth "))
    assert growth < 100 << 20, f"peak RSS grew {growth >> 20} MiB"


# --------------------------------------------------------------------------
# The C scanner built with AddressSanitizer and UndefinedBehaviorSanitizer

REPO = Path(__file__).resolve().parents[3]
SANITIZED_RUN = [  # the scanner's memory-safety and reentrancy tests, C scanner only
    "tests/processor/receivers/test_scan.py",
    "tests/hostile/test_scanner_reentrancy.py",
    "-k",
    "(full_request or unknown_fields or deep_nesting or malformed or truncation or garbage"
    " or groups_take or many_grouped or reentered or threads or buffer or max_spans or array"
    " or events)"
    " and not python and not json and not sanitizers and not mib and not million",  # the memory probes
    # run the usual build
]
PLUGIN = """
import ctypes, importlib.util, os, sys
spec = importlib.util.spec_from_file_location("apiusage.processor.receivers._cscan",
                                              os.environ["APIUSAGE_CSCAN_BUILD"])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules[spec.name] = module
from apiusage.processor.receivers import scan
assert scan.CScanner is module.Scanner and scan.IMPLEMENTATION == "c"
ctypes.CDLL(None).__asan_init  # AttributeError unless the sanitizer runtime is loaded
print("sanitized _cscan:", module.__file__)
"""


def _sanitizer_runtime(cc: str) -> list[str]:
    libs = []
    for name in ("libasan.so", "libubsan.so"):
        out = subprocess.run([cc, f"-print-file-name={name}"], capture_output=True, text=True, timeout=30)
        path = out.stdout.strip()
        if not os.path.isabs(path):
            return []
        libs.append(path)
    return libs


@pytest.mark.slow
@pytest.mark.live
def test_c_scanner_under_sanitizers(tmp_path: Path) -> None:
    """Build _cscan.c with -fsanitize=address,undefined and run the scanner's tests against it."""
    _c_scanner()
    cc = shutil.which("gcc")
    runtime = _sanitizer_runtime(cc) if cc else []
    if not runtime:
        reason = "gcc with libasan and libubsan is needed for the sanitizer build"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    built = tmp_path / "_cscan_sanitized.so"
    subprocess.run(
        [
            cc,
            "-shared",
            "-fPIC",
            "-O1",
            "-g",
            "-fno-omit-frame-pointer",
            "-fsanitize=address,undefined",
            "-fno-sanitize-recover=all",
            "-I",
            sysconfig.get_paths()["include"],
            str(REPO / "processor/receivers/_cscan.c"),
            "-o",
            str(built),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (tmp_path / "cscan_sanitized_plugin.py").write_text(PLUGIN)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]),
        LD_PRELOAD=" ".join(runtime),
        APIUSAGE_CSCAN_BUILD=str(built),
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        UBSAN_OPTIONS="print_stacktrace=1",
        PYTHONMALLOC="malloc",
    )  # pymalloc arenas would hide overruns from ASan
    env.pop("APIUSAGE_PURE_PYTHON", None)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:faulthandler",
            "-p",
            "cscan_sanitized_plugin",
            *SANITIZED_RUN,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    report = out.stdout[-2000:] + out.stderr[:4000]  # a sanitizer report starts stderr
    assert out.returncode == 0, report
    assert f"sanitized _cscan: {built}" in out.stdout
    passed = re.search(r"(\d+) passed", out.stdout)
    assert passed and int(passed.group(1)) >= 35, report
    assert not re.search(r"\d+ (failed|skipped|error)", out.stdout), report


# --------------------------------------------------------------------------
# Implementation choice


def test_implementation_choice() -> None:
    code = "from apiusage.processor.receivers import scan; print(scan.IMPLEMENTATION)"
    env = dict(os.environ, APIUSAGE_PURE_PYTHON="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "python"
    if os.environ.get("APIUSAGE_PURE_PYTHON") == "1":
        assert scan.Scanner is PyScanner and scan.IMPLEMENTATION == "python"
    else:
        assert scan.Scanner is _c_scanner() and scan.IMPLEMENTATION == "c"


# --------------------------------------------------------------------------
# Differential testing against protobuf

KEY_POOL = ["a", "b", "ab", "", "é", "http.route", "ключ", "service.name"]


def often(common: st.SearchStrategy, rare: st.SearchStrategy, odds: int = 7) -> st.SearchStrategy:
    """`common` `odds` times as often as `rare`."""
    return st.integers(0, odds).flatmap(lambda i: rare if i == 0 else common)


texts = st.one_of(st.sampled_from(["", "x", "/orders/{id}", "ünï 🚀"]), st.text(max_size=6))
utf8 = texts.map(str.encode)
maybe_utf8 = often(utf8, st.binary(max_size=3))  # now and then invalid UTF-8
keys = often(st.sampled_from(KEY_POOL).map(str.encode), maybe_utf8, odds=4)
u64 = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2, 3, 2**31, 2**32 - 1, 2**63, 2**64 - 1]),
)
padded_varints = st.tuples(u64, st.integers(0, 9)).map(
    lambda vp: varint(vp[0], pad=min(vp[1], max(0, 9 - (vp[0].bit_length() // 7))))
)
double_bits = st.one_of(st.floats().map(lambda x: struct.unpack("<Q", struct.pack("<d", x))[0]), u64)


def vfield(field: int, values: st.SearchStrategy[int] = u64) -> st.SearchStrategy[bytes]:
    return often(values.map(lambda v: vi(field, v)), padded_varints.map(lambda raw: tag(field, 0) + raw), 3)


def lfield(field: int, payloads: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return payloads.map(lambda p: ld(field, p))


def junk(numbers: list[int]) -> st.SearchStrategy[bytes]:
    """A field with a random number (declared or not) and any skippable wire type."""
    number = st.sampled_from(numbers + [17, 99, 2**29 - 1])
    group_body = st.lists(
        st.one_of(vfield(1), lfield(2, st.binary(max_size=3)), st.just(f32(3, 7)), st.just(b"\0\0")),
        max_size=2,
    ).map(b"".join)
    return st.one_of(
        st.tuples(number, u64).map(lambda t: vi(*t)),
        st.tuples(number, u64).map(lambda t: f64(*t)),
        st.tuples(number, u64).map(lambda t: f32(*t)),
        st.tuples(number, st.binary(max_size=4)).map(lambda t: ld(*t)),
        st.tuples(number, group_body).map(lambda t: tag(t[0], 3) + t[1] + tag(t[0], 4)),
    )


def message(
    core: st.SearchStrategy, extras: list[st.SearchStrategy[bytes]], numbers: list[int], n: int = 2
) -> st.SearchStrategy[bytes]:
    """Encoded message: the `core` fields plus up to n extra/junk fields, maybe shuffled."""
    more = st.lists(st.one_of(*extras, junk(numbers)), max_size=n)

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        parts = list(draw(core)) + draw(more)
        if len(parts) > 1 and draw(st.booleans()):
            parts = draw(st.permutations(parts))
        return b"".join(parts)

    return build()


scalar_field = st.one_of(
    lfield(1, maybe_utf8),
    vfield(2, st.integers(0, 2)),
    vfield(3),
    double_bits.map(lambda v: f64(4, v)),
)
other_field = st.one_of(
    lfield(6, st.sampled_from([b"", ld(1, ld(1, b"k") + ld(2, vi(2, 1)))])),
    lfield(7, st.binary(max_size=3)),
    vfield(8, st.integers(0, 5)),
)
# An array element: any AnyValue (empty, several members of the oneof, a nested array, kvlist, bytes).
nested_array = lfield(5, st.sampled_from([b"", ld(1, ld(1, b"x")), ld(1, vi(3, 1)), ld(1, ld(1, b"\xff"))]))
array_element = message(
    st.lists(often(scalar_field, st.one_of(other_field, nested_array), 3), max_size=2),
    [],
    list(range(1, 9)),
    n=1,
)
array_value = message(st.lists(lfield(1, array_element), max_size=5), [], [1], n=1)
value_field = often(
    st.one_of(scalar_field, lfield(5, array_value)),
    other_field,
    odds=3,
)
# Up to 3 fields: repeated array_value fields merge, other members in between start afresh.
any_value = message(st.lists(value_field, min_size=1, max_size=2), [value_field], list(range(1, 9)), n=1)
key_value = message(
    st.tuples(lfield(1, keys), lfield(2, any_value)),
    [lfield(1, keys), lfield(2, any_value), vfield(3)],
    [1, 2, 3],
    n=1,
)
status = message(st.lists(vfield(3, st.integers(0, 3)), max_size=1), [lfield(2, maybe_utf8)], [2, 3])
EVENT_NAME_POOL = ["e", "feature_flag", "", "é"]
event_names = often(st.sampled_from(EVENT_NAME_POOL).map(str.encode), maybe_utf8, odds=4)
# An Event: its name (now and then none, or two), attributes, a time, a dropped count.
event_message = message(
    st.tuples(lfield(2, event_names), st.lists(lfield(3, key_value), max_size=3)).map(
        lambda t: [t[0], *t[1]]
    ),
    [lfield(2, event_names), u64.map(lambda v: f64(1, v)), vfield(4)],
    [1, 2, 3, 4],
)
SPAN_EXTRAS = [
    lfield(1, st.binary(max_size=16)),
    lfield(2, st.binary(max_size=8)),
    lfield(3, maybe_utf8),
    lfield(4, st.binary(max_size=8)),
    lfield(5, utf8),
    vfield(6, st.integers(0, 5)),
    vfield(6),
    u64.map(lambda v: f64(7, v)),
    u64.map(lambda v: f64(8, v)),
    lfield(11, event_message),
    lfield(15, status),
    st.just(f32(16, 0x301)),
]


def requests_of(span: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Encoded ExportTraceServiceRequests of these spans."""
    scope_spans = message(
        st.lists(lfield(2, span), min_size=1, max_size=3),
        [lfield(1, st.just(ld(1, b"scope"))), lfield(3, utf8)],
        [1, 2, 3],
    )
    resource = message(st.lists(lfield(1, key_value), max_size=4), [vfield(2)], [1, 2, 3])
    resource_spans = message(
        st.lists(st.one_of(lfield(1, resource), lfield(2, scope_spans)), min_size=1, max_size=3),
        [lfield(3, utf8)],
        [1, 2, 3],
        n=1,
    )
    return message(st.lists(lfield(1, resource_spans), max_size=3), [], [1], n=1)


span = message(st.lists(lfield(9, key_value), min_size=1, max_size=6), SPAN_EXTRAS, list(range(1, 17)), n=6)
requests = requests_of(span)
# Spans with as many events as attributes, for the event tests.
event_span = message(
    st.lists(st.one_of(lfield(9, key_value), lfield(11, event_message)), min_size=1, max_size=6),
    SPAN_EXTRAS,
    list(range(1, 17)),
    n=4,
)
event_requests = requests_of(event_span)
wanted = st.lists(st.sampled_from(KEY_POOL), min_size=1, max_size=6)
array_bounds = st.sampled_from([64, 64, 0, 1, 2, 3])


def array_keys_of(span_keys: list) -> st.SearchStrategy[list[str]]:
    """Some of the span keys (grouped or not), now and then all of them."""
    flat = sorted({k for e in span_keys for k in (e if isinstance(e, tuple) else (e,))})
    return st.one_of(st.lists(st.sampled_from(flat), max_size=3), st.just(flat))


def check_contract(
    data: bytes,
    span_keys: list,
    resource_keys: list,
    max_array_items: int = 64,
    array_keys: list[str] | tuple[()] = (),
    **events: object,
) -> bool:
    """Equal results when protobuf parses data; else ScanError or a result, nothing else."""
    outcomes = []
    for impl in (_c_scanner(), PyScanner):
        scanner = impl(
            span_keys, resource_keys, max_array_items=max_array_items, array_keys=array_keys, **events
        )
        try:
            outcomes.append(typed(scanner.scan(data)))
        except ScanError:
            outcomes.append(ScanError)
    c_outcome, py_outcome = outcomes
    if parses(data):
        assert py_outcome is not ScanError
        assert c_outcome == py_outcome
        return True
    assert py_outcome is ScanError
    return False


DIFF_SETTINGS = settings(
    max_examples=examples(300),
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.usefixtures("c_required")
@DIFF_SETTINGS
@given(data=requests, span_keys=wanted, resource_keys=wanted, max_array_items=array_bounds, draw=st.data())
def test_differential_generated(
    data: bytes, span_keys: list[str], resource_keys: list[str], max_array_items: int, draw: st.DataObject
) -> None:
    check_contract(data, span_keys, resource_keys, max_array_items, draw.draw(array_keys_of(span_keys)))


@st.composite
def key_groups(draw: st.DrawFn) -> list[tuple[str, ...]]:
    keys = draw(st.lists(st.sampled_from(KEY_POOL), min_size=1, max_size=8, unique=True))
    cuts = sorted(draw(st.sets(st.integers(1, len(keys) - 1), max_size=4))) if len(keys) > 1 else []
    bounds = [0, *cuts, len(keys)]
    return [tuple(keys[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


@pytest.mark.usefixtures("c_required")
@DIFF_SETTINGS
@given(
    data=requests,
    span_keys=key_groups(),
    resource_keys=key_groups(),
    max_array_items=array_bounds,
    draw=st.data(),
)
def test_differential_groups(
    data: bytes, span_keys: list, resource_keys: list, max_array_items: int, draw: st.DataObject
) -> None:
    check_contract(data, span_keys, resource_keys, max_array_items, draw.draw(array_keys_of(span_keys)))


@pytest.mark.usefixtures("c_required")
@DIFF_SETTINGS
@given(base=requests, span_keys=wanted, resource_keys=wanted, max_array_items=array_bounds, draw=st.data())
def test_differential_mutated(
    base: bytes, span_keys: list[str], resource_keys: list[str], max_array_items: int, draw: st.DataObject
) -> None:
    data = bytearray(base)
    for _ in range(draw.draw(st.integers(1, 3))):
        pos = draw.draw(st.integers(0, len(data)))
        op = draw.draw(st.sampled_from(["set", "flip", "insert", "delete", "truncate", "dup"]))
        if op == "set" and pos < len(data):
            data[pos] = draw.draw(st.integers(0, 255))
        elif op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw.draw(st.integers(1, 4))]
        elif op == "truncate":
            del data[pos:]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw.draw(st.integers(1, 8))]
    check_contract(
        bytes(data), span_keys, resource_keys, max_array_items, draw.draw(array_keys_of(span_keys))
    )


@st.composite
def event_options(draw: st.DrawFn) -> dict[str, object]:
    """event_names (never empty), event_keys (grouped now and then), max_events."""
    names = draw(st.lists(st.sampled_from(EVENT_NAME_POOL), min_size=1, max_size=3))
    keys = draw(st.one_of(st.lists(st.sampled_from(KEY_POOL), max_size=4), key_groups()))
    return {"event_names": names, "event_keys": keys, "max_events": draw(st.sampled_from([16, 0, 1, 2]))}


@pytest.mark.usefixtures("c_required")
@DIFF_SETTINGS
@given(
    data=event_requests, span_keys=key_groups(), resource_keys=wanted, events=event_options(), draw=st.data()
)
def test_differential_events(
    data: bytes, span_keys: list, resource_keys: list[str], events: dict[str, object], draw: st.DataObject
) -> None:
    check_contract(data, span_keys, resource_keys, 64, draw.draw(array_keys_of(span_keys)), **events)


@pytest.mark.usefixtures("c_required")
@DIFF_SETTINGS
@given(base=event_requests, events=event_options(), draw=st.data())
def test_differential_events_mutated(base: bytes, events: dict[str, object], draw: st.DataObject) -> None:
    data = bytearray(base)
    for _ in range(draw.draw(st.integers(1, 3))):
        pos = draw.draw(st.integers(0, len(data)))
        op = draw.draw(st.sampled_from(["set", "flip", "insert", "delete", "dup"]))
        if op == "set" and pos < len(data):
            data[pos] = draw.draw(st.integers(0, 255))
        elif op == "flip" and pos < len(data):
            data[pos] ^= 1 << draw.draw(st.integers(0, 7))
        elif op == "insert":
            data[pos:pos] = draw.draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw.draw(st.integers(1, 4))]
        elif op == "dup":
            data[pos:pos] = data[pos : pos + draw.draw(st.integers(1, 8))]
    check_contract(bytes(data), ["a", ("b", "http.route")], ["service.name"], 2, ["a"], **events)
