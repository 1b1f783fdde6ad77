"""The store on its own: migrations, upsert semantics, retention, plan lookups, bad input."""

from __future__ import annotations

import sqlite3
import time

import pytest
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.plans import PlanLookup, PlanLookupError
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.schema import LATEST, MIGRATIONS
from apiusage.processor.state.service import StateService
from apiusage.processor.state.store import StoreError, open_store
from apiusage.processor.telemetry import PipelineStats

from tests.support.postgres import postgres_server


def sqlite_config(tmp_path) -> StateConfig:
    return StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")))


def test_sqlite_runs_in_wal_mode_and_records_migrations(tmp_path) -> None:
    open_store(sqlite_config(tmp_path)).close()
    store = open_store(sqlite_config(tmp_path))  # second start: nothing left to migrate
    assert store.query("PRAGMA journal_mode") == [("wal",)]
    assert [v for (v,) in store.query("SELECT version FROM schema_migrations ORDER BY version")] == [
        v for v, _ in MIGRATIONS]
    store.close()


def test_a_newer_schema_is_refused_with_advice(tmp_path) -> None:
    open_store(sqlite_config(tmp_path)).close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    with pytest.raises(StoreError) as info:
        open_store(sqlite_config(tmp_path))
    assert str(info.value) == (f"sqlite:{tmp_path / 'state.db'} has schema version 99, newer than "
                               f"this apiusage understands ({LATEST}); upgrade apiusage")


def test_unopenable_sqlite_path(tmp_path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError) as info:
        open_store(StateConfig(sqlite=SqliteState(path=str(tmp_path / "dir"))))
    assert str(info.value).startswith(f"cannot open the SQLite state database {tmp_path / 'dir'}")


def test_unreachable_postgres_says_so() -> None:
    with pytest.raises(StoreError) as info:
        open_store(StateConfig(postgres=PostgresState(dsn="postgresql://nobody@127.0.0.1:1/x")))
    assert str(info.value).startswith("cannot connect to the PostgreSQL state database: ")


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_upserts_combine_batches_like_one(tmp_path, backend: str) -> None:
    with postgres_server() if backend == "postgres" else _nothing() as pg:
        config = (StateConfig(postgres=PostgresState(dsn=pg.dsn)) if backend == "postgres"
                  else sqlite_config(tmp_path))
        store = open_store(config)
        day = 20_000
        t = day * DAY_MS
        store.write(([("svc", "c1", t + 50, None, t + 50, "free", "sdk", "1.0")],
                     [(day, "svc", "c1", "GET", "/a", "", "sdk", "1.0", 2.0, 1.0, t + 50)],
                     [("svc", "GET", "/a", 0, t + 50, t + 50)]))
        # an earlier success arriving late, then a newer call on another plan and client
        store.write(([("svc", "c1", t + 10, t + 20, t + 90, "pro", "sdk", "2.0")],
                     [(day, "svc", "c1", "GET", "/a", "", "sdk", "1.0", 3.0, 0.0, t + 40)],
                     [("svc", "GET", "/a", 1, t + 10, t + 90)]))
        assert store.query("SELECT * FROM consumers") == [
            ("svc", "c1", t + 10, t + 20, t + 90, "free", "pro", "sdk", "2.0")]
        assert store.query("SELECT calls, errors, last_call FROM activity") == [(5.0, 1.0, t + 50)]
        assert store.query("SELECT deprecated, first_seen, last_seen FROM endpoints") == [
            (1, t + 10, t + 90)]
        store.close()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_retention_deletes_old_daily_activity_only(tmp_path) -> None:
    today = int(time.time() * 1000) // DAY_MS
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db")), retention_days=40)
    service = StateService(config, ConsumerActivity(40, PipelineStats()))
    service.open()
    rows = [(today - d, "svc", "c", "GET", "/a", "", "x", "1", 1.0, 0.0, (today - d) * DAY_MS)
            for d in (1, 39, 40, 41, 100)]
    service.store.write(([("svc", "c", 0, None, 0, "p", "x", "1")], rows, []))
    service.apply_retention()
    assert sorted(today - d for (d,) in service.store.query("SELECT day FROM activity")) == [1, 39, 40]
    assert service.store.query("SELECT COUNT(*) FROM consumers") == [(1,)]
    service.stop()


def test_activity_older_than_retention_is_dropped_and_counted() -> None:
    stats = PipelineStats()
    activity = ConsumerActivity(40, stats)
    from tests.processor.derive.test_request_metrics import req

    old = req()._replace(end_time_ns=(int(time.time()) - 50 * 86400) * 10**9)
    recent = req()._replace(end_time_ns=int(time.time()) * 10**9)
    activity.consume([old, recent])
    consumers, rows, endpoints = activity.drain()
    assert (len(consumers), len(rows), len(endpoints)) == (1, 1, 1)
    assert stats.data_quality_issues["beyond_retention"] == 1


def test_plan_lookup_sources(tmp_path) -> None:
    csv = tmp_path / "plans.csv"
    csv.write_text("consumer_id,plan_tier,account\nc1,pro,Acme\nc2,free,\n,x,\n")
    lookup = PlanLookup(file=str(csv))
    assert lookup.load() == 2
    assert (lookup.plans, lookup.accounts) == ({"c1": "pro", "c2": "free"}, {"c1": "Acme"})
    yml = tmp_path / "plans.yaml"
    yml.write_text("c1: pro\nc2: {plan_tier: enterprise, account: Big Co}\n")
    lookup = PlanLookup(file=str(yml))
    lookup.load()
    assert (lookup.plans, lookup.accounts) == ({"c1": "pro", "c2": "enterprise"}, {"c2": "Big Co"})
    lookup = PlanLookup(sql="SELECT id, plan, account FROM accounts")
    assert lookup.load(lambda sql: [("c9", "team", None)]) == 1
    assert lookup.plans == {"c9": "team"}


def test_plan_lookup_errors_name_the_source(tmp_path) -> None:
    bad = tmp_path / "plans.csv"
    bad.write_text("id,plan\nc1,pro\n")
    with pytest.raises(PlanLookupError) as info:
        PlanLookup(file=str(bad)).load()
    assert str(info.value) == (f"plan lookup file {bad}: the first line must be the header "
                               "consumer_id,plan_tier[,account]")

    def failing(sql: str) -> list:
        raise StoreError("cannot read sqlite:x: no such table: accounts")

    with pytest.raises(PlanLookupError) as info:
        PlanLookup(sql="SELECT * FROM accounts").load(failing)
    assert str(info.value) == ("processors.plan_lookup.sql failed: cannot read sqlite:x: "
                               "no such table: accounts")
