"""Several replicas on one PostgreSQL: one computes the consumer metrics (refresh lease), the
others serve what it published, and another takes over when it stops or is killed."""

from __future__ import annotations

import contextlib
import logging
import signal
import time
import zlib
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import psycopg
import pytest
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.state import snapshot
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.state.lease import LOCK_KEY, AdvisoryLease
from apiusage.processor.state.report import ConsumerReport
from apiusage.processor.state.service import StateService
from apiusage.processor.state.snapshot import SnapshotError
from apiusage.processor.telemetry import PipelineStats

from tests.processor.state.test_consumer_metrics import assert_scenario, settle
from tests.support import usage_scenario as sc
from tests.support.polling import wait_until
from tests.support.postgres import postgres_server
from tests.support.processor import running_processor, sample, start_processor

pytestmark = [pytest.mark.slow, pytest.mark.live]

LEADER = "apiusage_state_refresh_leader"
ACTIVE_1D = dict(service=sc.SERVICE, plan_tier="pro", window="1d")
FAST = {"refresh_interval": "200ms", "flush_interval": "200ms"}


@pytest.fixture(scope="module")
def pg_server() -> Iterator:
    with postgres_server() as pg:
        yield pg


_databases = iter(range(1, 1000))


@pytest.fixture
def dsn(pg_server) -> str:
    """A fresh database on the module's server."""
    name = f"replicas{next(_databases)}"
    with psycopg.connect(pg_server.dsn, autocommit=True, connect_timeout=10) as db:
        db.execute(f"CREATE DATABASE {name}")
    return pg_server.dsn.rsplit("/", 1)[0] + f"/{name}"


def _stored_writer(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as db:
        ((writer,),) = db.execute("SELECT writer FROM report_snapshot").fetchall()
    return writer


# --------------------------------------------------------------------------- the snapshot format


def _report() -> ConsumerReport:
    return ConsumerReport(
        generated_ms=1_764_547_200_123,
        active={("orders-api", "pro", "1d"): 3, ("orders-api", "__other__", "30d"): 12},
        new={("orders-api", "free"): 7},
        ttfs={("orders-api", "pro"): ([1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1], 7200.125, 4)},
        feature_adoption={("orders-api", "orders", "pro", "7d"): 0.1 + 0.2},
        sunset={("orders-api", "DELETE", "/v1/orders/{order_id}"): 1801353600.0},
        cohorts={("orders-api", "2026-11-23", "0"): 2 / 3},
        folded={("api_endpoint_consumers", "route"): (2, 5)},
    )


def test_a_report_survives_its_snapshot_exactly() -> None:
    report = _report()
    back = snapshot.loads(snapshot.dumps(report))
    assert back == report
    for f in fields(ConsumerReport):  # ints stay ints, floats floats: gauges print the same
        if f.name == "generated_ms":
            continue
        got, want = getattr(back, f.name), getattr(report, f.name)
        assert sorted(map(repr, got.items())) == sorted(map(repr, want.items())), f.name
    assert snapshot.dumps(back) == snapshot.dumps(report)  # the same bytes from every replica


@pytest.mark.parametrize(
    "data, message",
    [
        (
            b"not zlib",
            "stored consumer report is not readable: Error -3 while decompressing data: "
            "incorrect header check",
        ),
        (
            zlib.compress(b'{"format": 2, "generated_ms": 1}'),
            "stored consumer report has format 2, this apiusage reads format 1; run the same apiusage "
            "version on every replica",
        ),
        (
            zlib.compress(b'{"format": 1, "generated_ms": 1, "active": [[["a", 1], 2]]}'),
            "stored consumer report: malformed entry in active: [['a', 1], 2]",
        ),
        (
            zlib.compress(b'{"format": 1, "generated_ms": 1, "new": [[["a", "b"], "3"]]}'),
            "stored consumer report: new has a non-number '3'",
        ),
        (
            zlib.compress(b'{"format": 1, "generated_ms": 1, "ttfs": [[["a", "b"], [[1], 2.5]]]}'),
            "stored consumer report: malformed histogram [[1], 2.5]",
        ),
    ],
)
def test_a_damaged_or_newer_snapshot_is_refused_with_its_reason(data: bytes, message: str) -> None:
    with pytest.raises(SnapshotError) as info:
        snapshot.loads(data)
    assert str(info.value) == message


# --------------------------------------------------------------------------- the lease


def _advisory_locks(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as db:
        return db.execute(
            "SELECT l.pid, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted",
            LOCK_KEY,
        ).fetchall()


def test_one_lease_at_a_time_kept_without_stacking_and_retaken_after_a_lost_session(dsn: str, caplog) -> None:
    a, b = AdvisoryLease(dsn), AdvisoryLease(dsn)
    try:
        assert [a.check() for _ in range(3)] == [True, True, True]
        assert b.check() is False
        [(pid, name)] = _advisory_locks(dsn)
        assert name == "apiusage-refresh-lease"
        # Held once: one unlock frees it (a second pg_try_advisory_lock would have stacked a count).
        assert a._db.execute("SELECT pg_advisory_unlock(%s, %s)", LOCK_KEY).fetchone() == (True,)
        assert _advisory_locks(dsn) == []
        assert a.check() is True and b.check() is False
        [(pid, _)] = _advisory_locks(dsn)
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as db:
            db.execute("CREATE TABLE t (v INT)")
        # A publication fenced by the lock: only the holder writes.
        assert b.publish("INSERT INTO t VALUES (?)", (2,)) is False
        assert a.publish("INSERT INTO t VALUES (?)", (1,)) is True
        # The leader's session ends under it (server restart, failover): it stops leading, and
        # the other replica takes the lease.
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as db:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            assert db.execute("SELECT v FROM t").fetchall() == [(1,)]
        wait_until(lambda: not _advisory_locks(dsn), 15, "the terminated session's lock to go")
        with caplog.at_level(logging.INFO, logger="apiusage.processor.state"):
            assert a.check() is False  # the broken session: not leading, logged once
            assert b.check() is True
            assert a.check() is False  # a new session, and the lease is taken
        errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and errors[0].startswith("refresh lease: cannot reach PostgreSQL (")
        assert "the refresh lease connection works again" in caplog.messages
        b.release()
        assert b.check() is False  # released for good
        # The server ends the closed session a moment later; then the lock is free.
        wait_until(a.check, 5, "the lease to be free after the holder released it")
        assert len(_advisory_locks(dsn)) == 1
    finally:
        a.release()
        b.release()
    wait_until(lambda: _advisory_locks(dsn) == [], 5, "no session to hold the lock")


# --------------------------------------------------------------------------- replicas


def test_one_replica_computes_and_every_replica_exposes_its_exact_values(tmp_path: Path, dsn: str) -> None:
    state = {"postgres": {"dsn": dsn}}
    with contextlib.ExitStack() as stack:
        replicas = [
            stack.enter_context(running_processor(sc.processor_config(tmp_path, state))) for _ in range(2)
        ]
        calls = sc.calls()
        for i, replica in enumerate(replicas):
            sc.send(replica.http_endpoint, calls[i::2], chunk=37)
        for i, replica in enumerate(replicas):
            replica.wait_processed(len(calls[i::2]))
        scrapes = settle(*replicas)
        leaders = [sample(m, LEADER) for m in scrapes]
        assert sorted(leaders) == [0, 1]
        for m in scrapes:
            assert_scenario(m)
            assert sample(m, "apiusage_state_report_timestamp_seconds") == sc.NOW_MS / 1000
            assert sample(m, "apiusage_state_refresh_interval_seconds") == 3600
        leader, follower = (
            replicas[i].processor.state for i in sorted((0, 1), key=leaders.__getitem__, reverse=True)
        )
        assert _stored_writer(dsn) == leader.identity != follower.identity
        # The follower's report is the leader's, to the last value.
        assert follower.report == leader.report

        # A snapshot the follower cannot read: it keeps the values it has, and says why.
        with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as db:
            db.execute(
                "UPDATE report_snapshot SET version = version + 1, report = %s",
                (zlib.compress(b'{"format": 9}'),),
            )
        before = follower.report
        follower.refresh(now_ms=sc.NOW_MS)
        assert follower.report is before
        assert follower.health.refreshes["failure"] == 1 and not follower.health.refresh_ok
        m = replicas[leaders.index(0)].scrape()
        assert_scenario(m)
        assert sample(m, "apiusage_state_refreshes_total", outcome="failure") == 1
        leader.refresh(now_ms=sc.NOW_MS)  # the next report repairs it
        follower.refresh(now_ms=sc.NOW_MS)
        assert follower.health.refresh_ok and follower.report == leader.report


def _active(replica) -> float | None:  # noqa: ANN001
    return sample(replica.scrape(), "api_active_consumers", **ACTIVE_1D)


def test_the_follower_takes_over_when_the_leader_stops(tmp_path: Path, dsn: str) -> None:
    config = {"state": {"postgres": {"dsn": dsn}, **FAST}}
    stacks = [contextlib.ExitStack(), contextlib.ExitStack()]
    try:
        replicas = [stack.enter_context(running_processor(config)) for stack in stacks]
        sc.send(replicas[0].http_endpoint, sc.recent_consumers(0, 20))
        sc.send(replicas[1].http_endpoint, sc.recent_consumers(20, 40))
        wait_until(
            lambda: all(_active(r) == 40 for r in replicas), 15, "both replicas to expose 40 consumers"
        )
        leaders = [sample(r.scrape(), LEADER) for r in replicas]
        assert sorted(leaders) == [0, 1]
        i = leaders.index(1)
        leader, follower = replicas[i], replicas[1 - i]
        stacks[i].close()  # a clean stop releases the lease
        assert not leader.processor.state.health.leader
        stopped = time.monotonic()
        wait_until(lambda: sample(follower.scrape(), LEADER) == 1, 5, "the follower to take the lease")
        took_over = time.monotonic() - stopped
        # Nobody else publishes now: new consumers show only if the survivor computes.
        sc.send(follower.http_endpoint, sc.recent_consumers(40, 45))
        wait_until(lambda: _active(follower) == 45, 10, "the new leader to count 45 consumers")
        assert _stored_writer(dsn) == follower.processor.state.identity
    finally:
        for stack in stacks:
            stack.close()
    assert took_over < 3.0, f"handover took {took_over:.1f}s with a 0.2 s refresh interval"


def test_the_follower_takes_over_when_the_leader_is_killed(tmp_path: Path, dsn: str) -> None:
    config = {"state": {"postgres": {"dsn": dsn}, **FAST}}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with start_processor(tmp_path / "a", config) as a, start_processor(tmp_path / "b", config) as b:
        sc.send(a.http_endpoint, sc.recent_consumers(0, 10))
        sc.send(b.http_endpoint, sc.recent_consumers(10, 25))
        wait_until(lambda: _active(a) == 25 and _active(b) == 25, 15, "both replicas to expose 25 consumers")
        leaders = [sample(r.scrape(), LEADER) for r in (a, b)]
        assert sorted(leaders) == [0, 1]
        leader, follower = (a, b) if leaders[0] == 1 else (b, a)
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait(10)
        killed = time.monotonic()
        wait_until(lambda: sample(follower.scrape(), LEADER) == 1, 10, "the follower to take the lease")
        took_over = time.monotonic() - killed
        sc.send(follower.http_endpoint, sc.recent_consumers(25, 30))
        wait_until(lambda: _active(follower) == 30, 10, "the new leader to count 30 consumers")
    # PostgreSQL ends the killed replica's session as soon as the kernel closes its socket.
    assert took_over < 3.0, f"takeover took {took_over:.1f}s after kill -9"


# --------------------------------------------------------------------------- SQLite


def test_a_restart_exposes_the_last_report_until_its_first_refresh(tmp_path: Path) -> None:
    config = sc.processor_config(tmp_path, {"sqlite": {"path": str(tmp_path / "state.db")}})
    with running_processor(config) as running:
        sc.send(running.http_endpoint, sc.calls())
        running.wait_processed(sc.SPANS)
        [m] = settle(running)
        assert sample(m, LEADER) == 1  # the only processor of its file
        computed = running.processor.state.report
    # The next start, before any refresh (at 100k consumers on a cold cache the first one takes
    # minutes): the last report, with its own timestamp.
    service = StateService(
        StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db"))),
        ConsumerActivity(400, PipelineStats()),
    )
    service.open()
    try:
        assert service.report == computed and service.report.generated_ms == sc.NOW_MS
    finally:
        service.close()


def test_a_replica_that_never_reached_the_lease_serves_nothing_rather_than_guessing(dsn: str) -> None:
    # No report published yet: the follower exposes no consumer values (and an age of "never").
    holder = AdvisoryLease(dsn)
    config = StateConfig(postgres=PostgresState(dsn=dsn))
    service = StateService(config, ConsumerActivity(400, PipelineStats()))
    service.open()
    try:
        assert holder.check() is True  # another replica leads, and has published nothing
        service.refresh()
        assert not service.health.leader and service.health.refresh_ok
        assert service.report == ConsumerReport()
    finally:
        service.close()
        holder.release()


class _LoseTheLeaseWhileComputing:
    """A catalog whose first read ends its replica's lease session and lets `rival` take over,
    as a failover in the middle of a long refresh would."""

    def __init__(self, dsn: str, rival: StateService) -> None:
        self.dsn, self.rival, self.done = dsn, rival, False
        self.victim: StateService | None = None

    @property
    def services(self) -> list:
        if not self.done:
            self.done = True
            [(pid, _)] = _advisory_locks(self.dsn)
            with psycopg.connect(self.dsn, autocommit=True, connect_timeout=10) as db:
                db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            wait_until(lambda: not _advisory_locks(self.dsn), 15, "the lease session to end")
            # The victim's driver notices (keepalive, a failed statement): its next statement
            # runs on a new session, which does not hold the lock.
            with contextlib.suppress(psycopg.Error):
                self.victim._lease._db.execute("SELECT 1")
            self.rival.refresh(now_ms=sc.NOW_MS + 1)
            assert self.rival.health.leader
        return []


def test_a_leader_that_lost_the_lease_while_computing_does_not_overwrite_the_new_one(dsn: str) -> None:
    config = StateConfig(postgres=PostgresState(dsn=dsn))
    rival = StateService(config, ConsumerActivity(400, PipelineStats()))
    saboteur = _LoseTheLeaseWhileComputing(dsn, rival)
    first = saboteur.victim = StateService(config, ConsumerActivity(400, PipelineStats()), saboteur)
    first.open()
    rival.open()
    try:
        first.refresh(now_ms=sc.NOW_MS)  # leads, loses the lease mid-way: does not publish
        assert saboteur.done and not first.health.leader and first.health.publish_ok
        assert first.report.generated_ms == sc.NOW_MS  # what it computed, it still exposes
        assert _stored_writer(dsn) == rival.identity
        assert rival.report.generated_ms == sc.NOW_MS + 1
        first.refresh(now_ms=sc.NOW_MS + 2)  # now a follower: serves the rival's report
        assert not first.health.leader and first.report == rival.report
    finally:
        first.close()
        rival.close()
