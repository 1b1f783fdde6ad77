"""apiusage.demo.otlp: the one OTLP request builder of the backfill, the tests and the benchmarks."""

from __future__ import annotations

import pytest
from apiusage.demo.otlp import (
    SERVER,
    ExportTraceServiceRequest,
    add_resource,
    add_span,
    key_value,
    set_value,
    spans_request,
)
from google.protobuf.json_format import MessageToDict


def test_every_value_type_round_trips_through_the_wire_format():
    request = ExportTraceServiceRequest()
    scope = add_resource(request, {"service.name": "orders-api", "left.out": None}, scope="lib")
    attributes = {
        "s": "GET",
        "i": 200,
        "b": True,
        "f": 0.25,
        "raw": b"\x00\xff",
        "arr": [1, "x", False],
        "empty": [],
        "kv": {"k": 7},
        "none": None,
    }
    add_span(scope, attributes, name="GET /v1/orders", start_ns=10, end_ns=25, trace_state="ot=th:8")
    decoded = ExportTraceServiceRequest.FromString(request.SerializeToString())
    rs = decoded.resource_spans[0]
    assert [(a.key, a.value.string_value) for a in rs.resource.attributes] == [("service.name", "orders-api")]
    assert rs.scope_spans[0].scope.name == "lib"
    span = rs.scope_spans[0].spans[0]
    assert (span.kind, span.name, span.start_time_unix_nano, span.end_time_unix_nano) == (
        SERVER,
        "GET /v1/orders",
        10,
        25,
    )
    assert (len(span.trace_id), len(span.span_id), span.trace_state) == (16, 8, "ot=th:8")
    values = {a.key: MessageToDict(a.value) for a in span.attributes}
    assert values == {
        "s": {"stringValue": "GET"},
        "i": {"intValue": "200"},
        "b": {"boolValue": True},
        "f": {"doubleValue": 0.25},
        "raw": {"bytesValue": "AP8="},
        "arr": {"arrayValue": {"values": [{"intValue": "1"}, {"stringValue": "x"}, {"boolValue": False}]}},
        "empty": {"arrayValue": {}},
        "kv": {"kvlistValue": {"values": [{"key": "k", "value": {"intValue": "7"}}]}},
    }
    assert list(values) == [k for k, v in attributes.items() if v is not None]  # order kept


def test_bool_is_not_written_as_int_and_none_leaves_the_value_empty():
    assert key_value("d", False).value.WhichOneof("value") == "bool_value"
    assert key_value("n", None).value.WhichOneof("value") is None


def test_given_ids_are_kept_and_spans_request_shares_arguments():
    ids = {"trace_id": b"t" * 16, "span_id": b"s" * 8}
    request = spans_request({"service.name": "a"}, [{"x": 1}, {"x": 2}], start_ns=1, end_ns=2, **ids)
    spans = request.resource_spans[0].scope_spans[0].spans
    assert [(s.trace_id, s.span_id, s.attributes[0].value.int_value) for s in spans] == [
        (b"t" * 16, b"s" * 8, 1),
        (b"t" * 16, b"s" * 8, 2),
    ]


@pytest.mark.parametrize("value", [object(), {1, 2}, 1 + 2j])
def test_a_value_without_an_otlp_type_is_a_clear_type_error(value):
    with pytest.raises(TypeError, match=f"no OTLP AnyValue for a {type(value).__name__}"):
        key_value("k", value)


def test_out_of_range_ints_and_bad_strings_are_refused_by_protobuf_not_truncated():
    with pytest.raises(ValueError):
        key_value("k", 2**63)
    with pytest.raises(ValueError):
        set_value(key_value("k", 0).value, "\udcff")  # a lone surrogate is not UTF-8


def test_design_attributes_use_the_contract_names_and_string_arrays():
    from apiusage.conventions import attributes as attr
    from apiusage.demo.otlp import design_attributes

    values = design_attributes(
        query_parameters=("cursor", "limit"),
        body_fields=["lines", "shipping.method"],
        request_size=180,
        response_size=3 << 20,
        validation_errors=[("body.lines.*.quantity", "int_parsing"), ("query.limit", "missing")],
        client_region="DE",
        error_type="LedgerUnavailable",
    )
    assert values == {
        attr.ATTR_SCHEMA_VERSION: 2,
        "apiusage.request.query_parameters": ["cursor", "limit"],
        "apiusage.request.body_fields": ["lines", "shipping.method"],
        "http.request.body.size": 180,
        "http.response.body.size": 3 << 20,
        "apiusage.validation.error_locations": ["body.lines.*.quantity", "query.limit"],
        "apiusage.validation.error_types": ["int_parsing", "missing"],
        "apiusage.client.region": "DE",
        "error.type": "LedgerUnavailable",
    }
    request = spans_request({"service.name": "orders-api"}, [values], start_ns=1, end_ns=2)
    decoded = ExportTraceServiceRequest.FromString(request.SerializeToString())
    wire = {
        a.key: MessageToDict(a.value) for a in decoded.resource_spans[0].scope_spans[0].spans[0].attributes
    }
    assert wire["apiusage.request.query_parameters"] == {
        "arrayValue": {"values": [{"stringValue": "cursor"}, {"stringValue": "limit"}]}
    }
    assert wire["apiusage.validation.error_types"] == {
        "arrayValue": {"values": [{"stringValue": "int_parsing"}, {"stringValue": "missing"}]}
    }
    assert wire["http.response.body.size"] == {"intValue": str(3 << 20)}
    # Left out unless given; an empty list is an empty array; a version 1 span has no version 2 names.
    assert design_attributes() == {attr.ATTR_SCHEMA_VERSION: 2}
    assert design_attributes(query_parameters=[], schema_version=None) == {
        "apiusage.request.query_parameters": []
    }
    assert design_attributes(schema_version=1) == {attr.ATTR_SCHEMA_VERSION: 1}


def test_feedback_request_round_trips_as_otlp_logs():
    from apiusage.demo.otlp import ExportLogsServiceRequest, feedback_request

    request = feedback_request(
        {"service.name": "orders-api", "cloud.region": "eu-west-1"},
        [
            {"score": 4, "category": "docs", "time_ns": 10, "route": "/v2/orders", "consumer_id": "c1"},
            {"score": "5", "category": "sdk", "time_ns": 20, "observed_ns": 25, "legacy_event_name": True},
            {"score": 2.0, "category": "errors", "time_ns": 30, "attributes": {"extra": True}},
        ],
    )
    decoded = ExportLogsServiceRequest.FromString(request.SerializeToString())
    rl = decoded.resource_logs[0]
    assert {a.key: a.value.string_value for a in rl.resource.attributes} == {
        "service.name": "orders-api",
        "cloud.region": "eu-west-1",
    }
    assert rl.scope_logs[0].scope.name == "apiusage"
    records = rl.scope_logs[0].log_records
    assert [(r.event_name, r.time_unix_nano, r.observed_time_unix_nano) for r in records] == [
        ("apiusage.feedback", 10, 10),
        ("", 20, 25),
        ("apiusage.feedback", 30, 30),
    ]
    assert [{a.key: MessageToDict(a.value) for a in r.attributes} for r in records] == [
        {
            "apiusage.feedback.score": {"intValue": "4"},
            "apiusage.feedback.category": {"stringValue": "docs"},
            "apiusage.feedback.route": {"stringValue": "/v2/orders"},
            "apiusage.consumer.id": {"stringValue": "c1"},
        },
        {
            "event.name": {"stringValue": "apiusage.feedback"},
            "apiusage.feedback.score": {"stringValue": "5"},
            "apiusage.feedback.category": {"stringValue": "sdk"},
        },
        {
            "apiusage.feedback.score": {"doubleValue": 2.0},
            "apiusage.feedback.category": {"stringValue": "errors"},
            "extra": {"boolValue": True},
        },
    ]
    assert all(r.severity_text == "INFO" and r.severity_number == 9 for r in records)
