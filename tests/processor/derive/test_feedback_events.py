"""Feedback log records read out of OTLP logs requests (protobuf and JSON) into Feedback tuples,
and their count in api_feedback_total: exact values, bad scores, hostile bodies."""

from __future__ import annotations

import json

import pytest
from apiusage.demo.otlp import add_attributes
from apiusage.processor.config import LimitsConfig
from apiusage.processor.derive.feedback import EventRecord, Feedback, extract_feedback
from apiusage.processor.derive.feedback_metrics import FeedbackMetrics
from apiusage.processor.derive.requests import consumer_key
from apiusage.processor.exporters.feedback_metrics import FeedbackCollector
from apiusage.processor.receivers.passthrough import (
    MAX_FEEDBACK_RECORDS,
    feedback_in_protobuf,
    logs_in_json,
    services_in_json,
    services_in_protobuf,
)
from apiusage.processor.receivers.payload import InvalidPayload, PayloadTooLarge
from apiusage.processor.telemetry import PipelineStats

from tests.support.feedback import (
    CATEGORY,
    CONSUMER,
    ORDERS,
    ROUTE,
    SCORE,
    T,
    fb,
    feedback_attrs,
    logs_request,
)


def read(body: bytes, **kwargs: object) -> tuple[list[Feedback], int]:
    return extract_feedback(feedback_in_protobuf(body), now_ns=42, **kwargs)  # type: ignore[arg-type]


def test_feedback_records_become_exact_feedback_tuples() -> None:
    body = logs_request(
        (
            ORDERS,
            [
                fb(attributes=feedback_attrs(5, "docs", "/v1/orders/{order_id}", **{CONSUMER: "c-1"})),
                {"body": "order 1 placed", "time": T, "attributes": {"i": 1}},
                fb(time=0, observed=T + 1, attributes=feedback_attrs("2", "errors")),
                fb(time=0, attributes=feedback_attrs(3.0, "errors")),
                # An older SDK: the name in the event.name attribute, no event_name field.
                {"time": T, "attributes": {"event.name": "apiusage.feedback", **feedback_attrs(1, "sdk")}},
            ],
        ),
        ({"service.name": "billing-api", "host.name": "h"}, [fb(attributes=feedback_attrs(4, "docs"))]),
        ({}, [fb(attributes=feedback_attrs(4, None))]),  # no service, no category
    ).SerializeToString()
    events, refused = read(body)
    assert refused == 0
    assert events == [
        Feedback("orders-api", "/v1/orders/{order_id}", "docs", "5", "c-1", T),
        Feedback("orders-api", "", "errors", "2", None, T + 1),
        Feedback("orders-api", "", "errors", "3", None, 42),
        Feedback("orders-api", "", "sdk", "1", None, T),
        Feedback("billing-api", "", "docs", "4", None, T),
        Feedback("unknown_service", "", "unknown", "4", None, T),
    ]


@pytest.mark.parametrize(
    "score", [0, 6, -1, 3.5, "3.0", " 3", "five", "", True, None, [3], float("nan"), float("inf"), 2**63 - 1]
)
def test_a_score_that_is_not_an_integer_1_to_5_is_refused_and_counted(score: object) -> None:
    record = EventRecord("orders-api", "apiusage.feedback", feedback_attrs(score), T, 0)
    good = EventRecord("orders-api", "apiusage.feedback", feedback_attrs(2), T, 0)
    assert extract_feedback([record, good]) == ([Feedback("orders-api", "", "docs", "2", None, T)], 1)


def test_a_bad_score_read_off_the_wire_is_refused_too() -> None:
    body = logs_request(
        (ORDERS, [fb(attributes=feedback_attrs(9)), fb(attributes=feedback_attrs([1, 2])), fb()])
    ).SerializeToString()
    assert read(body) == ([Feedback("orders-api", "", "docs", "4", None, T)], 2)


def test_other_events_and_plain_logs_that_mention_feedback_are_not_feedback() -> None:
    body = logs_request(
        (
            ORDERS,
            [
                {"event_name": "apiusage.feedback.v2", "time": T, "attributes": feedback_attrs()},
                {"event_name": "orders.placed", "time": T, "attributes": {"event.name": "apiusage.feedback"}},
                {"body": "apiusage.feedback endpoint failed", "time": T, "attributes": feedback_attrs()},
                {"time": T, "attributes": {"note": "apiusage.feedback", **feedback_attrs()}},
            ],
        )
    ).SerializeToString()
    # Only the record whose event.name attribute names it is decoded (and then left alone).
    assert [r.event_name for r in feedback_in_protobuf(body)] == ["orders.placed"]
    assert read(body) == ([], 0)


def test_log_lines_that_mention_feedback_are_never_decoded_however_many() -> None:
    body = logs_request((ORDERS, [{"body": "POST /v1/feedback apiusage.feedback"}] * 100_000))
    assert feedback_in_protobuf(body.SerializeToString()) == []


def test_labels_are_printable_and_bounded_and_consumer_ids_stored_as_the_spans_are() -> None:
    long_id = "c" * 300
    attributes = feedback_attrs(4, "bad\x00cat\nx" + "y" * 200, "/v1/\x1b[31m", **{CONSUMER: long_id})
    body = logs_request(({"service.name": "svc\ttab"}, [fb(attributes=attributes)])).SerializeToString()
    [event], refused = read(body, max_label_length=16)
    assert refused == 0
    assert event == Feedback("svc tab", "/v1/ [31m", "bad cat xyyyyyy…", "4", consumer_key(long_id), T)
    assert event.consumer_id is not None and event.consumer_id.startswith("sha256:")


def test_the_consumer_comes_from_the_configured_attributes_first_present_wins() -> None:
    record = EventRecord(
        "orders-api", "apiusage.feedback", {**feedback_attrs(), "enduser.id": 77, CONSUMER: ""}, T, 0
    )
    events, _ = extract_feedback([record], consumer_attributes=(CONSUMER, "enduser.id"))
    assert events[0].consumer_id == "77"


def test_the_first_of_a_repeated_attribute_counts() -> None:
    request = logs_request((ORDERS, [fb(attributes={SCORE: 2, CATEGORY: "docs"})]))
    record = request.resource_logs[0].scope_logs[0].log_records[0]
    add_attributes(record.attributes, {SCORE: 5, CATEGORY: "other"})
    assert read(request.SerializeToString())[0][0].score == "2"


def test_100000_records_of_which_3_are_feedback_decode_only_those_3() -> None:
    records = [{"body": f"order {i} placed", "time": T, "attributes": {"i": i}} for i in range(100_000)]
    for i, score in ((7, 1), (50_000, 3), (99_999, 5)):
        records[i] = fb(attributes=feedback_attrs(score, "docs"))
    body = logs_request((ORDERS, records)).SerializeToString()
    found = feedback_in_protobuf(body, max_records=100_000)
    assert [r.attributes[SCORE] for r in found] == [1, 3, 5]
    assert [e.score for e in extract_feedback(found)[0]] == ["1", "3", "5"]
    # Nothing to read in a body without the bytes (and no decoding error for not looking).
    assert feedback_in_protobuf(body.replace(b"apiusage.feedback", b"apiusage.feedbacx")) == []


def test_more_feedback_records_than_the_bound_is_too_large_before_any_is_decoded() -> None:
    body = logs_request((ORDERS, [fb() for _ in range(11)])).SerializeToString()
    assert len(feedback_in_protobuf(body, max_records=11)) == 11
    with pytest.raises(PayloadTooLarge, match=r"more than 10 feedback log records \('apiusage.feedback'\)"):
        feedback_in_protobuf(body, max_records=10)
    assert MAX_FEEDBACK_RECORDS == 10_000
    many = logs_request((ORDERS, [fb()] * 10_001)).SerializeToString()
    with pytest.raises(PayloadTooLarge, match="more than 10000 feedback log records"):
        feedback_in_protobuf(many)
    as_json = json.dumps(
        {"resourceLogs": [{"scopeLogs": [{"logRecords": [{"eventName": "apiusage.feedback"}] * 11}]}]}
    ).encode()
    with pytest.raises(PayloadTooLarge, match="more than 10 feedback log records"):
        logs_in_json(as_json, max_records=10)


def test_a_broken_feedback_record_is_named_where_it_is() -> None:
    good = logs_request((ORDERS, [fb(), fb()]))
    record = good.resource_logs[0].scope_logs[0].log_records[1]
    record.body.string_value = "\u00e9" * 4
    body = good.SerializeToString()
    # The é (0xC3 0xA9) cut to 0xC3 0x41: not UTF-8, which the passthrough check never reads.
    broken = body.replace("\u00e9".encode(), b"\xc3\x41", 1)
    services_in_protobuf(broken, "logs")  # framing is fine: today's check lets it through
    with pytest.raises(InvalidPayload, match=r"resource_logs\[0\]\.scope_logs\[0\]\.log_records\[1\] cannot"):
        feedback_in_protobuf(broken)


def test_json_bodies_are_read_like_protobuf_ones() -> None:
    def kv(key: str, value: dict) -> dict:
        return {"key": key, "value": value}

    body = json.dumps(
        {
            "resourceLogs": [
                {
                    "resource": {"attributes": [kv("service.name", {"stringValue": "orders-api"})]},
                    "scopeLogs": [
                        {
                            "logRecords": [
                                {
                                    "eventName": "apiusage.feedback",
                                    "timeUnixNano": str(T),
                                    "attributes": [
                                        kv(SCORE, {"intValue": "5"}),
                                        kv(CATEGORY, {"stringValue": "docs"}),
                                        kv(ROUTE, {"stringValue": "/v1/orders"}),
                                        kv(CONSUMER, {"stringValue": "c-9"}),
                                    ],
                                },
                                {"body": {"stringValue": "plain"}, "attributes": [kv("i", {"intValue": 3})]},
                                {
                                    "eventName": "apiusage.feedback",
                                    "observedTimeUnixNano": T + 5,
                                    "attributes": [kv(SCORE, {"doubleValue": 6.0})],  # refused
                                },
                            ]
                        }
                    ],
                },
                {
                    "resource": {},
                    "scope_logs": [  # the protobuf field names, which OTLP/JSON readers accept too
                        {
                            "log_records": [
                                {
                                    # An escaped name, and the old attribute form.
                                    "attributes": [
                                        kv("event.name", {"stringValue": "apiusage\\u002efeedback"}),
                                        kv(SCORE, {"stringValue": "2"}),
                                        kv(CATEGORY, {"boolValue": True}),
                                        {"key": ["not", "a", "str"], "value": {}},
                                        "not an object",
                                    ],
                                    "time_unix_nano": "x",
                                }
                            ]
                        }
                    ],
                },
            ]
        }
    ).replace("\\\\u002e", "\\u002e")
    services, records = logs_in_json(body.encode(), names=True)
    assert services == ["orders-api", None]
    assert extract_feedback(records, now_ns=42) == (
        [
            Feedback("orders-api", "/v1/orders", "docs", "5", "c-9", T),
            Feedback("unknown_service", "", "true", "2", None, 42),
        ],
        1,
    )
    # The same body for a token of any service: names not checked, still read for feedback.
    assert logs_in_json(body.encode(), names=False)[1] == records
    assert services_in_json(body.encode(), "logs", names=False) == [None, None]


@pytest.mark.parametrize(
    ("value", "score"),
    [
        ({"intValue": "3"}, "3"),
        ({"intValue": 3}, "3"),
        ({"int_value": "2"}, "2"),
        ({"doubleValue": 5}, "5"),
        ({"doubleValue": "4.0"}, "4"),
        ({"stringValue": "1"}, "1"),
        ({"intValue": "--3"}, None),
        ({"intValue": " 3"}, None),
        ({"intValue": "3_0"}, None),
        ({"intValue": "\u0663"}, None),  # an Arabic-Indic 3, which int() would take
        ({"intValue": True}, None),
        ({"doubleValue": "x"}, None),
        ({"doubleValue": "1e999"}, None),
        ({"boolValue": True}, None),
        ({"arrayValue": {"values": [{"intValue": "3"}]}}, None),
        ("3", None),
    ],
)
def test_json_score_values_are_read_as_otlp_json_writes_them(value: object, score: str | None) -> None:
    record = {"eventName": "apiusage.feedback", "attributes": [{"key": SCORE, "value": value}]}
    body = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [record]}]}]}).replace("\\\\u", "\\u")
    events, refused = extract_feedback(logs_in_json(body.encode())[1])
    assert ([e.score for e in events], refused) == (([score], 0) if score else ([], 1))


def test_json_without_the_name_is_not_walked_and_malformed_json_is_refused_as_before() -> None:
    plain = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {}}] * 3}]}]}).encode()
    assert logs_in_json(plain) == ([None], [])
    for bad, message in (
        (b"[]", "JSON body must be an object with a resourceLogs list"),
        (b'{"resourceLogs": 3}', "resourceLogs must be a list"),
        (b"{", "body is not valid JSON"),
    ):
        with pytest.raises(InvalidPayload, match=message):
            logs_in_json(bad)


def test_feedback_metrics_count_exactly_and_bound_their_labels() -> None:
    stats = PipelineStats()
    limits = LimitsConfig(max_label_values={"category": 2, "route": 1000})
    metrics = FeedbackMetrics(limits, stats)
    events = [Feedback("orders-api", "", "docs", "5", "c-1", T)] * 3 + [
        Feedback("orders-api", "/v1/orders", "errors", "1", None, T),
        Feedback("orders-api", "/v1/orders", "pricing", "1", None, T),  # a third category
    ]
    metrics.consume_feedback(events)
    assert metrics.snapshot() == {
        ("orders-api", "", "docs", "5"): 3,
        ("orders-api", "/v1/orders", "errors", "1"): 1,
        ("orders-api", "/v1/orders", "__other__", "1"): 1,
    }
    assert stats.label_overflow == {("api_feedback", "category"): 1}
    [family] = FeedbackCollector(metrics).collect()
    assert family.name == "api_feedback" and family.type == "counter"
    assert {tuple(s.labels.values()): s.value for s in family.samples if s.name == "api_feedback_total"} == {
        ("orders-api", "", "docs", "5"): 3,
        ("orders-api", "/v1/orders", "errors", "1"): 1,
        ("orders-api", "/v1/orders", "__other__", "1"): 1,
    }


def test_100000_distinct_categories_fold_into_other_and_the_folds_are_counted() -> None:
    stats = PipelineStats()
    metrics = FeedbackMetrics(LimitsConfig(), stats)
    metrics.consume_feedback(
        [Feedback("orders-api", "", f"cat-{i}\x07", "3", None, T) for i in range(100_000)]
    )
    snapshot = metrics.snapshot()
    assert len(snapshot) == 51
    assert snapshot[("orders-api", "", "__other__", "3")] == 99_950
    assert snapshot[("orders-api", "", "cat-0 ", "3")] == 1  # the series table sanitizes again
    assert stats.label_overflow == {("api_feedback", "category"): 99_950}


def test_the_default_limits_bound_category_and_score_small() -> None:
    limits = LimitsConfig()
    assert (limits.label_limit("category"), limits.label_limit("score")) == (50, 5)


def test_idle_feedback_series_expire_after_the_ttl() -> None:
    metrics = FeedbackMetrics(LimitsConfig(series_ttl=1), PipelineStats(), sweep_interval=0.01)
    metrics.consume_feedback([Feedback("orders-api", "", "docs", "5", None, T)])
    cell = metrics.feedback.series[("orders-api", "", "docs", "5")]
    cell[0] -= 2  # last updated two seconds ago
    metrics._last_sweep -= 1
    assert metrics.snapshot() == {}
