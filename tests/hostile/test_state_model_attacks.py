"""Attacks on the incremental state model (schema version 2): retention against the windows it
feeds, replicas flushing and pruning one PostgreSQL at the same time, hostile values through the
fan-out and the published report."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.state import snapshot
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.state.report import ConsumerReport, build_report
from apiusage.processor.state.service import StateService
from apiusage.processor.state.store import DAY_MS, StoreError, open_store
from apiusage.processor.telemetry import PipelineStats

from tests.processor.state.test_model_exact import ApiRequest, expected
from tests.support.postgres import postgres_server

pytestmark = pytest.mark.slow


def _request(
    consumer: str, at_ms: int, route: str = "/v1/orders", plan: str = "free", service: str = "orders-api"
) -> ApiRequest:
    return ApiRequest(
        service,
        "GET",
        route,
        "200",
        plan,
        "false",
        "sdk",
        "1.0",
        None,
        "export",
        consumer,
        0.01,
        1.0,
        at_ms * 1_000_000,
        b"t",
        b"s",
    )


def _write(store, requests: list[ApiRequest]) -> None:
    """Written as history that was recent when it came (a long-retention aggregator)."""
    activity = ConsumerActivity(retention_days=400, stats=PipelineStats())
    activity.consume(requests)
    store.write(activity.drain())


# --- retention against the 12-week cohorts -------------------------------------------------------


def test_cohorts_older_than_retention_are_not_published_with_only_their_survivors(tmp_path) -> None:
    """retention_days may be 35, cohorts look back 12 weeks: once retention deletes the consumers
    of an old cohort who left, the survivors alone made its retention look like 100%."""
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    requests = [
        _request("stays", (today - 70) * DAY_MS + 1000),
        _request("stays", now_ms - DAY_MS),
        _request("left", (today - 70) * DAY_MS + 2000),
        _request("fresh", (today - 2) * DAY_MS + 3000),
        _request("fresh", now_ms - 1000),
    ]
    truth = expected(sorted(requests, key=lambda r: r.end_time_ns), now_ms)["cohorts"]
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db")), retention_days=35)
    service = StateService(config, ConsumerActivity(35, PipelineStats()))
    service.open()
    try:
        _write(service.store, requests)
        fresh_week = _iso((today - 2 + 3) // 7)
        for retention_ran in (False, True):
            if retention_ran:
                service.apply_retention()  # "left" (last seen 70 days ago) is retired
            service.refresh(now_ms)
            published = service.report.cohorts
            wrong = {k: (v, truth.get(k)) for k, v in published.items() if truth.get(k) != v}
            assert wrong == {}, "cohort ratios published from the survivors of retention"
            # The cohorts after the cutoff stay, exact.
            assert (
                {k: v for k, v in published.items() if k[1] >= fresh_week}
                == {k: v for k, v in truth.items() if k[1] >= fresh_week}
                != {}
            )
    finally:
        service.stop()


def _iso(week: int) -> str:
    from apiusage.processor.state.report import week_start

    return week_start(week).isoformat()


# --- two replicas on one PostgreSQL --------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_dsn() -> Iterator[str]:
    with postgres_server() as pg:
        yield pg.dsn


_databases = iter(range(1, 1000))


@pytest.fixture
def dsn(pg_dsn: str) -> str:
    name = f"attack{next(_databases)}"
    with psycopg.connect(pg_dsn, autocommit=True, connect_timeout=10) as db:
        db.execute(f"CREATE DATABASE {name}")
    return pg_dsn.rsplit("/", 1)[0] + f"/{name}"


def test_two_replicas_flush_and_prune_overlapping_consumers_at_once(dsn: str) -> None:
    """Replica flushes of the same consumers and pairs and both replicas' retention run at the
    same time: no write fails (deadlock, duplicate key), no increment is lost, every retired
    consumer is tallied once."""
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    config = StateConfig(postgres=PostgresState(dsn=dsn), retention_days=40)
    setup = open_store(config)
    # 150 consumers last seen 50 days ago: the retention of both replicas deletes them.
    _write(setup, [_request(f"old{i:03}", (today - 50) * DAY_MS + i, route=f"/r{i % 7}") for i in range(150)])
    rounds, consumers = 12, 60
    errors: list[str] = []
    start = threading.Barrier(4)

    def flusher(replica: int) -> None:
        store = open_store(config)
        start.wait(timeout=30)
        try:
            for n in range(rounds):
                # Both replicas: the same consumers, endpoints and day, in opposite orders.
                ids = range(consumers) if replica else reversed(range(consumers))
                _write(
                    store,
                    [
                        _request(
                            f"c{i:03}",
                            now_ms - 60_000 + n * 100 + replica,
                            route=f"/r{(i + n) % 7}",
                            plan="pro",
                        )
                        for i in ids
                    ],
                )
        except StoreError as exc:
            errors.append(f"flush {replica}: {exc}")
        finally:
            store.close()

    def pruner() -> None:
        store = open_store(config)
        start.wait(timeout=30)
        try:
            for _ in range(4):
                store.prune(today - 40)
        except StoreError as exc:
            errors.append(f"prune: {exc}")
        finally:
            store.close()

    threads = [threading.Thread(target=flusher, args=(r,)) for r in (0, 1)]
    threads += [threading.Thread(target=pruner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a flush or a prune never ended"
    assert errors == []
    q = setup.query
    assert q("SELECT COUNT(*), SUM(consumers) FROM retired_consumers") == [(1, 150)]
    assert q("SELECT COUNT(*) FROM consumers") == [(consumers,)]
    total = 2.0 * rounds * consumers
    for table in (
        "consumer_endpoints",
        "consumer_features",
        "consumer_clients",
        "consumer_days",
        "consumer_weeks",
        "endpoint_days",
    ):
        assert q(f"SELECT SUM(calls) FROM {table}") == [(total,)], table
    report = build_report(setup, now_ms)
    assert report.new == {("orders-api", "free"): 150, ("orders-api", "pro"): consumers}
    assert report.active == {("orders-api", "pro", w): consumers for w in ("1d", "7d", "30d")}
    assert report.endpoint_consumers == {
        ("orders-api", "GET", f"/r{r}", w): consumers for r in range(7) for w in ("1d", "7d", "30d")
    }
    setup.close()


def test_retention_racing_returning_consumers_on_two_replicas(dsn: str) -> None:
    """Consumers last seen before the cutoff come back while two replicas prune: each is either
    kept with its history (the flush came first) or retired once and stored anew (the prune
    came first); never both, never lost, and no write fails."""
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    config = StateConfig(postgres=PostgresState(dsn=dsn), retention_days=40)
    setup = open_store(config)
    n = 200
    old_first = (today - 50) * DAY_MS
    _write(setup, [_request(f"r{i:03}", old_first + i) for i in range(n)])
    errors: list[str] = []
    start = threading.Barrier(4)
    flushed = threading.Event()

    def flusher(replica: int) -> None:
        store = open_store(config)
        start.wait(timeout=30)
        try:
            ids = list(range(n)) if replica else list(reversed(range(n)))
            for chunk in range(0, n, 4):
                _write(
                    store,
                    [
                        _request(f"r{i:03}", now_ms - 1000 + replica, plan="pro")
                        for i in ids[chunk : chunk + 4]
                    ],
                )
        except StoreError as exc:
            errors.append(f"flush {replica}: {exc}")
        finally:
            store.close()

    def pruner() -> None:
        store = open_store(config)
        start.wait(timeout=30)
        try:
            time.sleep(0.05)  # some consumers come back before the first prune, most during it
            while not flushed.is_set():
                store.prune(today - 40)
        except StoreError as exc:
            errors.append(f"prune: {exc}")
        finally:
            store.close()

    threads = [threading.Thread(target=flusher, args=(r,)) for r in (0, 1)]
    threads += [threading.Thread(target=pruner) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads[:2]:
        t.join(timeout=120)
    flushed.set()
    for t in threads[2:]:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a flush or a prune never ended"
    assert errors == []
    kept = setup.query("SELECT COUNT(*) FROM consumers WHERE first_seen < ?", (today * DAY_MS,))[0][0]
    retired = setup.query("SELECT COALESCE(SUM(consumers), 0) FROM retired_consumers")[0][0]
    assert setup.query("SELECT COUNT(*) FROM consumers") == [(n,)]
    assert kept + retired == n
    setup.close()


# --- hostile values ------------------------------------------------------------------------------

HOSTILE = [
    "tab\there",
    "nul\x00byte",
    "bell\x07",
    "\u202eright-to-left",
    "emoji-\U0001f680" * 40,
    "x" * 10_000,
    "lone-\ud800-surrogate",
    "__other__",
    "",
    "quote\"'\\",
    "\n",
]


def test_the_published_report_round_trips_hostile_label_values() -> None:
    report = ConsumerReport(generated_ms=1)
    for i, value in enumerate(HOSTILE):
        report.active[value, "pro", "1d"] = i
        report.endpoint_consumers["svc", "GET", value, "7d"] = i + 1
        report.feature_adoption["svc", value, "free", "30d"] = i / 3
        report.ttfs[value, "free"] = ([i] * 11, i * 0.1, i)
        report.cohorts["svc", value, str(i)] = 1 / (i + 1)
        report.folded["api_x", value] = (i, i * 2)
    back = snapshot.loads(snapshot.dumps(report))
    assert back == report


# --- a full disk in the middle of the fan-out ----------------------------------------------------


def _sums(store) -> dict[str, tuple]:
    return {
        table: tuple(store.query(f"SELECT COUNT(*), SUM(calls) FROM {table}")[0])
        for table in (
            "consumer_endpoints",
            "consumer_features",
            "consumer_clients",
            "consumer_days",
            "consumer_weeks",
            "endpoint_days",
        )
    } | {"consumers": tuple(store.query("SELECT COUNT(*), MAX(last_seen) FROM consumers")[0])}


def test_a_full_disk_during_the_fan_out_writes_nothing_and_the_rows_are_retried(tmp_path) -> None:
    now_ms = int(time.time() * 1000)
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db")))
    activity = ConsumerActivity(400, PipelineStats())
    service = StateService(config, activity)
    service.open()
    try:
        activity.consume([_request(f"a{i}", now_ms - 5000 - i) for i in range(10)])
        assert service.flush()
        before = _sums(service.store)
        # 3,000 consumers on 40 routes: the fan-out fills the few pages left part-way through.
        big = [
            _request(f"b{i:05}", now_ms - 4000 + i % 1000, route=f"/route/{i % 40}/" + "p" * 60)
            for i in range(3000)
        ]
        activity.consume(big)
        pending = activity.pending()
        ((pages,),) = service.store.query("PRAGMA page_count")
        # Room for the consumer rows and three of the six pair tables (measured: +260 pages fails
        # in consumer_endpoints, +400 fits): the failure comes after half the fan-out ran.
        service.store.query(f"PRAGMA max_page_count = {pages + 260}")
        statements: list[str] = []
        service.store._db.set_trace_callback(statements.append)
        assert not service.flush()  # SQLITE_FULL: the flush fails
        service.store._db.set_trace_callback(None)
        assert [q.split()[2] for q in statements if q.lstrip().startswith("INSERT INTO")][-3:] == [
            "consumer_days",
            "consumer_weeks",
            "consumer_endpoints",
        ]
        assert service.store.query("SELECT COUNT(*) FROM staged_activity") == [(0,)]
        assert _sums(service.store) == before  # nothing half-written
        assert activity.pending() == pending  # every row kept for the retry
        service.store.query("PRAGMA max_page_count = 1073741823")  # the disk has room again
        assert service.flush()
        report = build_report(service.store, now_ms)
        assert report.new == {("orders-api", "free"): 3010}
        assert report.endpoint_consumers[("orders-api", "GET", "/route/7/" + "p" * 60, "1d")] == 75
        assert _sums(service.store)["consumer_endpoints"] == (3010, 3010.0)
    finally:
        service.stop()


# --- kill -9 in the middle of the version 2 upgrade ----------------------------------------------


def _seed_version_1(path: str, consumers: int, days: int, today: int) -> None:
    """A version 1 store: `consumers` consumers calling one of 20 routes every day for `days` days."""
    from apiusage.processor.state.schema import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)")
        db.execute("BEGIN")
        for statement in MIGRATIONS[0][1]:
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (1, 0)")
        n = "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?)"
        db.execute(
            f"{n} INSERT INTO consumers SELECT 'svc', printf('c%06d', i), ?, NULL, ?, 'free', "
            "'pro', 'sdk', '1' FROM n",
            (consumers, (today - days + 1) * DAY_MS, today * DAY_MS),
        )
        db.execute(
            f"{n}, d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j + 1 < ?) "
            "INSERT INTO activity SELECT ? - j, 'svc', printf('c%06d', i), 'GET', "
            "'/r' || ((i + j) % 20), 'f' || (i % 3), 'sdk', '1', 2.0, 1.0, (? - j) * ? FROM n, d",
            (consumers, days, today, today, DAY_MS),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()


def test_kill_9_during_the_version_2_upgrade_then_a_restart_migrates_once_exactly(tmp_path) -> None:
    path = str(tmp_path / "v1.db")
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    consumers, days = 6000, 30
    _seed_version_1(path, consumers, days, today)
    code = (
        "import sys; from apiusage.processor.config import SqliteState, StateConfig; "
        "from apiusage.processor.state.store import open_store; "
        "open_store(StateConfig(sqlite=SqliteState(path=sys.argv[1]))).close()"
    )
    upgrade = subprocess.Popen([sys.executable, "-c", code, path])
    try:
        deadline = time.monotonic() + 60
        # The upgrade runs in one transaction; its pages spill into the WAL as it goes.
        while not (os.path.exists(path + "-wal") and os.path.getsize(path + "-wal") > 4 << 20):
            assert upgrade.poll() is None, "the upgrade ended before it could be killed"
            assert time.monotonic() < deadline, "the upgrade wrote nothing within 60 s"
            time.sleep(0.01)
        os.kill(upgrade.pid, signal.SIGKILL)
    finally:
        upgrade.wait(timeout=30)
    assert upgrade.returncode == -signal.SIGKILL
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert db.execute("SELECT COUNT(*) FROM activity").fetchone() == (consumers * days,)
    store = open_store(StateConfig(sqlite=SqliteState(path=path)))
    try:
        assert [v for (v,) in store.query("SELECT version FROM schema_migrations")] == [1, 2, 3, 4, 5, 6]
        assert store.query("SELECT COUNT(*), SUM(calls), SUM(errors) FROM consumer_days") == [
            (consumers * days, 2.0 * consumers * days, 1.0 * consumers * days)
        ]
        # Each consumer called 20 routes over 30 days (route = (i + j) % 20): 20 pairs each.
        assert store.query("SELECT COUNT(*), SUM(calls) FROM consumer_endpoints") == [
            (consumers * 20, 2.0 * consumers * days)
        ]
        assert store.query("SELECT COUNT(*) FROM consumer_features") == [(consumers,)]
        report = build_report(store, now_ms)
        assert report.new == {("svc", "free"): consumers}
        assert report.active == {("svc", "pro", w): consumers for w in ("1d", "7d", "30d")}
        assert report.endpoint_consumers[("svc", "GET", "/r0", "30d")] == consumers
        assert report.endpoint_consumers[("svc", "GET", "/r0", "1d")] == consumers // 20
    finally:
        store.close()


# --- unusual consumer ids and labels through the fan-out; a consumer back after retention ---------

# What the Deriver lets through (printable, at most 256 characters; others become sha256:<hex>)
# and label values it sanitized (printable, at most 128 characters).
ODD_IDS = [
    "é" * 256,
    "\U0001f680" * 256,
    "用户-42",
    "\u05d0\u05d1-rtl",
    "a b",
    "'; DROP TABLE consumers;--",
    "sha256:" + "0" * 64,
    "%s?%s",
    "A",
    "a",
]
ODD_ROUTE = "/v1/" + "\U0001f680" * 60 + "/{id}"


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_odd_consumer_ids_and_labels_are_counted_exactly_and_listed_as_sent(
    tmp_path, backend: str, request
) -> None:
    now_ms = int(time.time() * 1000)
    config = (
        StateConfig(postgres=PostgresState(dsn=request.getfixturevalue("dsn")))
        if backend == "postgres"
        else StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db")))
    )
    store = open_store(config)
    try:
        for i, consumer in enumerate(ODD_IDS):  # one flush each, then all again in one
            _write(store, [_request(consumer, now_ms - 10_000 + i, route=ODD_ROUTE)])
        _write(store, [_request(c, now_ms - 5_000 + i, route=ODD_ROUTE) for i, c in enumerate(ODD_IDS)])
        report = build_report(store, now_ms)
        assert report.endpoint_consumers[("orders-api", "GET", ODD_ROUTE, "1d")] == len(ODD_IDS)
        assert report.new == {("orders-api", "free"): len(ODD_IDS)}
        from apiusage.processor.state.report import deprecated_callers

        listed = deprecated_callers(store, "orders-api", "GET", ODD_ROUTE, now_ms - DAY_MS)
        assert sorted((c, calls) for c, _, _, _, _, calls in listed) == sorted((c, 2.0) for c in ODD_IDS)
    finally:
        store.close()


def test_a_consumer_back_after_retention_is_new_again_and_no_counter_goes_down(tmp_path) -> None:
    now_ms = int(time.time() * 1000)
    today = now_ms // DAY_MS
    store = open_store(StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db"))))
    try:
        _write(
            store,
            [
                _request("back", (today - 60) * DAY_MS + 5, plan="free"),
                _request("stays", (today - 60) * DAY_MS + 6, plan="free"),
                _request("stays", now_ms - 1000, plan="free"),
            ],
        )
        before = build_report(store, now_ms)
        store.prune(today - 40)
        after_prune = build_report(store, now_ms)
        _write(store, [_request("back", now_ms - 500, plan="pro")])
        back = build_report(store, now_ms)
        assert before.new == after_prune.new == {("orders-api", "free"): 2}
        # docs/state.md: back after more than retention_days of silence, it is counted as new again.
        assert back.new == {("orders-api", "free"): 2, ("orders-api", "pro"): 1}
        assert store.query("SELECT consumer_id, first_seen FROM consumers ORDER BY 1") == [
            ("back", now_ms - 500),
            ("stays", (today - 60) * DAY_MS + 6),
        ]
        assert back.active[("orders-api", "pro", "1d")] == 1
    finally:
        store.close()
