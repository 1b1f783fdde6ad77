"""Deriver: label values sanitized and bounded once, consumer ids hashed rather than cut."""

from __future__ import annotations

import hashlib

from apiusage.processor.config import UsageConfig
from apiusage.processor.derive.requests import Deriver, consumer_key
from apiusage.processor.telemetry import PipelineStats

from tests.processor.derive.test_requests import NOW, span


def test_label_values_are_printable_and_cut_at_max_label_length() -> None:
    stats = PipelineStats()
    [r] = Deriver(UsageConfig(), stats, max_label_length=16).derive(
        [("svc\x00" + "s" * 40,)],
        [
            span(
                method="GET",
                route="/v1/\r\n" + "r" * 40,
                status_code=200,
                plan_tier="pro\u2028",
                client_name="sdk\t",
                client_version="1" * 20,
                api_version="v\x001",
                feature="f\x07",
            )
        ],
    )
    assert r[:10] == (
        "svc " + "s" * 11 + "…",
        "GET",
        "/v1/  " + "r" * 9 + "…",
        "200",
        "pro ",
        "false",
        "sdk ",
        "1" * 15 + "…",
        "v 1",
        "f ",
    )
    assert stats.processing_errors == 0


def test_consumer_ids_over_256_characters_or_unprintable_are_hashed() -> None:
    def sha(text: str) -> str:
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()

    assert consumer_key("k" * 256) == "k" * 256
    assert consumer_key("k" * 257) == sha("k" * 257)
    assert consumer_key("a\x00b") == sha("a\x00b")
    assert consumer_key("a b") == "a b"
    assert consumer_key("\ud800") == "sha256:" + hashlib.sha256(b"\xed\xa0\x80").hexdigest()
    [r] = Deriver(UsageConfig(), PipelineStats()).derive(
        [("svc",)], [span(method="GET", route="/x", status_code=200, consumer_id="c" * 300, end=NOW)]
    )
    assert r.consumer_id == sha("c" * 300)


def test_a_failing_span_is_counted_and_the_others_derived(monkeypatch) -> None:
    from apiusage.processor.derive import requests as module

    def boom(tracestate: str) -> float:
        raise RuntimeError("injected")

    monkeypatch.setattr(module, "adjusted_count", boom)
    stats = PipelineStats()
    out = Deriver(UsageConfig(), stats).derive(
        [("svc",)],
        [
            span(method="GET", route="/a", status_code=200),
            span(method="GET", route="/b", status_code=200, tracestate="ot=p:1"),
            span(method="GET", route="/c", status_code=200),
        ],
    )
    assert [r.route for r in out] == ["/a", "/c"]
    assert stats.processing_errors == 1


def test_values_remembered_as_clean_derive_alike_and_the_memo_stays_bounded() -> None:
    from apiusage.processor.derive import requests as module

    deriver = Deriver(UsageConfig(), PipelineStats(), max_label_length=16)
    spans = [
        span(
            method="GET",
            route=route,
            status_code=200,
            plan_tier=plan,
            client_name="sdk",
            client_version=version,
            api_version=api,
            consumer_id=consumer,
            end=NOW,
        )
        for route, plan, version, api, consumer in (
            ("/a", "pro", "1", True, "c1"),
            ("/a\x00", "pro", 1, "true", "c1\x00"),
            ("/a", "pro\n", "1", 1.5, "c" * 257),
            (True, "True", "1" * 17, "1.5", "c1"),
        )
    ]
    expected = [
        ("/a", "pro", "1", "true", "c1"),
        ("/a ", "pro", "1", "true", "sha256:" + hashlib.sha256(b"c1\x00").hexdigest()),
        ("/a", "pro ", "1", "1.5", "sha256:" + hashlib.sha256(b"c" * 257).hexdigest()),
        ("True", "True", "1" * 15 + "…", "1.5", "c1"),
    ]
    for _ in range(2):  # the second pass meets every value in the memo or refused from it
        out = deriver.derive([("svc",)], spans)
        assert [
            (r.route, r.plan_tier, r.client_version, r.api_version, r.consumer_id) for r in out
        ] == expected
    many = [
        span(method="GET", route=f"/r{i}", status_code=200, consumer_id=f"c{i}", end=NOW)
        for i in range(module._MEMO_LIMIT + 100)
    ]
    assert [r.route for r in deriver.derive([("svc",)], many)] == [f"/r{i}" for i in range(len(many))]
    assert len(deriver._clean_labels) <= module._MEMO_LIMIT
    assert len(deriver._clean_ids) <= module._MEMO_LIMIT
