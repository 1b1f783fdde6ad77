"""Experiment state under sampling: each exposure counts once as a span and `weight` times as
requests (experiment_days, experiment_latency), on SQLite and PostgreSQL; a failed write keeps
both; migration 6 gives the rows of a version-5 store span counts (their weighted tallies
rounded) and the next flushes add to them."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator

import pytest
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.state import schema
from apiusage.processor.state import store as store_module
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.experiments import ExperimentActivity, latency_bucket
from apiusage.processor.state.service import StateService
from apiusage.processor.state.store import Store, open_store
from apiusage.processor.telemetry import PipelineStats

from tests.support.postgres import postgres_server

S, E = "orders-api", "checkout-v2"
TODAY = int(time.time() * 1000) // DAY_MS
DAY = TODAY - 2
T0 = DAY * DAY_MS + 3_600_000
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.live)]
FAST, SLOW = 0.01, 0.3  # two latency buckets


def x(variant: str, at_ms: int, code: str = "200", duration: float = FAST, weight: float = 10.0) -> Exposure:
    return Exposure(
        S, E, variant, "POST", "/v2/orders", code, "pro", "sdk", None, None, duration, weight,
        at_ms * 1_000_000,
    )  # fmt: skip


# 10% head sampling: A has 7 spans (2 of them 5xx, 1 4xx, 2 slow), B has 5 (one 4xx, one slow);
# one B span of weight 4 (25% sampled), and one B span with no latency (ended before it began).
EXPOSURES = [
    *(x("A", T0 + i) for i in range(4)),
    x("A", T0 + 10, "503", SLOW),
    x("A", T0 + 11, "500", SLOW),
    x("A", T0 + 12, "429"),
    x("B", T0 + 20),
    x("B", T0 + 21, "404", SLOW),
    x("B", T0 + 22, weight=4.0),
    x("B", T0 + 23, duration=-1.0),
    x("B", T0 + 24),
]
F, L = latency_bucket(FAST), latency_bucket(SLOW)
# (requests, errors, client_errors) weighted, then (spans, span_errors, span_client_errors)
DAY_TALLIES = {"A": ((70.0, 20.0, 10.0), (7, 2, 1)), "B": ((44.0, 0.0, 10.0), (5, 0, 1))}
# (variant, bucket, weighted count, spans)
LATENCY = [("A", F, 50.0, 5), ("A", L, 20.0, 2), ("B", F, 24.0, 3), ("B", L, 10.0, 1)]


@contextlib.contextmanager
def backend(kind: str, tmp_path) -> Iterator[StateConfig]:  # noqa: ANN001
    if kind == "postgres":
        with postgres_server() as pg:
            yield StateConfig(postgres=PostgresState(dsn=pg.dsn), retention_days=30)
    else:
        yield StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")), retention_days=30)


def tallies(store: Store) -> tuple[dict, list]:
    days = {
        v: ((float(r), float(e), float(c)), (int(s), int(se), int(sc)))
        for v, r, e, c, s, se, sc in store.query(
            "SELECT variant, requests, errors, client_errors, spans, span_errors, span_client_errors "
            "FROM experiment_days ORDER BY variant"
        )
    }
    latency = [
        (v, int(b), float(c), int(s))
        for v, b, c, s in store.query(
            "SELECT variant, bucket, count, spans FROM experiment_latency ORDER BY variant, bucket"
        )
    ]
    return days, latency


@pytest.mark.parametrize("kind", BACKENDS)
def test_sampled_exposures_count_ten_requests_and_one_span_each(tmp_path, kind: str) -> None:
    activity = ExperimentActivity(30, PipelineStats())
    activity.consume_exposures(EXPOSURES)
    consumers, days, latency = activity.drain()
    assert consumers == []
    # The rows as the store receives them: the span counts at the end.
    assert sorted(days)[0] == (
        S,
        E,
        "A",
        DAY,
        70.0,
        20.0,
        10.0,
        4 * 10 * FAST + 2 * 10 * SLOW + 10 * FAST,
        7,
        2,
        1,
    )
    assert sorted(latency)[0] == (S, E, "A", DAY, F, 50.0, 5)
    with backend(kind, tmp_path) as config:
        store = open_store(config)
        try:
            store.write(([], [], [], [], [], [], [], days, latency, []))
            assert tallies(store) == (DAY_TALLIES, LATENCY)
            # A second flush of the same exposures adds to both (upsert), exactly.
            activity.written()
            activity.consume_exposures(EXPOSURES)
            store.write(([], [], [], [], [], [], *activity.drain(), []))
            doubled = {
                v: (tuple(2 * n for n in w), tuple(2 * n for n in s)) for v, (w, s) in DAY_TALLIES.items()
            }
            assert tallies(store) == (doubled, [(v, b, 2 * c, 2 * s) for v, b, c, s in LATENCY])
        finally:
            store.close()


def test_a_failed_write_restores_the_span_counts_with_the_weighted_ones(tmp_path) -> None:
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")), retention_days=30)
    service = StateService(config, ConsumerActivity(30, PipelineStats()))
    service.open()
    try:
        service.activity.consume_exposures(EXPOSURES)
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            db.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON experiment_latency "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        assert service.flush() is False
        store = service.store
        assert store is not None
        assert tallies(store) == ({}, [])
        service.activity.consume_exposures(EXPOSURES[:1])  # merged into the restored A row
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            db.execute("DROP TRIGGER boom")
        assert service.flush() is True
        days, latency = DAY_TALLIES.copy(), list(LATENCY)
        days["A"] = ((80.0, 20.0, 10.0), (8, 2, 1))
        latency[0] = ("A", F, 60.0, 6)
        assert tallies(store) == (days, latency)
        assert service.flush() is True  # nothing written twice
        assert tallies(store) == (days, latency)
    finally:
        service.stop()


def test_restore_merges_a_batch_back_with_both_counts() -> None:
    activity = ExperimentActivity(30, PipelineStats())
    activity.consume_exposures(EXPOSURES)
    batch = activity.drain()
    activity.consume_exposures(EXPOSURES)
    activity.restore(batch)
    _, days, latency = activity.drain()
    by_variant = {r[2]: (r[4:7], r[8:]) for r in days}
    assert by_variant == {
        v: (tuple(2 * n for n in w), tuple(2 * n for n in s)) for v, (w, s) in DAY_TALLIES.items()
    }
    assert sorted((r[2], r[4], r[5], r[6]) for r in latency) == [
        (v, b, 2 * c, 2 * s) for v, b, c, s in LATENCY
    ]


@pytest.mark.parametrize("kind", BACKENDS)
def test_migration_6_gives_version_5_rows_their_weighted_tallies_rounded_as_span_counts(
    tmp_path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with backend(kind, tmp_path) as config:
        with monkeypatch.context() as m:  # the schema as it was before version 6
            m.setattr(store_module, "MIGRATIONS", schema.MIGRATIONS[:5])
            m.setattr(store_module, "LATEST", 5)
            old = open_store(config)
            # As version 5 wrote them: weighted tallies only (an unsampled day, a sampled one
            # with a non-integer weight sum).
            old.execute(f"INSERT INTO experiment_days VALUES ('{S}', '{E}', 'A', {DAY}, 12.0, 3.0, 1.0, 0.5)")
            old.execute(f"INSERT INTO experiment_days VALUES ('{S}', '{E}', 'B', {DAY}, 41.6, 2.4, 0.0, 0.9)")
            old.execute(f"INSERT INTO experiment_latency VALUES ('{S}', '{E}', 'A', {DAY}, {F}, 12.0)")
            old.execute(f"INSERT INTO experiment_latency VALUES ('{S}', '{E}', 'B', {DAY}, {F}, 41.6)")
            old.close()
        store = open_store(config)
        try:
            versions = [v for (v,) in store.query("SELECT version FROM schema_migrations ORDER BY 1")]
            assert versions == [1, 2, 3, 4, 5, 6]
            assert tallies(store) == (
                {"A": ((12.0, 3.0, 1.0), (12, 3, 1)), "B": ((41.6, 2.4, 0.0), (42, 2, 0))},
                [("A", F, 12.0, 12), ("B", F, 41.6, 42)],
            )
            activity = ExperimentActivity(30, PipelineStats())
            activity.consume_exposures([x("A", T0), x("A", T0 + 1, "500")])
            store.write(([], [], [], [], [], [], *activity.drain(), []))
            days, latency = tallies(store)
            assert days["A"] == ((32.0, 13.0, 1.0), (14, 4, 1))
            assert latency[0] == ("A", F, 32.0, 14)
            # Rows in the version-5 shape (a tool written before version 6) count as unsampled.
            store.write(
                (
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [],
                    [(S, E, "B", DAY, 3.0, 1.0, 0.0, 0.1)],
                    [(S, E, "B", DAY, F, 3.0)],
                )
            )
            days, latency = tallies(store)
            assert days["B"] == ((44.6, 3.4, 0.0), (45, 3, 0))
            assert latency[1] == ("B", F, 44.6, 45)
        finally:
            store.close()
