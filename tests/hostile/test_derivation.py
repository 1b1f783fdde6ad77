"""Hostile and faulty input at the derivation stage (issue 12, items 8, 9, 10 and 13): a bad value
costs at most its own span, sampling weights are capped, consumer ids stay distinct, and every
stored value is bounded. Real processor, real HTTP on 127.0.0.1, real SQLite."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time
from pathlib import Path

import pytest
from apiusage.processor.config import LimitsConfig, UsageConfig
from apiusage.processor.derive import requests as derive_requests
from apiusage.processor.derive.request_metrics import RequestMetrics
from apiusage.processor.derive.requests import Deriver, span_field_sources
from apiusage.processor.pipeline import SpanQueue, Worker
from apiusage.processor.receivers.fields import FieldScanner
from apiusage.processor.telemetry import PipelineStats

from tests.support.derivation import export_request, post, span
from tests.support.processor import running_processor, sample

SERVICE = "orders-api"
ORDERS = dict(
    service=SERVICE,
    method="GET",
    route="/v1/orders",
    status_code="200",
    plan_tier="unknown",
    deprecated="false",
)


def state_config(tmp_path: Path) -> dict:
    """SQLite state in tmp_path, flushed and refreshed only when the test says."""
    return {
        "state": {
            "sqlite": {"path": str(tmp_path / "state.db")},
            "flush_interval": "1h",
            "refresh_interval": "1h",
        }
    }


def test_a_malformed_tracestate_costs_at_most_its_own_span() -> None:
    # "²" and "٣" pass str.isdigit(); int("²") raised and lost all 1,000 spans of the request,
    # int("٣") == 3 weighted the span 8. Python's int(x, 16) takes "0x8" and "f_f" too.
    bad = {
        100: "ot=p:²",
        200: "ot=p:٣",
        300: "ot=th:0x8",
        400: "ot=th:f_f",
        500: "ot=p:-1",
        600: "ot=p:",
        700: "ot=th:",
        800: "ot=th:ggg",
        900: "ot=p:63",
    }
    spans = [span(bad.get(i, "")) for i in range(1000)]
    with running_processor() as running:
        assert post(running.http_endpoint, export_request(spans)) == 200
        m = running.wait_processed(1000)
    assert sample(m, "api_requests_total", **ORDERS) == 1000.0  # each bad one counts as unsampled
    assert sample(m, "apiusage_processing_errors_total") == 0.0


def test_an_internal_error_in_one_span_spares_its_neighbours(monkeypatch, caplog) -> None:
    # A bug that only one span's values reach (here: injected into the weight lookup).
    real = derive_requests.adjusted_count

    def faulty(tracestate: str) -> float:
        if tracestate == "ot=poison":
            raise RuntimeError("injected fault")
        return real(tracestate)

    monkeypatch.setattr(derive_requests, "adjusted_count", faulty)
    caplog.set_level(logging.ERROR, logger="apiusage.processor")
    with running_processor() as running:
        first = [span("ot=poison" if i == 500 else "") for i in range(1000)]
        assert post(running.http_endpoint, export_request(first)) == 200
        m = running.wait_processed(1000)
        assert sample(m, "api_requests_total", **ORDERS) == 999.0
        assert sample(m, "apiusage_processing_errors_total") == 1.0
        second = [span("ot=poison" if i in (0, 9) else "") for i in range(10)]
        assert post(running.http_endpoint, export_request(second)) == 200
        m = running.wait_processed(1010)
    assert sample(m, "api_requests_total", **ORDERS) == 1007.0
    assert sample(m, "apiusage_processing_errors_total") == 3.0
    # Logged once with its traceback, not once per poisoned span or request.
    errors = [r for r in caplog.records if r.getMessage().startswith("internal error")]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None and "injected fault" in str(errors[0].exc_info[1])


class _Recorder:
    """A sink that refuses any request of consumer `poison`, before keeping anything."""

    def __init__(self) -> None:
        self.consumers: list[str | None] = []

    def consume(self, requests) -> None:
        if any(r.consumer_id == "poison" for r in requests):
            raise ValueError("cannot take this request")
        self.consumers.extend(r.consumer_id for r in requests)


def test_a_sink_failing_on_one_request_loses_only_that_request() -> None:
    stats = PipelineStats()
    usage = UsageConfig()
    scanner = FieldScanner(span_field_sources(usage), [usage.attributes.service])
    metrics = RequestMetrics(LimitsConfig(), (0.1, 1.0), stats)
    recorder = _Recorder()
    queue = SpanQueue(10_000)
    worker = Worker(queue, Deriver(usage, stats), [metrics, recorder], stats)
    worker.start()
    spans = [span(consumer="poison" if i == 7 else f"c{i}") for i in range(1000)]
    assert queue.offer(*scanner.scan(export_request(spans)))
    assert worker.stop(10)
    [(key, total)] = metrics.snapshot().counters["api_requests"].items()
    assert (key, total) == (tuple(ORDERS.values()), 1000.0)  # the first sink had them all
    assert recorder.consumers == [f"c{i}" for i in range(1000) if i != 7]
    assert stats.processing_errors == 1
    assert stats.spans_processed == 1000


def test_implausible_sampling_weights_are_capped_and_counted() -> None:
    # p:62 claims 4.6e18 requests, th:ffffffffffffff 7.2e16: both are capped at 2**20 and counted;
    # p:20 (exactly 2**20) and th:8 (p = 1/2) are plausible and kept as they are.
    states = ["ot=p:62", "ot=th:ffffffffffffff", "ot=p:20", "ot=th:8"] + [""] * 10
    with running_processor() as running:
        assert post(running.http_endpoint, export_request([span(t) for t in states])) == 200
        m = running.wait_processed(len(states))
    assert sample(m, "api_requests_total", **ORDERS) == 3 * 2**20 + 2 + 10
    assert sample(m, "apiusage_data_quality_issues_total", check="implausible_sampling_weight") == 2
    assert sample(m, "apiusage_processing_errors_total") == 0.0


def _sha(consumer_id: str) -> str:
    return "sha256:" + hashlib.sha256(consumer_id.encode()).hexdigest()


def test_long_or_unprintable_consumer_ids_are_hashed_not_merged(tmp_path: Path) -> None:
    long_a, long_b = "k" * 300 + "A", "k" * 300 + "B"  # cut at 256 characters, they were one
    ids = [long_a, long_b, "nul\x00id", "nul id", "k" * 256]
    with running_processor(state_config(tmp_path)) as running:
        assert post(running.http_endpoint, export_request([span(consumer=c) for c in ids])) == 200
        running.wait_processed(len(ids))
        assert running.processor.state.flush()
        running.processor.state.refresh()
        m = running.scrape()
    assert sample(m, "api_active_consumers", service=SERVICE, plan_tier="unknown", window="1d") == 5
    with sqlite3.connect(tmp_path / "state.db") as db:
        stored = {c for (c,) in db.execute("SELECT consumer_id FROM consumers")}
    assert stored == {_sha(long_a), _sha(long_b), _sha("nul\x00id"), "nul id", "k" * 256}


def _text_columns(db: sqlite3.Connection) -> dict[str, list[str]]:
    tables = [
        t
        for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if t != "schema_migrations"
    ]
    return {t: [c[1] for c in db.execute(f"PRAGMA table_info({t})") if c[2] == "TEXT"] for t in tables}


def test_every_stored_value_is_bounded(tmp_path: Path) -> None:
    # 1 MiB routes made 180 MiB of spans into 903 MiB on disk. Values differ at the start, so
    # the cut keeps them apart; the consumer id is hashed, every label cut at 128 characters.
    big = 256 * 1024
    n = 8

    def huge(i: int, c: str) -> str:
        return f"{i}{c * big}"

    spans = [
        span(
            route=huge(i, "r"),
            plan=huge(i, "p"),
            client=huge(i, "n"),
            version=huge(i, "v"),
            feature=huge(i, "f"),
            consumer=huge(i, "c"),
            method="GET",
        )
        for i in range(n)
    ]
    start = time.monotonic()
    with running_processor(state_config(tmp_path)) as running:
        assert post(running.http_endpoint, export_request(spans, service="s" * big)) == 200
        running.wait_processed(n)
        assert running.processor.state.flush()
        running.processor.state.refresh()
        m = running.scrape()
    assert time.monotonic() - start < 20

    def cut(value: str) -> str:
        return value[:127] + "…"

    with sqlite3.connect(tmp_path / "state.db") as db:
        for table, columns in _text_columns(db).items():
            for column in columns:
                (longest,) = db.execute(f"SELECT MAX(LENGTH({column})) FROM {table}").fetchone()
                assert (longest or 0) <= 128, (table, column, longest)  # NULL: an empty table
        rows = sorted(
            db.execute(
                "SELECT e.service, e.consumer_id, e.route, f.feature, c.client_name, c.client_version "
                "FROM consumer_endpoints e JOIN consumer_features f USING (service, consumer_id) "
                "JOIN consumer_clients c USING (service, consumer_id)"
            )
        )
        plans = sorted(p for (p,) in db.execute("SELECT plan_tier FROM consumers"))
    assert rows == sorted(
        (
            cut("s" * big),
            _sha(huge(i, "c")),
            cut(huge(i, "r")),
            cut(huge(i, "f")),
            cut(huge(i, "n")),
            cut(huge(i, "v")),
        )
        for i in range(n)
    )
    assert plans == sorted(cut(huge(i, "p")) for i in range(n))
    # The request metrics carry the same values as the store.
    assert (
        sample(
            m,
            "api_requests_total",
            service=cut("s" * big),
            method="GET",
            route=cut(huge(3, "r")),
            status_code="200",
            plan_tier=cut(huge(3, "p")),
            deprecated="false",
        )
        == 1.0
    )
    assert (tmp_path / "state.db").stat().st_size < 1 << 20


@pytest.mark.parametrize(
    "tracestate, weight",
    [
        ("ot=p:²", 1.0),
        ("ot=p:٣", 1.0),
        ("ot=p:3", 8.0),
        ("ot=th:0x8", 1.0),
        ("ot=th:8", 2.0),
        ("ot=th:" + "f" * 15, 1.0),
        ("vendor=x,ot=p:1;rv:ab", 2.0),
        ("ot=p:62", float(2**62)),
    ],
)
def test_adjusted_count_accepts_only_well_formed_values(tracestate: str, weight: float) -> None:
    # adjusted_count reports what the tracestate says; the Deriver caps it (test above).
    assert derive_requests.adjusted_count(tracestate) == weight
