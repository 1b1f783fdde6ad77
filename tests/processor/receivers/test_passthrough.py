"""The top-level walk of metrics and logs requests agrees with protobuf on what it reads."""

from __future__ import annotations

import json
import time

import pytest
from apiusage.processor.receivers.passthrough import services_in_json, services_in_protobuf
from apiusage.processor.receivers.payload import InvalidPayload, PayloadTooLarge
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest


def metrics_request() -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    first = request.resource_metrics.add()
    for key, value in (("host.name", "a"), ("service.name", "orders-api")):
        kv = first.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    metric = first.scope_metrics.add().metrics.add()
    metric.name = "orders"
    for i in range(50):
        metric.sum.data_points.add().as_int = i
    request.resource_metrics.add()  # no resource at all
    third = request.resource_metrics.add()
    kv = third.resource.attributes.add()
    kv.key, kv.value.int_value = "service.name", 7  # not a string
    fourth = request.resource_metrics.add()
    for value in ("first", "billing-api"):  # two services: it names none
        kv = fourth.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", value
    return request


def test_each_resource_service_is_read_without_parsing_the_data_points() -> None:
    body = metrics_request().SerializeToString()
    assert services_in_protobuf(body, "metrics") == ["orders-api", None, None, None]
    assert services_in_protobuf(b"", "metrics") == []


def test_logs_requests_have_the_same_shape() -> None:
    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    kv = rl.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "orders-api"
    rl.scope_logs.add().log_records.add().body.string_value = "x" * 1000
    assert services_in_protobuf(request.SerializeToString(), "logs") == ["orders-api"]


def test_every_cut_of_a_body_is_refused_exactly_when_protobuf_refuses_it() -> None:
    body = metrics_request().SerializeToString()
    for cut in range(len(body)):
        prefix = body[:cut]
        try:
            ExportMetricsServiceRequest.FromString(prefix)
            parses = True
        except DecodeError:
            parses = False
        if parses:
            services_in_protobuf(prefix, "metrics")
        else:
            with pytest.raises(InvalidPayload):
                services_in_protobuf(prefix, "metrics")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x0a\x05ab", "truncated field (ExportMetricsServiceRequest) at byte 0"),
        (b"\x10\x01\x0a", "truncated varint (ExportMetricsServiceRequest) at byte 3"),
        (b"\x00", "invalid field number 0 (ExportMetricsServiceRequest) at byte 0"),
        (b"\x0b", "unexpected wire type 3 (ExportMetricsServiceRequest) at byte 0"),
        (b"\x10\x01", None),  # an unknown varint field at the top: kept, as protobuf keeps it
        (b"\x08\x01", None),  # resource_metrics with a wrong wire type: an unknown field to protobuf
        (b"\x0a\x80" + b"\xff" * 10, "invalid varint (ExportMetricsServiceRequest) at byte 1"),
        (b"\x0d\x00\x00\x00\x00", None),
        (b"{}", "unexpected wire type 3 (ExportMetricsServiceRequest) at byte 0"),
    ],
)
def test_broken_framing_names_what_and_where(body: bytes, message: str | None) -> None:
    if message is None:
        assert services_in_protobuf(body, "metrics") == []
        return
    with pytest.raises(InvalidPayload) as refused:
        services_in_protobuf(body, "metrics")
    assert str(refused.value) == message


def test_a_service_name_that_is_not_utf8_is_invalid() -> None:
    request = ExportMetricsServiceRequest()
    kv = request.resource_metrics.add().resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "ab"
    body = request.SerializeToString().replace(b"ab", b"\xff\xfe")
    with pytest.raises(InvalidPayload, match="not UTF-8"):
        services_in_protobuf(body, "metrics")


def test_the_number_of_resources_is_bounded() -> None:
    body = b"\x0a\x00" * 1001  # a thousand and one empty ResourceMetrics
    assert len(services_in_protobuf(body, "metrics", 1001)) == 1001
    with pytest.raises(PayloadTooLarge, match="more than 1000 resource_metrics in one request"):
        services_in_protobuf(body, "metrics", 1000)


def test_json_services() -> None:
    doc = {
        "resourceMetrics": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "orders-api"}}]}},
            {"resource": {"attributes": [{"key": "service.name", "value": {"intValue": "3"}}]}},
            {},
            "garbage",
        ]
    }
    assert services_in_json(json.dumps(doc).encode(), "metrics") == ["orders-api", None, None, None]
    for bad, message in (
        (b"[1]", "JSON body must be an object with a resourceMetrics list (ExportMetricsServiceRequest)"),
        (b'{"resourceMetrics": 3}', "resourceMetrics must be a list (ExportMetricsServiceRequest)"),
        (b"\xff", "JSON body is not UTF-8: invalid start byte at byte 0"),
        (b"[" * 100_000, "JSON body is nested too deeply"),
    ):
        with pytest.raises(InvalidPayload) as refused:
            services_in_json(bad, "metrics")
        assert str(refused.value) == message


def test_a_resource_naming_one_service_twice_names_it_and_two_differing_ones_name_none() -> None:
    def entry(*names: object) -> dict:
        attributes = [{"key": "service.name", "value": {"stringValue": n}} for n in names]
        return {"resource": {"attributes": attributes}}

    doc = {"resourceLogs": [entry("a", "a"), entry("a", "b"), entry("a", 3)], "resource_logs": [entry("c")]}
    assert services_in_json(json.dumps(doc).encode(), "logs") == ["a", None, None, "c"]
    both = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {
        "stringValue": "a", "string_value": "b"}}]}}]}  # fmt: skip
    assert services_in_json(json.dumps(both).encode(), "logs") == [None]
    with pytest.raises(InvalidPayload, match="^JSON object has the key 'resourceLogs' more than once$"):
        services_in_json(b'{"resourceLogs": [], "resourceLogs": []}', "logs")
    # Keys the walk does not read may repeat (inside log bodies, say).
    assert services_in_json(b'{"resourceLogs": [], "x": 1, "x": 2}', "logs") == []
    with pytest.raises(InvalidPayload, match="^resource_logs must be a list"):
        services_in_json(b'{"resourceLogs": [], "resource_logs": {}}', "logs")


def test_millions_of_empty_entries_are_refused_after_the_limit_without_parsing_them_all() -> None:
    body = b"\x0a\x00" * 8_000_000  # 16 MiB: protobuf would build 8 million messages (1.6 GB)
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge, match="^more than 100000 resource_logs in one request"):
        services_in_protobuf(body, "logs", 100_000)
    assert time.monotonic() - started < 2
    # Unknown top-level fields count too: a request holds nothing else.
    with pytest.raises(PayloadTooLarge):
        services_in_protobuf(b"\x10\x00" * 200_000, "logs", 100_000)


def test_a_broken_entry_is_named_by_its_index_and_bytes() -> None:
    good = ExportLogsServiceRequest()
    good.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "ok"
    entry = good.SerializeToString()
    broken = b"\x0a\x03\x12\x05a"  # ResourceLogs whose scope_logs claims 5 bytes and has 1
    with pytest.raises(InvalidPayload) as refused:
        services_in_protobuf(entry + broken, "logs", names=False)
    start = len(entry) + 2
    assert str(refused.value) == (
        f"resource_logs[1] (bytes {start} to {start + 3}) cannot be decoded: a field in it is truncated "
        "or broken, a string in its resource is not UTF-8, or its resource nests values more than 100 deep"
    )


def test_a_resource_nested_past_protobufs_depth_is_refused_for_a_bound_token_and_passed_otherwise() -> None:
    value = b"\x0a\x01x"  # AnyValue.string_value, framed by hand: protobuf builds none this deep
    for _ in range(200):
        pair = b"\x0a\x01k\x12" + _varint(len(value)) + value  # KeyValue
        values = b"\x0a" + _varint(len(pair)) + pair  # KeyValueList
        value = b"\x32" + _varint(len(values)) + values  # AnyValue.kvlist_value
    deep = b"\x0a\x01k\x12" + _varint(len(value)) + value
    service = b"\x0a\x0cservice.name\x12\x0c\x0a\x0aorders-api"
    resource = b"\x0a" + _varint(len(service)) + service + b"\x0a" + _varint(len(deep)) + deep
    entry = b"\x0a" + _varint(len(resource)) + resource
    body = b"\x0a" + _varint(len(entry)) + entry
    assert services_in_protobuf(body, "logs", names=False) == [None]
    with pytest.raises(InvalidPayload, match="nests values more than 100 deep"):
        services_in_protobuf(body, "logs")
    shallow = b"\x0a" + _varint(len(service) + 2) + b"\x0a" + _varint(len(service)) + service
    assert services_in_protobuf(b"\x0a" + _varint(len(shallow)) + shallow, "logs") == ["orders-api"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out + bytes([low]))
        out.append(low | 0x80)
