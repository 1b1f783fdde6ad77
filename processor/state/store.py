"""The state database: SQLite (embedded default, WAL mode) or PostgreSQL (shared by replicas).

One small class per backend with the same four operations: migrate, write a
batch of deduplicated activity in one transaction, delete old activity, and
query.  Writes are upserts that combine with what other replicas wrote, so
several processors sharing PostgreSQL produce the same rows as one would.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..config import StateConfig
from ..errors import ProcessorError
from .schema import LATEST, MIGRATIONS, ttfs_bucket_sql

__all__ = ["Store", "StoreError", "open_store", "ActivityBatch", "DAY_MS"]

# (service, consumer_id, first_seen, first_success, last_seen, first_plan_tier, plan_tier,
#  client_name, client_version): first_plan_tier is the plan of the earliest request
ConsumerRow = tuple[str, str, int, "int | None", int, str, str, str, str]
# (day, service, consumer_id, method, route, feature, client_name, client_version, calls, errors, last_call)
ActivityRow = tuple[int, str, str, str, str, str, str, str, float, float, int]
# (service, method, route, deprecated, first_seen, last_seen)
EndpointRow = tuple[str, str, str, int, int, int]
# (service, method, route, location, parameter, consumer_id, first_day, last_call, calls)
ConsumerParameterRow = tuple[str, str, str, str, str, str, int, int, float]
# (service, method, route, location, parameter, first_seen, last_seen): every request's names
ParameterRow = tuple[str, str, str, str, str, int, int]
# (service, consumer_id, first_seen, last_seen, events): who gave feedback
FeedbackRow = tuple[str, str, int, int, int]
# (service, experiment, consumer_id, variant, first_seen, last_seen, first_success, other_variant,
#  requests): the variant first assigned, and the first other one seen after it (contamination)
ExperimentConsumerRow = tuple[str, str, str, str, int, int, "int | None", "str | None", float]
# (service, experiment, variant, day, requests, errors, client_errors, duration_sum, spans,
#  span_errors, span_client_errors): the first four tallies weighted by the sampling adjusted
#  count (estimated traffic), the span counts unweighted (the sample sizes; version 6)
ExperimentDayRow = tuple[str, str, str, int, float, float, float, float, int, int, int]
# (service, experiment, variant, day, bucket, count, spans): bucket indexes
# EXPERIMENT_LATENCY_BOUNDS; count weighted, spans unweighted
ExperimentLatencyRow = tuple[str, str, str, int, int, float, int]
# (service, version, first_seen, last_seen, requests): the release markers (issue 16)
ReleaseRow = tuple[str, str, int, int, float]
ActivityBatch = tuple[
    list[ConsumerRow],
    list[ActivityRow],
    list[EndpointRow],
    list[ConsumerParameterRow],
    list[ParameterRow],
    list[FeedbackRow],
    list[ExperimentConsumerRow],
    list[ExperimentDayRow],
    list[ExperimentLatencyRow],
    list[ReleaseRow],
]

_MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY, applied_at BIGINT NOT NULL)"""

# Every SET expression reads the row as it was before the statement, in both dialects.
# first_plan_tier is written once, when the consumer is first stored: the new-consumer counter's
# label never moves (a counter that moved between labels would go down on one of them).
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
_UPSERT_ENDPOINT = """
INSERT INTO endpoints (service, method, route, deprecated, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (service, method, route) DO UPDATE SET
    deprecated = CASE WHEN excluded.last_seen >= endpoints.last_seen
                      THEN excluded.deprecated ELSE endpoints.deprecated END,
    first_seen = {least}(endpoints.first_seen, excluded.first_seen),
    last_seen = {greatest}(endpoints.last_seen, excluded.last_seen)
"""
_UPSERT_CONSUMER_PARAMETER = """
INSERT INTO consumer_parameters (service, method, route, location, parameter, consumer_id, first_day,
                                 last_call, calls)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, method, route, location, parameter, consumer_id) DO UPDATE SET
    first_day = {least}(consumer_parameters.first_day, excluded.first_day),
    last_call = {greatest}(consumer_parameters.last_call, excluded.last_call),
    calls = consumer_parameters.calls + excluded.calls
"""
_UPSERT_PARAMETER = """
INSERT INTO parameters (service, method, route, location, parameter, first_seen, last_seen)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, method, route, location, parameter) DO UPDATE SET
    first_seen = {least}(parameters.first_seen, excluded.first_seen),
    last_seen = {greatest}(parameters.last_seen, excluded.last_seen)
"""
_UPSERT_FEEDBACK = """
INSERT INTO consumer_feedback (service, consumer_id, first_seen, last_seen, events)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (service, consumer_id) DO UPDATE SET
    first_seen = {least}(consumer_feedback.first_seen, excluded.first_seen),
    last_seen = {greatest}(consumer_feedback.last_seen, excluded.last_seen),
    events = consumer_feedback.events + excluded.events
"""
# The stored variant never changes (first assigned, on whichever replica wrote first); a row in
# another variant, or one carrying another, sets other_variant once.
_UPSERT_EXPERIMENT_CONSUMER = """
INSERT INTO experiment_consumers (service, experiment, consumer_id, variant, first_seen, last_seen,
                                  first_success, other_variant, requests)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, experiment, consumer_id) DO UPDATE SET
    first_seen = {least}(experiment_consumers.first_seen, excluded.first_seen),
    last_seen = {greatest}(experiment_consumers.last_seen, excluded.last_seen),
    first_success = {least}(COALESCE(experiment_consumers.first_success, excluded.first_success),
                            COALESCE(excluded.first_success, experiment_consumers.first_success)),
    other_variant = COALESCE(experiment_consumers.other_variant,
                             CASE WHEN excluded.variant <> experiment_consumers.variant
                                  THEN excluded.variant
                                  WHEN excluded.other_variant <> experiment_consumers.variant
                                  THEN excluded.other_variant END),
    requests = experiment_consumers.requests + excluded.requests
"""
_UPSERT_EXPERIMENT_DAY = """
INSERT INTO experiment_days (service, experiment, variant, day, requests, errors, client_errors,
                             duration_sum, spans, span_errors, span_client_errors)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, experiment, variant, day) DO UPDATE SET
    requests = experiment_days.requests + excluded.requests,
    errors = experiment_days.errors + excluded.errors,
    client_errors = experiment_days.client_errors + excluded.client_errors,
    duration_sum = experiment_days.duration_sum + excluded.duration_sum,
    spans = experiment_days.spans + excluded.spans,
    span_errors = experiment_days.span_errors + excluded.span_errors,
    span_client_errors = experiment_days.span_client_errors + excluded.span_client_errors
"""
_UPSERT_EXPERIMENT_LATENCY = """
INSERT INTO experiment_latency (service, experiment, variant, day, bucket, count, spans)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (service, experiment, variant, day, bucket) DO UPDATE SET
    count = experiment_latency.count + excluded.count,
    spans = experiment_latency.spans + excluded.spans
"""
# first_seen keeps the minimum across flushes and replicas: the release marker never moves later.
_UPSERT_RELEASE = """
INSERT INTO releases (service, version, first_seen, last_seen, requests)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (service, version) DO UPDATE SET
    first_seen = {least}(releases.first_seen, excluded.first_seen),
    last_seen = {greatest}(releases.last_seen, excluded.last_seen),
    requests = releases.requests + excluded.requests
"""
# PostgreSQL: the consumer-parameter pairs (the most numerous rows of a flush) arrive by COPY and
# are upserted in key order from there, as the activity rows are.
_STAGED_PARAMETERS = """(service TEXT, method TEXT, route TEXT, location TEXT, parameter TEXT,
    consumer_id TEXT, first_day INTEGER, last_call BIGINT, calls DOUBLE PRECISION)"""
_FAN_OUT_PARAMETERS = """INSERT INTO consumer_parameters (service, method, route, location, parameter,
        consumer_id, first_day, last_call, calls)
    SELECT service, method, route, location, parameter, consumer_id, MIN(first_day), MAX(last_call),
        SUM(calls)
    FROM staged_parameters WHERE true GROUP BY service, method, route, location, parameter, consumer_id
    ORDER BY service, method, route, location, parameter, consumer_id
    ON CONFLICT (service, method, route, location, parameter, consumer_id) DO UPDATE SET
        first_day = LEAST(consumer_parameters.first_day, excluded.first_day),
        last_call = GREATEST(consumer_parameters.last_call, excluded.last_call),
        calls = consumer_parameters.calls + excluded.calls"""

# A flush stages its activity rows in a temporary table and the database fans them out into the
# model's tables with one INSERT ... SELECT ... GROUP BY upsert each: the grouping runs in the
# engine (SQLite releases the GIL while it steps), not in Python beside the ingest threads.
# ORDER BY the key: replicas take row locks in one order and cannot deadlock (PostgreSQL).
_STAGED = """(day INTEGER, service TEXT, consumer_id TEXT, method TEXT, route TEXT, feature TEXT,
    client_name TEXT, client_version TEXT, calls DOUBLE PRECISION, errors DOUBLE PRECISION,
    last_call BIGINT)"""
_FAN_OUT = [
    """INSERT INTO endpoint_days (service, method, route, day, consumer_id, calls, errors, last_call)
    SELECT service, method, route, day, consumer_id, SUM(calls), SUM(errors), MAX(last_call)
    FROM staged_activity WHERE true GROUP BY service, method, route, day, consumer_id
    ORDER BY service, method, route, day, consumer_id
    ON CONFLICT (service, method, route, day, consumer_id) DO UPDATE SET
        calls = endpoint_days.calls + excluded.calls,
        errors = endpoint_days.errors + excluded.errors,
        last_call = {greatest}(endpoint_days.last_call, excluded.last_call)""",
    """INSERT INTO consumer_days (service, consumer_id, day, calls, errors)
    SELECT service, consumer_id, day, SUM(calls), SUM(errors)
    FROM staged_activity WHERE true GROUP BY service, consumer_id, day
    ORDER BY service, consumer_id, day
    ON CONFLICT (service, consumer_id, day) DO UPDATE SET
        calls = consumer_days.calls + excluded.calls,
        errors = consumer_days.errors + excluded.errors""",
    """INSERT INTO consumer_weeks (service, consumer_id, week, calls)
    SELECT service, consumer_id, (day + 3) / 7, SUM(calls)
    FROM staged_activity WHERE true GROUP BY service, consumer_id, (day + 3) / 7
    ORDER BY service, consumer_id, 3
    ON CONFLICT (service, consumer_id, week) DO UPDATE SET
        calls = consumer_weeks.calls + excluded.calls""",
    """INSERT INTO consumer_endpoints (service, method, route, consumer_id, first_day, last_call,
                                    calls, errors)
    SELECT service, method, route, consumer_id, MIN(day), MAX(last_call), SUM(calls), SUM(errors)
    FROM staged_activity WHERE true GROUP BY service, method, route, consumer_id
    ORDER BY service, method, route, consumer_id
    ON CONFLICT (service, method, route, consumer_id) DO UPDATE SET
        first_day = {least}(consumer_endpoints.first_day, excluded.first_day),
        last_call = {greatest}(consumer_endpoints.last_call, excluded.last_call),
        calls = consumer_endpoints.calls + excluded.calls,
        errors = consumer_endpoints.errors + excluded.errors""",
    """INSERT INTO consumer_features (service, feature, consumer_id, last_call, calls)
    SELECT service, feature, consumer_id, MAX(last_call), SUM(calls)
    FROM staged_activity WHERE feature <> '' GROUP BY service, feature, consumer_id
    ORDER BY service, feature, consumer_id
    ON CONFLICT (service, feature, consumer_id) DO UPDATE SET
        last_call = {greatest}(consumer_features.last_call, excluded.last_call),
        calls = consumer_features.calls + excluded.calls""",
    """INSERT INTO consumer_clients (service, client_name, client_version, consumer_id, last_call,
                                  calls)
    SELECT service, client_name, client_version, consumer_id, MAX(last_call), SUM(calls)
    FROM staged_activity WHERE true GROUP BY service, client_name, client_version, consumer_id
    ORDER BY service, client_name, client_version, consumer_id
    ON CONFLICT (service, client_name, client_version, consumer_id) DO UPDATE SET
        last_call = {greatest}(consumer_clients.last_call, excluded.last_call),
        calls = consumer_clients.calls + excluded.calls""",
]


# Retention, in this order: consumers last seen before the cutoff are tallied into
# retired_consumers (counters never go down), then every table drops what is older.
def _tally(source: str) -> str:
    """The upsert that adds the consumer rows of `source` to retired_consumers."""
    return f"""INSERT INTO retired_consumers (service, first_plan_tier, ttfs_bucket, consumers,
                                         ttfs_seconds)
    SELECT service, first_plan_tier, {{bucket}}, COUNT(*),
           SUM(CASE WHEN first_success IS NULL THEN 0
                    ELSE {{greatest}}(0, first_success - first_seen) END) / 1000.0
    FROM {source} GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (service, first_plan_tier, ttfs_bucket) DO UPDATE SET
        consumers = retired_consumers.consumers + excluded.consumers,
        ttfs_seconds = retired_consumers.ttfs_seconds + excluded.ttfs_seconds"""


_RETIRE = _tally("consumers WHERE last_seen < ?")
# PostgreSQL: replicas prune concurrently, so the tally reads what the DELETE returns.
_RETIRE_RETURNING = f"""WITH gone AS (
        DELETE FROM consumers WHERE last_seen < %s
        RETURNING service, first_plan_tier, first_seen, first_success),
    tally AS ({_tally("gone")}
        RETURNING 1)
    SELECT COUNT(*) FROM gone"""
_PRUNE = [
    ("consumers", "DELETE FROM consumers WHERE last_seen < ?", "ms"),
    ("consumer_endpoints", "DELETE FROM consumer_endpoints WHERE last_call < ?", "ms"),
    ("consumer_features", "DELETE FROM consumer_features WHERE last_call < ?", "ms"),
    ("consumer_clients", "DELETE FROM consumer_clients WHERE last_call < ?", "ms"),
    ("consumer_days", "DELETE FROM consumer_days WHERE day < ?", "day"),
    ("consumer_weeks", "DELETE FROM consumer_weeks WHERE week < ?", "week"),
    ("endpoint_days", "DELETE FROM endpoint_days WHERE day < ?", "day"),
    ("endpoints", "DELETE FROM endpoints WHERE last_seen < ?", "ms"),
    ("consumer_parameters", "DELETE FROM consumer_parameters WHERE last_call < ?", "ms"),
    ("parameters", "DELETE FROM parameters WHERE last_seen < ?", "ms"),
    ("consumer_feedback", "DELETE FROM consumer_feedback WHERE last_seen < ?", "ms"),
    ("experiment_consumers", "DELETE FROM experiment_consumers WHERE last_seen < ?", "ms"),
    ("experiment_days", "DELETE FROM experiment_days WHERE day < ?", "day"),
    ("experiment_latency", "DELETE FROM experiment_latency WHERE day < ?", "day"),
    # A release no request came from within the retention is no marker anyone compares against.
    ("releases", "DELETE FROM releases WHERE last_seen < ?", "ms"),
]
DAY_MS = 86_400_000
_UPSERTS = (
    _UPSERT_CONSUMER,
    _UPSERT_ENDPOINT,
    _UPSERT_CONSUMER_PARAMETER,
    _UPSERT_PARAMETER,
    _UPSERT_FEEDBACK,
    _UPSERT_EXPERIMENT_CONSUMER,
    _UPSERT_EXPERIMENT_DAY,
    _UPSERT_EXPERIMENT_LATENCY,
    _UPSERT_RELEASE,
)


def _complete(batch: tuple) -> ActivityBatch:
    """A batch with all ten row lists: shorter batches (consumers, activity and endpoints only, as
    tools and tests write them; the six lists of version 4, without the experiment and release
    lists of version 5) get empty lists. Experiment rows in the version-5 shape, without span
    counts, are taken as unsampled: their span counts are the weighted tallies rounded, as
    migration 6 sets them for stored rows."""
    if len(batch) < 10:
        batch = (*batch, *([] for _ in range(10 - len(batch))))
    days, latency = batch[7], batch[8]
    if any(len(row) == 8 for row in days) or any(len(row) == 6 for row in latency):
        days = [(*r, round(r[4]), round(r[5]), round(r[6])) if len(r) == 8 else r for r in days]
        latency = [(*r, round(r[5])) if len(r) == 6 else r for r in latency]
        batch = (*batch[:7], days, latency, batch[9])
    return batch


_BUCKET = ttfs_bucket_sql()


def _cutoffs(oldest_day: int) -> dict[str, int]:
    """The retention cutoff in each unit of _PRUNE."""
    return {"ms": oldest_day * DAY_MS, "day": oldest_day, "week": (oldest_day + 3) // 7}


class StoreError(ProcessorError):
    """The state database cannot be opened or written; the message says which and why."""


class Store:
    """Shared logic; subclasses supply the connection and the SQL dialect."""

    description: str
    _least = "min"
    _greatest = "max"
    _without_rowid = " WITHOUT ROWID"

    def _sql(self, sql: str) -> str:
        return sql.format(
            least=self._least, greatest=self._greatest, without_rowid=self._without_rowid, bucket=_BUCKET
        )

    def _statements(self, statements: list[str]) -> list[str]:
        return [self._sql(statement) for statement in statements]

    def migrate(self) -> int:
        """Apply missing migrations; returns the schema version now in place."""
        raise NotImplementedError

    def write(self, batch: ActivityBatch) -> None:
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        raise NotImplementedError

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        """Queries inside see one state of the store: a report whose families were read on either
        side of a flush would count a consumer as new but not yet active."""
        yield

    def prune(self, oldest_day: int) -> dict[str, int]:
        """Delete what is older than `oldest_day` (consumers last seen before it, tallied first in
        retired_consumers); returns the rows deleted per table."""
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
        self.refuse()
        self._interrupt_now()

    def refuse(self) -> None:
        """Refuse further statements (shutdown), at once: interrupt() may wait on the server."""
        self._interrupted = True

    @property
    def interrupted(self) -> bool:
        """True once interrupt() or refuse() was called: a long reader (the experiment checks)
        stops instead of failing on each statement left."""
        return self._interrupted

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
            raise StoreError(
                f"cannot create the folder of the SQLite state database {path}: {exc.strerror}"
            ) from None
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
            if reader:
                self._db.execute("PRAGMA query_only=1")
                mode = "wal"
            else:
                mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the SQLite state database {path} (state.sqlite.path): {exc}"
            ) from None
        if path != ":memory:" and mode.lower() != "wal":
            raise StoreError(f"SQLite state database {path} cannot use WAL mode (got {mode})")
        self._identity = self._file_identity()
        self._upserts = [self._sql(s) for s in _UPSERTS]
        self._fan_out = self._statements(_FAN_OUT)
        self._staged = False

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return info.st_dev, info.st_ino

    def fate(self) -> str | None:
        """ "deleted" or "replaced" when the path no longer names the file this connection has
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
            lines = [
                line.strip()
                for p in problems
                for line in str(p).splitlines()
                if line.strip() and not line.startswith("***")
            ]  # one message, one line
            raise StoreError(
                f"SQLite state database {self.path} is damaged (PRAGMA quick_check: "
                f"{'; '.join(lines[:5])}); restore it from a backup or move it away "
                "(state.sqlite.path)"
            )

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
                raise StoreError(
                    f"{self.description} has schema version {max(done)}, newer than "
                    f"this apiusage understands ({LATEST}); upgrade apiusage"
                )
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in self._statements(statements):
                    db.execute(statement)
                db.execute("INSERT INTO schema_migrations VALUES (?, ?)", (version, int(time.time() * 1000)))
            # SQLite opens a write-protected file read-only without a word and BEGIN succeeds:
            # only writing a page says so, and it must say so now, not at the first flush.
            db.execute("UPDATE schema_migrations SET applied_at = applied_at WHERE version = ?", (LATEST,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if (getattr(exc, "sqlite_errorname", "") or "").startswith("SQLITE_READONLY"):
                raise StoreError(
                    f"SQLite state database {self.path} is read-only ({exc}): make it "
                    "writable or point state.sqlite.path elsewhere"
                ) from None
            raise StoreError(f"cannot migrate {self.description} (state.sqlite.path): {exc}") from None
        return LATEST

    def write(self, batch: ActivityBatch) -> None:
        (
            consumers,
            activity,
            endpoints,
            consumer_parameters,
            parameters,
            feedback,
            experiment_consumers,
            experiment_days,
            experiment_latency,
            releases,
        ) = _complete(batch)
        db = self._db
        try:
            if not self._staged:
                db.execute(f"CREATE TEMP TABLE IF NOT EXISTS staged_activity {_STAGED}")
                self._staged = True
            db.execute("BEGIN IMMEDIATE")
            db.executemany(self._upserts[0], consumers)
            db.executemany(self._upserts[1], endpoints)
            # Deduplicated per pair in memory already: one upsert each, in key order, no staging.
            groups: tuple[list, ...] = (
                consumer_parameters,
                parameters,
                feedback,
                experiment_consumers,
                experiment_days,
                experiment_latency,
                releases,
            )
            for upsert, rows in zip(self._upserts[2:], groups, strict=True):
                if rows:
                    db.executemany(upsert, sorted(rows))
            if activity:
                db.executemany(
                    "INSERT INTO staged_activity VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", activity
                )
                for statement in self._fan_out:
                    db.execute(statement)
                db.execute("DELETE FROM staged_activity")
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

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        if self._db.in_transaction:  # the one connection of :memory: may be mid-write
            yield
            return
        try:
            self._db.execute("BEGIN")  # WAL: the snapshot is taken at the first read
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {self.description}: {exc}") from None
        try:
            yield
        finally:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")  # read only: nothing to keep

    def prune(self, oldest_day: int) -> dict[str, int]:
        db = self._db
        cutoff = _cutoffs(oldest_day)
        deleted: dict[str, int] = {}
        try:
            # One transaction per table: retention never holds the write lock for long.
            db.execute("BEGIN IMMEDIATE")
            db.execute(self._sql(_RETIRE), (cutoff["ms"],))
            for table, sql, unit in _PRUNE:
                if table != "consumers":
                    db.execute("BEGIN IMMEDIATE")
                deleted[table] = db.execute(sql, (cutoff[unit],)).rowcount
                db.execute("COMMIT")
            # Statistics for every table, sampled (analysis_limit): PRAGMA optimize analyzes only
            # the tables this connection queried, and statistics for `consumers` alone led the
            # planner into a quadratic join. Read connections load them when they next open.
            db.execute("PRAGMA analysis_limit=1000")
            db.execute("ANALYZE")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise StoreError(f"cannot delete from {self.description}: {exc}") from None
        return deleted

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
    _without_rowid = ""
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
            raise StoreError(f"cannot connect to the PostgreSQL state database: {str(exc).strip()}") from None
        info = self._db.info
        self.description = f"postgres://{info.host}:{info.port}/{info.dbname}"
        self._upserts = [self._sql(s).replace("?", "%s") for s in _UPSERTS]
        self._fan_out = self._statements(_FAN_OUT)

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
                    raise StoreError(
                        f"{self.description} has schema version {max(done)}, newer "
                        f"than this apiusage understands ({LATEST}); upgrade apiusage"
                    )
                for version, statements in MIGRATIONS:
                    if version in done:
                        continue
                    for statement in self._statements(statements):
                        self._conn.execute(statement)
                    self._conn.execute(
                        "INSERT INTO schema_migrations VALUES (%s, %s)", (version, int(time.time() * 1000))
                    )
        except self._psycopg.Error as exc:
            raise self._fail("migrate", exc) from None
        return LATEST

    def write(self, batch: ActivityBatch) -> None:
        (
            consumers,
            activity,
            endpoints,
            consumer_parameters,
            parameters,
            feedback,
            experiment_consumers,
            experiment_days,
            experiment_latency,
            releases,
        ) = _complete(batch)
        try:
            conn = self._conn
            with conn.transaction(), conn.cursor() as cur:
                # Sorted rows take row locks in one global order: replicas cannot deadlock.
                cur.executemany(self._upserts[0], sorted(consumers))
                cur.executemany(self._upserts[1], sorted(endpoints))
                groups: list[tuple[str, list]] = [
                    (self._upserts[3], parameters),
                    (self._upserts[4], feedback),
                ]
                groups += zip(
                    self._upserts[5:],
                    (experiment_consumers, experiment_days, experiment_latency, releases),
                    strict=True,
                )
                for upsert, rows in groups:
                    if rows:
                        cur.executemany(upsert, sorted(rows))
                if consumer_parameters:
                    cur.execute(
                        "CREATE TEMP TABLE IF NOT EXISTS staged_parameters "
                        f"{_STAGED_PARAMETERS} ON COMMIT DELETE ROWS"
                    )
                    with cur.copy("COPY staged_parameters FROM STDIN") as copy:
                        for row in consumer_parameters:
                            copy.write_row(row)
                    cur.execute(_FAN_OUT_PARAMETERS)
                if activity:
                    cur.execute(
                        f"CREATE TEMP TABLE IF NOT EXISTS staged_activity {_STAGED} ON COMMIT DELETE ROWS"
                    )
                    with cur.copy("COPY staged_activity FROM STDIN") as copy:
                        for fact in activity:
                            copy.write_row(fact)
                    for statement in self._fan_out:
                        cur.execute(statement)
        except self._psycopg.Error as exc:
            raise self._fail("write to", exc) from None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        self._check_interrupted()
        try:
            return self._conn.execute(sql.replace("?", "%s"), params).fetchall()
        except self._psycopg.Error as exc:
            raise self._fail("read", exc) from None

    @contextlib.contextmanager
    def consistent(self) -> Iterator[None]:
        try:
            conn = self._conn
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        except self._psycopg.Error as exc:
            raise self._fail("read", exc) from None
        try:
            yield
        finally:
            with contextlib.suppress(self._psycopg.Error):
                conn.execute("ROLLBACK")

    def prune(self, oldest_day: int) -> dict[str, int]:
        cutoff = _cutoffs(oldest_day)
        deleted: dict[str, int] = {}
        try:
            conn = self._conn
            # Tallied from the rows the DELETE really removed: a replica's flush that moves a
            # consumer's last_seen past the cutoff meanwhile keeps it, and it is not counted twice.
            ((deleted["consumers"],),) = conn.execute(self._sql(_RETIRE_RETURNING), (cutoff["ms"],))
            for table, sql, unit in _PRUNE[1:]:
                deleted[table] = conn.execute(sql.replace("?", "%s"), (cutoff[unit],)).rowcount
        except self._psycopg.Error as exc:
            raise self._fail("delete from", exc) from None
        return deleted

    def close(self) -> None:
        self._db.close()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        try:
            return self._conn.execute(sql.replace("?", "%s"), params).rowcount
        except self._psycopg.Error as exc:
            raise self._fail("write to", exc) from None


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
