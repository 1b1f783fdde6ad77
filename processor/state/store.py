"""The state database: SQLite (embedded default, WAL mode) or PostgreSQL (shared by replicas).

One small class per backend with the same four operations: migrate, write a
batch of deduplicated activity in one transaction, delete old activity, and
query.  Writes are upserts that combine with what other replicas wrote, so
several processors sharing PostgreSQL produce the same rows as one would.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..config import StateConfig
from .schema import LATEST, MIGRATIONS

__all__ = ["Store", "StoreError", "open_store", "ActivityBatch"]

# (service, consumer_id, first_seen, first_success, last_seen, plan_tier, client_name, client_version)
ConsumerRow = tuple[str, str, int, "int | None", int, str, str, str]
# (day, service, consumer_id, method, route, feature, client_name, client_version, calls, errors, last_call)
ActivityRow = tuple[int, str, str, str, str, str, str, str, float, float, int]
# (service, method, route, deprecated, first_seen, last_seen)
EndpointRow = tuple[str, str, str, int, int, int]
ActivityBatch = tuple[list[ConsumerRow], list[ActivityRow], list[EndpointRow]]

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"""

# Every SET expression reads the row as it was before the statement, in both dialects.
_UPSERT_CONSUMER = """
INSERT INTO consumers (service, consumer_id, first_seen, first_success, last_seen,
                       first_plan_tier, plan_tier, client_name, client_version)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, consumer_id) DO UPDATE SET
    first_seen = {least}(consumers.first_seen, excluded.first_seen),
    first_success = {least}(COALESCE(consumers.first_success, excluded.first_success),
                            COALESCE(excluded.first_success, consumers.first_success)),
    last_seen = {greatest}(consumers.last_seen, excluded.last_seen),
    plan_tier = CASE WHEN excluded.last_seen >= consumers.last_seen
                     THEN excluded.plan_tier ELSE consumers.plan_tier END,
    client_name = CASE WHEN excluded.last_seen >= consumers.last_seen
                       THEN excluded.client_name ELSE consumers.client_name END,
    client_version = CASE WHEN excluded.last_seen >= consumers.last_seen
                          THEN excluded.client_version ELSE consumers.client_version END
"""
_UPSERT_ACTIVITY = """
INSERT INTO activity (day, service, consumer_id, method, route, feature, client_name,
                      client_version, calls, errors, last_call)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, service, consumer_id, method, route, feature, client_name, client_version)
DO UPDATE SET
    calls = activity.calls + excluded.calls,
    errors = activity.errors + excluded.errors,
    last_call = {greatest}(activity.last_call, excluded.last_call)
"""
_UPSERT_ENDPOINT = """
INSERT INTO endpoints (service, method, route, deprecated, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (service, method, route) DO UPDATE SET
    deprecated = CASE WHEN excluded.last_seen >= endpoints.last_seen
                      THEN excluded.deprecated ELSE endpoints.deprecated END,
    first_seen = {least}(endpoints.first_seen, excluded.first_seen),
    last_seen = {greatest}(endpoints.last_seen, excluded.last_seen)
"""


class StoreError(Exception):
    """The state database cannot be opened or written; the message says which and why."""


class Store:
    """Shared logic; subclasses supply the connection and the SQL dialect."""

    description: str
    _least = "min"
    _greatest = "max"

    def _sql(self, sql: str) -> str:
        return sql.format(least=self._least, greatest=self._greatest)

    def migrate(self) -> int:
        """Apply missing migrations; returns the schema version now in place."""
        raise NotImplementedError

    def write(self, batch: ActivityBatch) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    def delete_activity_before(self, day: int) -> int:
        raise NotImplementedError

    def reader(self) -> Store:
        """A second connection for reads (refresh, admin) that never waits behind a flush."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise StoreError when the database is damaged (cheap; run once at start-up)."""

    _interrupted = False

    def interrupt(self) -> None:
        """Abort the statement running on this connection and refuse further ones (shutdown);
        safe from any thread."""
        self._interrupted = True
        self._interrupt_now()

    def _interrupt_now(self) -> None:
        pass

    def _check_interrupted(self) -> None:
        if self._interrupted:
            raise StoreError(f"read of {self.description} interrupted: shutting down")

    def close(self) -> None:
        raise NotImplementedError

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one write statement on this (writer) connection, committed; returns the rows it changed."""
        raise NotImplementedError


class SqliteStore(Store):
    def __init__(self, path: str, reader: bool = False) -> None:
        self.path = path
        self.description = f"sqlite:{path}"
        try:
            if path != ":memory:" and not reader:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of the SQLite state database {path}: "
                             f"{exc.strerror}") from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                                       timeout=10)
            if reader:
                self._db.execute("PRAGMA query_only=1")
                mode = "wal"
            else:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the SQLite state database {path} "
                             f"(state.sqlite.path): {exc}") from None
        if path != ":memory:" and mode.lower() != "wal":
            raise StoreError(f"SQLite state database {path} cannot use WAL mode (got {mode})")
        self._identity = self._file_identity()
        self._upserts = [self._sql(s) for s in (_UPSERT_CONSUMER, _UPSERT_ACTIVITY, _UPSERT_ENDPOINT)]

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def fate(self) -> str | None:
        """"deleted" or "replaced" when the path no longer names the file this connection has
        open (an open SQLite file lives on, unlinked, and takes every write into oblivion)."""
        if self._identity is None:
            return None
        now = self._file_identity()
        if now == self._identity:
            return None
        return "deleted" if now is None else "replaced"

    def save_copy(self, target: str) -> None:
        """Copy the database as this connection sees it (WAL included) into a new file `target`."""
        try:
            copy = sqlite3.connect(target, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot create {target}: {exc}") from None
        try:
            self._db.backup(copy)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot copy {self.description} to {target}: {exc}") from None
        finally:
            copy.close()

    def reader(self) -> Store:
        if self.path == ":memory:":
            return self  # a second connection would see another, empty database
        return SqliteStore(self.path, reader=True)

    def check(self) -> None:
        try:
            problems = [p for (p,) in self._db.execute("PRAGMA quick_check(5)").fetchall()]
        except sqlite3.Error as exc:
            problems = [str(exc)]
        if problems != ["ok"]:
            lines = [line.strip() for p in problems for line in str(p).splitlines()
                     if line.strip() and not line.startswith("***")]  # one message, one line
            raise StoreError(f"SQLite state database {self.path} is damaged (PRAGMA quick_check: "
                             f"{'; '.join(lines[:5])}); restore it from a backup or move it away "
                             "(state.sqlite.path)")

    def _interrupt_now(self) -> None:
        self._db.interrupt()

    def migrate(self) -> int:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")  # one migrator at a time, even across processes
            db.execute(_MIGRATIONS_TABLE)
            done = {v for (v,) in db.execute("SELECT version FROM schema_migrations")}
            if done and max(done) > LATEST:
                db.execute("ROLLBACK")
                raise StoreError(f"{self.description} has schema version {max(done)}, newer than "
                                 f"this apiusage understands ({LATEST}); upgrade apiusage")
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)",
                           (version, int(time.time() * 1000)))
            # SQLite opens a write-protected file read-only without a word and BEGIN succeeds:
            # only writing a page says so, and it must say so now, not at the first flush.
            db.execute("UPDATE schema_migrations SET applied_at = applied_at WHERE version = ?",
                       (LATEST,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if (getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_READONLY"):
                raise StoreError(f"SQLite state database {self.path} is read-only ({exc}): make it "
                                 "writable or point state.sqlite.path elsewhere") from None
            raise StoreError(f"cannot migrate {self.description} (state.sqlite.path): {exc}") from None
        return LATEST

    def write(self, batch: ActivityBatch) -> None:
        consumers, activity, endpoints = batch
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            db.executemany(self._upserts[0], _consumer_params(consumers))
            db.executemany(self._upserts[1], activity)
            db.executemany(self._upserts[2], endpoints)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"cannot write to {self.description}: {exc}") from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._check_interrupted()
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.description}: {exc}") from None

    def delete_activity_before(self, day: int) -> int:
        try:
            return self._db.execute("DELETE FROM activity WHERE day < ?", (day,)).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot delete from {self.description}: {exc}") from None

    def close(self) -> None:
        self._db.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self._db.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to {self.description}: {exc}") from None


class PostgresStore(Store):
    _least = "LEAST"
    _greatest = "GREATEST"
    _LOCK = 0x61706975  # pg_advisory_xact_lock key: migrations run one replica at a time

    def __init__(self, dsn: str, reader: bool = False) -> None:
        try:
            import psycopg
        except ImportError:
            raise StoreError("state.postgres needs psycopg: pip install 'apiusage[postgres]'") from None
        self._psycopg = psycopg
        self._dsn = dsn
        self._read_only = reader
        self.description = "postgres"
        try:
            self._db = self._connect()
        except psycopg.Error as exc:
            raise StoreError(f"cannot connect to the PostgreSQL state database: "
                             f"{str(exc).strip()}") from None
        info = self._db.info
        self.description = f"postgres://{info.host}:{info.port}/{info.dbname}"
        self._upserts = [self._sql(s).replace("?", "%s")
                         for s in (_UPSERT_CONSUMER, _UPSERT_ACTIVITY, _UPSERT_ENDPOINT)]

    def _connect(self):  # noqa: ANN202
        db = self._psycopg.connect(self._dsn, autocommit=True, connect_timeout=10)
        if self._read_only:
            # As SQLite's query_only: the refresh, the plan lookup query and admin reads cannot
            # change the state, whatever SQL reaches them.
            try:
                db.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
            except BaseException:
                db.close()
                raise
        return db

    def reader(self) -> Store:
        return PostgresStore(self._dsn, reader=True)

    def _interrupt_now(self) -> None:
        try:
            self._db.cancel_safe(timeout=2)
        except Exception:  # noqa: BLE001 - nothing running, or the server is gone: nothing to stop
            pass

    def _fail(self, what: str, exc: Exception) -> StoreError:
        return StoreError(f"cannot {what} {self.description}: {str(exc).strip()}")

    @property
    def _conn(self):  # noqa: ANN202
        """The connection, reopened after the server went away (restart, failover)."""
        if self._db.closed or self._db.broken:
            try:
                self._db = self._connect()
            except self._psycopg.Error as exc:
                raise self._fail("reconnect to", exc) from None
        return self._db

    def migrate(self) -> int:
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._LOCK,))
                self._conn.execute(_MIGRATIONS_TABLE)
                done = {v for (v,) in self._conn.execute("SELECT version FROM schema_migrations")}
                if done and max(done) > LATEST:
                    raise StoreError(f"{self.description} has schema version {max(done)}, newer "
                                     f"than this apiusage understands ({LATEST}); upgrade apiusage")
                for version, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for statement in statements:
                        self._conn.execute(statement)
                    self._conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)",
                                     (version, int(time.time() * 1000)))
        except self._psycopg.Error as exc:
            raise self._fail("migrate", exc) from None
        return LATEST

    def write(self, batch: ActivityBatch) -> None:
        consumers, activity, endpoints = batch
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                # Sorted rows take row locks in one global order: replicas cannot deadlock.
                cur.executemany(self._upserts[0], sorted(_consumer_params(consumers)))
                cur.executemany(self._upserts[1], sorted(activity))
                cur.executemany(self._upserts[2], sorted(endpoints))
        except self._psycopg.Error as exc:
            raise self._fail("write to", exc) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._check_interrupted()
        try:
            return self._conn.execute(sql.replace("?", "%s"), params).fetchall()
        except self._psycopg.Error as exc:
            raise self._fail("read", exc) from None

    def delete_activity_before(self, day: int) -> int:
        try:
            return self._conn.execute("DELETE FROM activity WHERE day < %s", (day,)).rowcount
        except self._psycopg.Error as exc:
            raise self._fail("delete from", exc) from None

    def close(self) -> None:
        self._db.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql.replace("?", "%s"), params).rowcount
        except self._psycopg.Error as exc:
            raise self._fail("write to", exc) from None


def _consumer_params(rows: list[ConsumerRow]) -> list[tuple]:
    # first_plan_tier is the plan at insert time: the new-consumer counter's label never moves.
    return [(s, c, first, success, last, plan, plan, name, version)
            for (s, c, first, success, last, plan, name, version) in rows]


def open_store(config: StateConfig) -> Store:
    """Open the configured backend and bring its schema up to date."""
    store: Store
    if config.postgres is not None:
        store = PostgresStore(config.postgres.dsn)
    else:
        store = SqliteStore(config.sqlite.path if config.sqlite else "apiusage-state.db")
    try:
        store.check()
        store.migrate()
    except StoreError:
        store.close()
        raise
    return store
