"""Which replica computes the consumer metrics: one at a time, handed over when it stops.

On PostgreSQL a session-level advisory lock, held on a connection of its own, elects the
replica that runs `build_report()` and publishes the result (state/snapshot.py); the
others read what it published.  PostgreSQL releases the lock when that session ends: a
clean stop closes it (handover at the others' next refresh), and so does the kernel when
the process is killed (kill -9 closes its socket).  Keepalives on both ends bound how long
a replica that vanished from the network keeps it.  SQLite has one processor per file:
it is always the one that computes.

The lock is checked before each refresh and again, in the same transaction, when the report
is published, so a replica that lost its session while computing cannot overwrite the
report of the one that took over.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .store import StoreError

__all__ = ["Lease", "SoleLeader", "AdvisoryLease", "LOCK_KEY"]

log = logging.getLogger("apiusage.processor.state")

# pg_try_advisory_lock(int, int): "apiu" and 2, apart from the migration lock (one bigint key).
LOCK_KEY = (0x61706975, 2)
# The two-key form shows in pg_locks as classid, objid with objsubid 2.  Checking pg_locks
# first: pg_try_advisory_lock again on a session that holds it would stack a second count.
_HELD = (
    f"SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
    f"AND pid = pg_backend_pid() AND classid = {LOCK_KEY[0]} AND objid = {LOCK_KEY[1]} "
    "AND objsubid = 2)"
)
_CHECK = f"SELECT CASE WHEN ({_HELD}) THEN true ELSE pg_try_advisory_lock({LOCK_KEY[0]}, {LOCK_KEY[1]}) END"
# Seconds: a leader cut off from the server loses the lock after about idle + interval * count.
_KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}


class Lease:
    """Leadership of the consumer-metrics refresh."""

    description = ""

    def check(self) -> bool:
        """True when this replica computes now (taking the lease when it is free); never raises."""
        raise NotImplementedError

    def publish(self, sql: str, params: Sequence[Any]) -> bool:
        """Run the write `sql` if this replica still leads; False when it does not.
        Raises StoreError when the write fails."""
        raise NotImplementedError

    def release(self) -> None:
        """Hand the lease over (shutdown); idempotent."""


class SoleLeader(Lease):
    """SQLite: one processor per file, always the leader; publishes through `execute`."""

    description = "the only processor of the SQLite file"

    def __init__(self, execute: Callable[[str, Sequence[Any]], int]) -> None:
        self._execute = execute

    def check(self) -> bool:
        return True

    def publish(self, sql: str, params: Sequence[Any]) -> bool:
        self._execute(sql, params)
        return True


class AdvisoryLease(Lease):
    """A PostgreSQL session-level advisory lock on a connection used for nothing else."""

    def __init__(self, dsn: str) -> None:
        import psycopg  # the store opened already: psycopg is there

        self._psycopg = psycopg
        self._dsn = dsn
        self._db = None
        self._lock = threading.Lock()  # the refresh thread, a test's refresh(), stop()
        self._released = False
        self._problem: str | None = None  # the last connection error, logged once
        self.description = f"PostgreSQL advisory lock {LOCK_KEY}"

    def _connection(self):  # noqa: ANN202
        db = self._db
        if db is not None and not db.closed and not db.broken:
            return db
        if db is not None:
            db.close()
        k = _KEEPALIVE
        # tcp_user_timeout: a lock check cannot hang on a server that vanished (libpq has no
        # other client-side timeout); the SETs make the server notice a vanished client.
        db = self._psycopg.connect(
            self._dsn,
            autocommit=True,
            connect_timeout=10,
            application_name="apiusage-refresh-lease",
            keepalives=1,
            keepalives_idle=k["idle"],
            keepalives_interval=k["interval"],
            keepalives_count=k["count"],
            tcp_user_timeout=(k["idle"] + k["interval"] * k["count"]) * 1000,
        )
        try:
            db.execute(f"SET tcp_keepalives_idle = {k['idle']}")
            db.execute(f"SET tcp_keepalives_interval = {k['interval']}")
            db.execute(f"SET tcp_keepalives_count = {k['count']}")
            db.execute("SET statement_timeout = '60s'")
        except BaseException:
            db.close()
            raise
        self._db = db
        return db

    def check(self) -> bool:
        with self._lock:
            if self._released:
                return False
            try:
                ((held,),) = self._connection().execute(_CHECK).fetchall()
            except self._psycopg.Error as exc:
                self._lost(exc)
                return False
            if self._problem is not None:
                log.info("the refresh lease connection works again")
                self._problem = None
            return bool(held)

    def publish(self, sql: str, params: Sequence[Any]) -> bool:
        with self._lock:
            if self._released:
                return False
            try:
                db = self._connection()
                with db.transaction():
                    ((held,),) = db.execute(_HELD).fetchall()
                    if not held:
                        return False
                    db.execute(sql.replace("?", "%s"), params)
            except self._psycopg.Error as exc:
                self._lost(exc)
                raise StoreError(f"cannot publish the consumer report: {str(exc).strip()}") from None
            return True

    def _lost(self, exc: Exception) -> None:
        # The session, and the lock with it, may be gone: a new one starts at the next check.
        if self._db is not None:
            self._db.close()
            self._db = None
        problem = str(exc).strip()
        if self._problem is None:
            log.error(
                "refresh lease: cannot reach PostgreSQL (%s); not computing the consumer "
                "metrics until it answers",
                problem,
            )
        self._problem = problem

    def release(self) -> None:
        # Closing the session releases the lock. No self._lock: a check stuck on a dead
        # server must not hold up shutdown (tcp_user_timeout ends it anyway).
        self._released = True
        db, self._db = self._db, None
        if db is not None:
            try:
                db.close()
            except Exception:  # noqa: BLE001 - shutting down: the server drops the session anyway
                pass
