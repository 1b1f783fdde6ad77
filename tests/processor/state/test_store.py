"""The store on its own: migrations, upsert semantics, retention, plan lookups, bad input."""

from __future__ import annotations

import sqlite3
import time

import pytest
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.plans import PlanLookup, PlanLookupError
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.schema import LATEST
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
    assert [v for (v,) in store.query("SELECT version FROM schema_migrations")] == list(range(1, LATEST + 1))
    store.close()


def test_a_newer_schema_is_refused_with_advice(tmp_path) -> None:
    open_store(sqlite_config(tmp_path)).close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("INSERT INTO schema_migrations VALUES (99, 0)")
    with pytest.raises(StoreError) as info:
        open_store(sqlite_config(tmp_path))
    assert str(info.value) == (
        f"sqlite:{tmp_path / 'state.db'} has schema version 99, newer than "
        f"this apiusage understands ({LATEST}); upgrade apiusage"
    )


def test_unopenable_sqlite_path(tmp_path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(StoreError) as info:
        open_store(StateConfig(sqlite=SqliteState(path=str(tmp_path / "dir"))))
    assert str(info.value).startswith(f"cannot open the SQLite state database {tmp_path / 'dir'}")


def test_unreachable_postgres_says_so() -> None:
    with pytest.raises(StoreError) as info:
        open_store(StateConfig(postgres=PostgresState(dsn="postgresql://nobody@127.0.0.1:1/x")))
    assert str(info.value).startswith("cannot connect to the PostgreSQL state database: ")


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.live)])
def test_upserts_combine_batches_like_one(tmp_path, backend: str) -> None:
    with postgres_server() if backend == "postgres" else _nothing() as pg:
        config = (
            StateConfig(postgres=PostgresState(dsn=pg.dsn))
            if backend == "postgres"
            else sqlite_config(tmp_path)
        )
        store = open_store(config)
        day = 20_000
        t = day * DAY_MS
        store.write(
            (
                [("svc", "c1", t + 50, None, t + 50, "free", "free", "sdk", "1.0")],
                [
                    (day, "svc", "c1", "GET", "/a", "", "sdk", "1.0", 2.0, 1.0, t + 50),
                    (day, "svc", "c1", "GET", "/a", "f", "sdk", "1.0", 1.0, 0.0, t + 30),
                ],
                [("svc", "GET", "/a", 0, t + 50, t + 50)],
            )
        )
        # an earlier success arriving late (its first plan tier is not taken: the counter's label
        # never moves), then newer calls the next day on another plan and client
        store.write(
            (
                [("svc", "c1", t + 10, t + 20, t + DAY_MS + 90, "team", "pro", "sdk", "2.0")],
                [
                    (day, "svc", "c1", "GET", "/a", "", "sdk", "1.0", 3.0, 0.0, t + 40),
                    (day + 1, "svc", "c1", "GET", "/a", "f", "sdk", "2.0", 4.0, 4.0, t + DAY_MS + 90),
                ],
                [("svc", "GET", "/a", 1, t + 10, t + DAY_MS + 90)],
            )
        )
        assert store.query("SELECT * FROM consumers") == [
            ("svc", "c1", t + 10, t + 20, t + DAY_MS + 90, "free", "pro", "sdk", "2.0")
        ]
        assert store.query("SELECT * FROM endpoint_days ORDER BY day") == [
            ("svc", "GET", "/a", day, "c1", 6.0, 1.0, t + 50),
            ("svc", "GET", "/a", day + 1, "c1", 4.0, 4.0, t + DAY_MS + 90),
        ]
        assert store.query("SELECT * FROM consumer_days ORDER BY day") == [
            ("svc", "c1", day, 6.0, 1.0),
            ("svc", "c1", day + 1, 4.0, 4.0),
        ]
        assert store.query("SELECT * FROM consumer_endpoints") == [
            ("svc", "GET", "/a", "c1", day, t + DAY_MS + 90, 10.0, 5.0)
        ]
        assert store.query("SELECT * FROM consumer_features") == [("svc", "f", "c1", t + DAY_MS + 90, 5.0)]
        assert store.query("SELECT * FROM consumer_clients ORDER BY client_version") == [
            ("svc", "sdk", "1.0", "c1", t + 50, 6.0),
            ("svc", "sdk", "2.0", "c1", t + DAY_MS + 90, 4.0),
        ]
        assert store.query("SELECT deprecated, first_seen, last_seen FROM endpoints") == [
            (1, t + 10, t + DAY_MS + 90)
        ]
        store.close()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _tables(store) -> dict[str, int]:
    return {
        t: store.query(f"SELECT COUNT(*) FROM {t}")[0][0]
        for t in (
            "consumers",
            "endpoint_days",
            "consumer_days",
            "consumer_endpoints",
            "consumer_features",
            "consumer_clients",
            "endpoints",
        )
    }


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.live)])
def test_retention_prunes_every_table_and_keeps_the_counters(tmp_path, backend: str) -> None:
    from apiusage.processor.state.report import build_report

    today = int(time.time() * 1000) // DAY_MS
    with postgres_server() if backend == "postgres" else _nothing() as pg:
        config = StateConfig(
            postgres=PostgresState(dsn=pg.dsn) if pg else None,
            sqlite=None if pg else SqliteState(path=str(tmp_path / "s.db")),
            retention_days=40,
        )
        service = StateService(config, ConsumerActivity(40, PipelineStats()))
        service.open()
        # "old" was last seen 41 days ago and succeeded 90 s after its first call; "gone" never
        # succeeded; "kept" calls on days 1, 39, 40, 41 and 100 ago (its early days are pruned).
        consumers, rows = [], []
        for name, days, success in (
            ("old", (41, 60), 90_000),
            ("gone", (45,), None),
            ("kept", (1, 39, 40, 41, 100), 1_000),
        ):
            first, last = (today - max(days)) * DAY_MS, (today - min(days)) * DAY_MS
            consumers.append(
                (
                    "svc",
                    name,
                    first,
                    None if success is None else first + success,
                    last,
                    "free",
                    "pro",
                    "x",
                    "1",
                )
            )
            rows += [
                (today - d, "svc", name, "GET", f"/{name}", "f", "x", "1", 1.0, 0.0, (today - d) * DAY_MS)
                for d in days
            ]
        endpoints = [
            ("svc", "GET", f"/{n}", 0, 0, (today - d) * DAY_MS)
            for n, d in (("old", 41), ("gone", 45), ("kept", 1))
        ]
        service.store.write((consumers, rows, endpoints))
        before = build_report(service.store, today * DAY_MS)
        service.apply_retention()
        after = build_report(service.store, today * DAY_MS)
        service.apply_retention()  # again: nothing more to retire, nothing counted twice
        again = build_report(service.store, today * DAY_MS)
        assert _tables(service.store) == {
            "consumers": 1,
            "endpoint_days": 3,
            "consumer_days": 3,
            "consumer_endpoints": 1,
            "consumer_features": 1,
            "consumer_clients": 1,
            "endpoints": 1,
        }
        assert sorted(today - d for (d,) in service.store.query("SELECT day FROM endpoint_days")) == [
            1,
            39,
            40,
        ]
        assert service.store.query("SELECT consumer_id FROM consumers") == [("kept",)]
        # Counters never go down: the retired consumers stay in the new-consumer count and the
        # onboarding histogram (old: 90 s, in the 300 s bucket; gone: never succeeded).
        assert before.new == after.new == again.new == {("svc", "free"): 3}
        assert (
            before.ttfs
            == after.ttfs
            == again.ttfs
            == {("svc", "free"): ([1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], 91.0, 2)}
        )
        service.stop()


def test_a_new_consumer_takes_the_plan_of_its_earliest_request() -> None:
    from tests.processor.derive.test_request_metrics import req

    activity = ConsumerActivity(40, PipelineStats())
    now = int(time.time()) * 10**9
    # One batch: the later `pro` request arrives first, the earlier `free` one after it.
    activity.consume(
        [req(plan="pro")._replace(end_time_ns=now), req(plan="free")._replace(end_time_ns=now - 10**9)]
    )
    consumers, *_ = activity.drain()
    assert [(c[5], c[6]) for c in consumers] == [("free", "pro")]  # first plan, current plan


def test_activity_older_than_retention_is_dropped_and_counted() -> None:
    stats = PipelineStats()
    activity = ConsumerActivity(40, stats)
    from tests.processor.derive.test_request_metrics import req

    old = req()._replace(end_time_ns=(int(time.time()) - 50 * 86400) * 10**9)
    recent = req()._replace(end_time_ns=int(time.time()) * 10**9)
    activity.consume([old, recent])
    consumers, rows, endpoints, *_ = activity.drain()
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
    assert str(info.value) == (
        f"plan lookup file {bad}: the first line must be the header consumer_id,plan_tier[,account]"
    )

    def failing(sql: str) -> list:
        raise StoreError("cannot read sqlite:x: no such table: accounts")

    with pytest.raises(PlanLookupError) as info:
        PlanLookup(sql="SELECT * FROM accounts").load(failing)
    assert str(info.value) == (
        "processors.plan_lookup.sql failed: cannot read sqlite:x: no such table: accounts"
    )


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.live)])
def test_a_version_1_store_with_data_migrates_to_the_same_answers(tmp_path, backend: str) -> None:
    """Users have data: the wide daily `activity` table of version 1 becomes the model's tables."""
    from apiusage.processor.state.report import build_report
    from apiusage.processor.state.schema import MIGRATIONS

    now = (int(time.time() * 1000) // DAY_MS) * DAY_MS + 43_200_000  # noon today
    today = now // DAY_MS
    v1 = [
        ("svc", "c1", now - 5 * DAY_MS, now - 5 * DAY_MS, now, "free", "pro", "sdk", "2"),
        ("svc", "c2", now - 10 * DAY_MS, None, now - 10 * DAY_MS, "free", "free", "sdk", "1"),
    ]
    activity = [  # c1 moved from sdk 1 to 2 on the same day: two rows, one endpoint day
        (today, "svc", "c1", "GET", "/a", "f", "sdk", "1", 1.0, 0.0, now - 100),
        (today, "svc", "c1", "GET", "/a", "f", "sdk", "2", 2.0, 1.0, now),
        (today - 5, "svc", "c1", "GET", "/b", "", "sdk", "1", 4.0, 0.0, now - 5 * DAY_MS),
        (today - 10, "svc", "c2", "GET", "/a", "g", "sdk", "1", 8.0, 8.0, now - 10 * DAY_MS),
    ]
    with postgres_server() if backend == "postgres" else _nothing() as pg:
        if pg:
            import psycopg

            db = psycopg.connect(pg.dsn, autocommit=True)
            mark = "%s"
        else:
            db = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
            mark = "?"
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        for statement in MIGRATIONS[0][1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        for table, rows in (("consumers", v1), ("activity", activity)):
            for row in rows:
                db.execute(f"INSERT INTO {table} VALUES ({', '.join([mark] * len(row))})", row)
        db.close()
        config = (
            StateConfig(postgres=PostgresState(dsn=pg.dsn))
            if pg
            else StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db")))
        )
        store = open_store(config)
        try:
            assert store.query("SELECT * FROM consumer_endpoints ORDER BY route, consumer_id") == [
                ("svc", "GET", "/a", "c1", today, now, 3.0, 1.0),
                ("svc", "GET", "/a", "c2", today - 10, now - 10 * DAY_MS, 8.0, 8.0),
                ("svc", "GET", "/b", "c1", today - 5, now - 5 * DAY_MS, 4.0, 0.0),
            ]
            assert store.query("SELECT * FROM endpoint_days ORDER BY day, route") == [
                ("svc", "GET", "/a", today - 10, "c2", 8.0, 8.0, now - 10 * DAY_MS),
                ("svc", "GET", "/b", today - 5, "c1", 4.0, 0.0, now - 5 * DAY_MS),
                ("svc", "GET", "/a", today, "c1", 3.0, 1.0, now),
            ]
            assert store.query("SELECT * FROM consumer_days ORDER BY day") == [
                ("svc", "c2", today - 10, 8.0, 8.0),
                ("svc", "c1", today - 5, 4.0, 0.0),
                ("svc", "c1", today, 3.0, 1.0),
            ]
            assert store.query("SELECT * FROM consumer_clients ORDER BY consumer_id, client_version") == [
                ("svc", "sdk", "1", "c1", now - 100, 5.0),
                ("svc", "sdk", "2", "c1", now, 2.0),
                ("svc", "sdk", "1", "c2", now - 10 * DAY_MS, 8.0),
            ]
            assert store.query("SELECT * FROM consumer_features ORDER BY feature") == [
                ("svc", "f", "c1", now, 3.0),
                ("svc", "g", "c2", now - 10 * DAY_MS, 8.0),
            ]
            tables = {
                name
                for (name,) in store.query(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                    if pg
                    else "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
            }
            assert "activity" not in tables
            report = build_report(store, now)
            assert report.endpoint_consumers == {
                ("svc", "GET", "/a", "1d"): 1,
                ("svc", "GET", "/a", "7d"): 1,
                ("svc", "GET", "/a", "30d"): 2,
                ("svc", "GET", "/b", "7d"): 1,
                ("svc", "GET", "/b", "30d"): 1,
            }
            assert report.client_versions == {
                ("svc", "sdk", "1", "1d"): 1,
                ("svc", "sdk", "1", "7d"): 1,
                ("svc", "sdk", "1", "30d"): 2,
                ("svc", "sdk", "2", "1d"): 1,
                ("svc", "sdk", "2", "7d"): 1,
                ("svc", "sdk", "2", "30d"): 1,
            }
            assert report.active == {
                ("svc", "pro", "1d"): 1,
                ("svc", "pro", "7d"): 1,
                ("svc", "pro", "30d"): 1,
                ("svc", "free", "30d"): 1,
            }
            assert report.feature_adoption == {
                ("svc", "f", "pro", "1d"): 1.0,
                ("svc", "f", "pro", "7d"): 1.0,
                ("svc", "f", "pro", "30d"): 1.0,
                ("svc", "g", "free", "30d"): 1.0,
            }
            assert report.new == {("svc", "free"): 2}
        finally:
            store.close()


def test_every_join_of_a_refresh_searches_by_key_whatever_the_statistics(tmp_path) -> None:
    """SQLite plans joins from its statistics; with statistics for `consumers` only (what one
    PRAGMA optimize left on a store of 20,000 consumers) it scanned the pair table once per
    consumer, and a refresh took minutes. Every join must scan one side and search the other."""
    from apiusage.instrumentation.catalog import load_catalog
    from apiusage.processor.state.report import build_report

    from tests.support.state_faults import seed_history

    db = tmp_path / "s.db"
    seed_history(db, 20_000, days=3, endpoints=3)
    (tmp_path / "catalog.yaml").write_text(
        "services:\n  history-api:\n    endpoints:\n"
        "      - {method: GET, route: /r1, deprecated: 2026-01-01, replacement: GET /r2}\n"
    )
    with sqlite3.connect(db) as conn:
        conn.execute("ANALYZE consumers")
    store = open_store(StateConfig(sqlite=SqliteState(path=str(db))))
    joins: list[str] = []
    real = store.query

    def query(sql: str, params=()) -> list[tuple]:
        if " JOIN " in sql:  # checked before it runs: the wrong plan takes over a minute here
            joins.append(sql)
            plan = [row[3] for row in real(f"EXPLAIN QUERY PLAN {sql}", params)]
            scans = [
                step
                for step in plan
                if step.startswith("SCAN ") and "(subquery" not in step and step not in ("SCAN d", "SCAN dep")
            ]
            partial = [
                step
                for step in plan
                if step.startswith("SEARCH ") and "consumer_id=?" not in step and "day>?" not in step
            ]
            assert len(scans) <= 1 and not partial, (sql, plan)
        return real(sql, params)

    store.query = query  # type: ignore[method-assign]
    report = build_report(store, int(time.time() * 1000), load_catalog(str(tmp_path / "catalog.yaml")))
    assert report.deprecated_consumers[("history-api", "GET", "/r1", "30d")] == 1_200  # 3 of 50 routes
    assert len(joins) == 6, joins  # adoption, migration in 3 windows, cohorts, churn risk
    store.close()


def test_a_hand_built_catalog_route_that_does_not_parse_matches_no_observed_route(tmp_path) -> None:
    """parse_catalog refuses such a route, a Catalog built in code may hold one: its endpoint is
    listed as written, counted unused, and its replacement kept as written (typing route_key's
    None must not have changed what the report says)."""
    from apiusage.conventions.catalog import Catalog, Endpoint, ServiceCatalog
    from apiusage.processor.state.report import ResolvedEndpoint, build_report, deprecated_endpoints

    now = int(time.time() * 1000)
    store = open_store(sqlite_config(tmp_path))
    store.execute(
        "INSERT INTO endpoints (service, method, route, deprecated, first_seen, last_seen)"
        " VALUES (?, ?, ?, 0, ?, ?)",
        ("svc", "GET", "/v1/a", now, now),
    )
    catalog = Catalog(
        (
            ServiceCatalog(
                "svc",
                (
                    Endpoint("GET", "/v1/a", deprecated=True, replacement="GET /v2/{x"),
                    Endpoint("GET", "/v1/{b", deprecated=True, replacement="GET /v1/a"),
                    Endpoint("*", "/v1/{c", deprecated=True),
                ),
            ),
        )
    )
    try:
        assert deprecated_endpoints(store, catalog) == [
            ResolvedEndpoint("svc", "GET", "/v1/a", None, ("GET", "/v2/{x")),
            ResolvedEndpoint("svc", "GET", "/v1/{b", None, ("GET", "/v1/a")),
        ]
        report = build_report(store, now, catalog)
        assert report.unused == {("svc",): 2}  # /v1/a was called just now
        assert report.last_called == {("svc", "GET", "/v1/a"): now / 1000}
    finally:
        store.close()
