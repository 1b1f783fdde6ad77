"""The state service: flushes consumer activity, refreshes the business metrics from the store,
applies retention and reloads the plan lookup.

Two threads with their own connections, so neither waits for the other: the flush
thread writes every `flush_interval` (and applies retention hourly); the refresh
thread recomputes the report every `refresh_interval` and reloads the plan lookup.
Admin requests read on a third connection.  A refresh that takes minutes therefore
delays no flush, and a kill -9 loses at most one flush interval (plus the flush in
progress).  SQLite in WAL mode lets readers run beside the writer; PostgreSQL gets
separate sessions.  With several replicas on PostgreSQL only the one holding the refresh
lease (state/lease.py) recomputes; it stores each report and the others load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .. import selfmetrics
from ..config import LimitsConfig, StateConfig
from ..derive.plans import PlanLookup
from ..telemetry import PipelineStats
from . import snapshot
from .activity import DAY_MS, ConsumerActivity
from .lease import AdvisoryLease, Lease, SoleLeader
from .report import ConsumerReport, build_report
from .snapshot import SnapshotError
from .store import (
    ActivityBatch,
    ActivityRow,
    ConsumerParameterRow,
    ExperimentConsumerRow,
    SqliteStore,
    Store,
    StoreError,
    _complete,
    open_store,
)

if TYPE_CHECKING:
    from apiusage.conventions.catalog import Catalog

__all__ = ["StateService", "StateHealth"]

log = logging.getLogger("apiusage.processor.state")
_RETENTION_EVERY = 3600.0
# Shutdown: the flush in progress and the final flush share this bound (docs/state.md, Durability);
# past it, what is not written is reported lost (exit 1) so a supervisor's kill never comes first.
_STOP_TIMEOUT = 10.0
_STOP_FLOOR = 1.0  # of a shutdown whose deadline has (nearly) passed
_STOP_REFRESH = 2.0  # an interrupted refresh returns at once; a stuck one is not waited for longer
_FINAL_CHUNK = 20_000  # rows per transaction of the final flush: the bound is checked between them
_STUCK_FLOOR = 5.0  # a flush running past max(this, 3 flush intervals) counts as the store down
T = TypeVar("T")
#: The experiment checks' hook (experiments/checks.py ExperimentChecker, wired by app.py): given
#: the refresher's store, the refresh's clock and the report being built, it fills the report's
#: experiment fields and answers how many experiments it checked per outcome.
ExperimentChecksHook = Callable[[Store, int, ConsumerReport], Mapping[str, int]]


class StateHealth:
    def __init__(self, stuck_after: float = 15.0) -> None:
        self.stuck_after = stuck_after
        self.flush_started: float | None = None  # monotonic start of the running write
        self.stuck_logged = False
        self.flushes = {"success": 0, "failure": 0}
        self.refreshes = {"success": 0, "failure": 0}
        self.last_flush_success = 0.0
        self.last_flush_seconds = 0.0
        self.refresh_seconds = 0.0  # the last finished refresh
        self.refresh_started: float | None = None  # monotonic start of the running refresh
        self.rows_written = 0
        self.flush_ok = True  # False from a failed flush until the next one succeeds
        self.refresh_ok = True  # False from a failed refresh until the next one succeeds
        self.leader = False  # this replica computes the consumer metrics (the others load them)
        self.publish_ok = True  # False from a failed publication of the report until one succeeds
        # Experiment checks of the leader's refreshes, per experiment (experiments/checks.py)
        self.experiment_checks = {"success": 0, "failure": 0, "unavailable": 0}

    @property
    def last_refresh_seconds(self) -> float:
        """The last refresh's duration, or the running one's so far when longer: a refresh that
        hangs shows in `apiusage_state_refresh_duration_seconds` while it runs."""
        started = self.refresh_started
        running = time.monotonic() - started if started is not None else 0.0
        return max(self.refresh_seconds, running)

    def stuck_for(self) -> float:
        """Seconds the running write has taken, when past `stuck_after`; else 0."""
        started = self.flush_started
        running = time.monotonic() - started if started is not None else 0.0
        return running if running > self.stuck_after else 0.0

    @property
    def up(self) -> bool:
        """The last flush reached the store and none is stuck (`apiusage_state_up`); refresh
        failures are counted in `refreshes` and logged.

        A write that never returns (a PostgreSQL server that is stopped but whose kernel still
        acknowledges, a lock held by another process) fails no flush: without this the state
        would look up while the backlog grows to its bound."""
        stuck = self.stuck_for()
        if stuck and not self.stuck_logged:
            self.stuck_logged = True
            log.error(
                "state flush has been writing for %.0fs (more than %.0fs): the state store "
                "is not answering; counting in memory",
                stuck,
                self.stuck_after,
            )
        return self.flush_ok and not stuck


def stop_bound() -> float:
    """The longest StateService.stop() takes: the final flush's bound, and the rollback after it."""
    return _STOP_TIMEOUT + _STOP_REFRESH


class StateService:
    """A component (component.py): open() when built, start() runs the two threads, shutdown()
    writes what is left; the last component with data to stop, after the worker's drain."""

    name = "state"
    families = selfmetrics.owned_by("state")

    def __init__(
        self,
        config: StateConfig,
        activity: ConsumerActivity,
        catalog: Catalog | None = None,
        plans: PlanLookup | None = None,
        plans_interval: float = 300.0,
        limits: LimitsConfig | None = None,
        stats: PipelineStats | None = None,
        experiment_checks: ExperimentChecksHook | None = None,
    ) -> None:
        self.config = config
        self._experiment_checks = experiment_checks
        self.limits = limits  # label limits of the consumer families (None: no folding)
        self._stats = stats
        self.activity = activity
        self.catalog = catalog
        self.plans = plans
        self._plans_interval = plans_interval
        self.health = StateHealth(max(_STUCK_FLOOR, 3 * config.flush_interval))
        self.report = ConsumerReport()
        self._lease: Lease | None = None  # who computes the report (state/lease.py)
        self._snapshot_version: int | None = None  # of the published report last loaded
        self._snapshot_writer = ""
        # The replica's name in report_snapshot.writer (which replica computed what is exposed);
        # the suffix tells apart two services of one process, and a restart.
        self.identity = f"{socket.gethostname()[:64]}:{os.getpid()}:{secrets.token_hex(3)}"
        self.store: Store | None = None  # the writer: flushes and retention
        self._refresher: Store | None = None
        self._reader: Store | None = None  # admin requests
        self._stop = threading.Event()
        self._stopped = False
        self._failing: set[str] = set()  # tasks whose last run raised unexpectedly
        # Set while the SQLite file was deleted or replaced and the connections are closed:
        # (what happened, the copy saved from the old file or None).
        self._reopen: tuple[str, str | None] | None = None
        self._write_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._flusher = threading.Thread(target=self._flush_loop, name="apiusage-state-flush", daemon=True)
        self._refreshing = threading.Thread(
            target=self._refresh_loop, name="apiusage-state-refresh", daemon=True
        )

    def open(self) -> None:
        """Open and migrate the store and its read connections; raises StoreError."""
        self.store = open_store(self.config)
        try:
            self._refresher = self.store.reader()
            self._reader = self.store.reader()
        except StoreError:
            self._close_stores()
            raise
        if self._refresher is self.store:  # one connection (SQLite :memory:): one lock
            self._refresh_lock = self._read_lock = self._write_lock
        try:
            self._seed_names()
        except StoreError:
            self._close_stores()
            raise
        self._take_lease()
        if self.plans is not None:
            self._reload_plans()

    def _take_lease(self) -> None:
        """Set up leadership, and expose the last published report until the first refresh
        (which at 100k consumers on a cold cache can take minutes)."""
        if self.config.postgres is not None:
            self._lease = AdvisoryLease(self.config.postgres.dsn)
        else:
            self._lease = SoleLeader(self._write_snapshot)
        try:
            report = self._load_snapshot()
        except (StoreError, SnapshotError) as exc:
            log.warning(
                "the last consumer report cannot be read (%s); the consumer metrics appear "
                "after the first refresh",
                exc,
            )
            return
        if report is not None:
            self.report = report
            log.info(
                "exposing the last consumer report (computed at %s by %s) until the first refresh",
                time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.generated_ms / 1000)),
                self._snapshot_writer,
            )

    def _seed_names(self) -> None:
        """Admit the parameter names the store holds, first seen first, so that a restart does
        not admit `max_names_per_route` new ones per endpoint."""
        activity = self.activity
        # The first bound + (most names one endpoint declares) rows of an endpoint hold its first
        # `bound` undeclared names: no more are read, whatever an unbounded older version stored.
        most = activity.max_names_per_route + activity.most_declared()
        rows = _opened(self.store, "store").query(
            "SELECT service, method, route, location, parameter, last_seen FROM ("
            "SELECT service, method, route, location, parameter, last_seen, first_seen, ROW_NUMBER() "
            "OVER (PARTITION BY service, method, route ORDER BY first_seen, location, parameter) AS n "
            "FROM parameters WHERE last_seen >= ?) AS p WHERE n <= ? "
            "ORDER BY service, method, route, first_seen, location, parameter",
            (self._oldest_day(int(time.time() * 1000)) * DAY_MS, most),
        )
        activity.seed_names(rows)

    def start(self) -> None:
        self._flusher.start()
        self._refreshing.start()

    def shutdown(self, deadline: float) -> bool:
        """stop() within `deadline` when started; close() when start-up failed before start().

        Even past the deadline the flush thread gets _STOP_FLOOR to notice the stop: cut at
        once, an idle flusher would be taken for a stuck flush and its rows reported lost."""
        if self._flusher.ident is None:
            self.close()
            return True
        return self.stop(max(deadline, time.monotonic() + _STOP_FLOOR))

    def _flush_loop(self) -> None:
        next_retention = time.monotonic()
        while not self._stop.wait(self.config.flush_interval):
            self._guarded("flush", self.flush)
            if time.monotonic() >= next_retention and not self._stop.is_set():
                self._guarded("retention", self.apply_retention)
                next_retention = time.monotonic() + _RETENTION_EVERY

    def _refresh_loop(self) -> None:
        next_plans = time.monotonic() + self._plans_interval
        while not self._stop.is_set():
            self._guarded("refresh", self.refresh)
            if self.plans is not None and time.monotonic() >= next_plans and not self._stop.is_set():
                self._guarded("plan lookup reload", self._reload_plans)
                next_plans = time.monotonic() + self._plans_interval
            self._stop.wait(self.config.refresh_interval)

    def _guarded(self, what: str, task: Callable[[], object]) -> None:
        # A bug or an unforeseen error in one task must not end the thread: flushes would stop.
        try:
            task()
        except Exception:
            if what not in self._failing:  # once per episode, not every interval
                self._failing.add(what)
                log.exception("state %s failed unexpectedly; the next one runs on schedule", what)
            if what == "flush":
                self.health.flushes["failure"] += 1
                self.health.flush_ok = False
            elif what == "refresh":
                self.health.refreshes["failure"] += 1
                self.health.refresh_ok = False
        else:
            self._failing.discard(what)

    def flush(self) -> bool:
        """Write what accumulated since the last flush; on failure keep it for the next one."""
        # Waiting for the write lock counts as writing: retention or a report being stored that
        # waits on a store that does not answer holds it, and that is the store not answering.
        if self.activity.pending():
            self.health.flush_started = time.monotonic()
        try:
            return self._flush()
        finally:
            self.health.flush_started = None

    def _flush(self) -> bool:
        with self._write_lock:
            batch = self.activity.drain()
            if not any(batch):
                self.activity.written()
                return True
            start = self.health.flush_started = self.health.flush_started or time.monotonic()
            try:
                self._follow_file()
                _opened(self.store, "store").write(batch)
            except StoreError as exc:
                self.activity.restore(batch)
                self.health.flushes["failure"] += 1
                if self.health.flush_ok:
                    log.error("state flush failed; counting in memory and retrying: %s", exc)
                self.health.flush_ok = False
                return False
            except BaseException:
                self.activity.restore(batch)  # keep the rows; the caller logs and counts
                raise
            finally:
                self.health.flush_started = None
                if self.health.stuck_logged:
                    self.health.stuck_logged = False
                    log.info("state flush returned after %.0fs", time.monotonic() - start)
            self.activity.written()
        rows = sum(len(rows) for rows in batch)
        if not self.health.flush_ok:
            log.info("state store is back; caught up %d rows", rows)
        self.health.flush_ok = True
        self.health.flushes["success"] += 1
        self.health.last_flush_success = time.time()
        self.health.last_flush_seconds = time.monotonic() - start
        self.health.rows_written += rows
        return True

    def _follow_file(self) -> None:
        """Keep writing to the file at state.sqlite.path when it was deleted (recreated from the
        open connection, history included) or replaced (the new file is used); raises StoreError.

        An open SQLite file that is unlinked lives on: without this, every flush would succeed
        into a file nobody can open again, and all of it would vanish at the next restart."""
        if self._reopen is None:
            store = self.store
            if not isinstance(store, SqliteStore):
                return
            fate = store.fate()
            if fate is None:
                return
            copy = None
            with self._refresh_lock, self._read_lock:
                if fate == "deleted":
                    copy = f"{store.path}.recovered"
                    try:  # `rm -r` of the whole state folder
                        os.makedirs(os.path.dirname(os.path.abspath(copy)), exist_ok=True)
                    except OSError as exc:
                        raise StoreError(f"cannot create the folder of {copy}: {exc.strerror}") from None
                    _remove_database(copy)
                    store.save_copy(copy)  # failing, the old connections stay: retried next flush
                # The old connections go before the path is opened again: they would share its
                # -wal and -shm files with the new one.
                self._close_stores()
            self._reopen = (fate, copy)
            log.error(
                "SQLite state database %s was %s while the processor ran: %s",
                store.path,
                fate,
                "recreating it from the open connection, history included"
                if copy
                else "writing to the new file from now on (the old one's rows are not in it)",
            )
        fate, copy = self._reopen
        path = self.config.sqlite.path if self.config.sqlite else "apiusage-state.db"
        with self._refresh_lock, self._read_lock:
            try:
                if copy is not None and not os.path.exists(path):
                    os.replace(copy, path)
            except OSError as exc:
                raise StoreError(f"cannot move {copy} to {path}: {exc.strerror}") from None
            store = open_store(self.config)
            try:
                self._refresher, self._reader = store.reader(), store.reader()
            except StoreError:
                store.close()
                raise
            self.store = store
        self._reopen = None
        log.info("SQLite state database %s is in use again", path)

    def refresh(self, now_ms: int | None = None) -> None:
        """Recompute the business metrics and publish them when this replica leads (always on
        SQLite); otherwise load the newest report the leader published.  `now_ms` pins the clock
        of a computation (tests, reports)."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        try:
            with self._refresh_lock:
                start = self.health.refresh_started = time.monotonic()
                try:
                    leader = self._lease is not None and self._lease.check()
                    self._lead(leader)
                    report: ConsumerReport | None
                    if leader:
                        report = build_report(
                            _opened(self._refresher, "refresher"),
                            now_ms,
                            self.catalog,
                            self.limits,
                            self._oldest_day(now_ms),
                        )
                        self._check_experiments(report, now_ms)
                    else:
                        report = self._load_snapshot()  # None: nothing new since the last one
                finally:
                    self.health.refresh_started = None
        except (StoreError, SnapshotError) as exc:
            if self._stop.is_set():
                return  # interrupted by shutdown: not a failure of the store
            self.health.refreshes["failure"] += 1
            if self.health.refresh_ok:
                log.error("state metrics refresh failed; the previous values stay exported: %s", exc)
            self.health.refresh_ok = False
            return
        if report is not None:
            self.report = report  # one swap: a scrape sees the old report or the new one
            if self._stats is not None:
                for (metric, label), (_, series) in report.folded.items():
                    self._stats.overflow(metric, label, series)
        if not self.health.refresh_ok:
            log.info("state metrics refresh works again")
        self.health.refresh_ok = True
        self.health.refreshes["success"] += 1
        self.health.refresh_seconds = time.monotonic() - start
        if leader and report is not None:
            # Outside the refresh lock: on SQLite the write waits for the flush lock, and a
            # flush that reopens a deleted file takes the refresh lock inside it.
            self._publish(report)

    def _check_experiments(self, report: ConsumerReport, now_ms: int) -> None:
        """The experiment checks into `report`; a failure leaves the other consumer metrics be."""
        if self._experiment_checks is None:
            return
        try:
            outcomes = self._experiment_checks(_opened(self._refresher, "refresher"), now_ms, report)
        except Exception:  # the hook handles each experiment's errors: this is a bug in it
            if self._stop.is_set():  # or shutdown closed the store under it
                raise StoreError("state refresh interrupted by shutdown") from None
            if "experiment checks" not in self._failing:
                self._failing.add("experiment checks")
                log.exception(
                    "experiment checks failed unexpectedly; the other consumer metrics are exported"
                )
            outcomes = {"failure": 1}
        else:
            self._failing.discard("experiment checks")
        for outcome, n in outcomes.items():
            self.health.experiment_checks[outcome] = self.health.experiment_checks.get(outcome, 0) + n
        if self._stop.is_set():  # interrupted by shutdown: a report missing checks is not published
            raise StoreError("state refresh interrupted by shutdown")

    def _lead(self, leader: bool) -> None:
        if leader != self.health.leader:
            if leader:
                log.info(
                    "this replica now computes the consumer metrics (%s)",
                    _opened(self._lease, "lease").description,
                )
            else:
                log.info("another replica computes the consumer metrics; serving what it publishes")
        self.health.leader = leader

    def _publish(self, report: ConsumerReport) -> None:
        """Store the report for the other replicas (and for this one's next start)."""
        try:
            published = _opened(self._lease, "lease").publish(
                snapshot.PUBLISH_SQL,
                (report.generated_ms, int(time.time() * 1000), self.identity, snapshot.dumps(report)),
            )
        except StoreError as exc:
            if self.health.publish_ok:
                log.error(
                    "cannot store the consumer report (the other replicas, and this one after "
                    "a restart, serve an older one): %s",
                    exc,
                )
            self.health.publish_ok = False
            return
        if not published:  # the lease was lost while computing: the new leader's report stands
            log.info("lost the refresh lease while computing; this report is not published")
            self._lead(False)
            return
        if not self.health.publish_ok:
            log.info("the consumer report is stored again")
        self.health.publish_ok = True

    def _write_snapshot(self, sql: str, params: Sequence[Any]) -> int:
        with self._write_lock:
            return _opened(self.store, "store").execute(sql, params)

    def _load_snapshot(self) -> ConsumerReport | None:
        """The newest published report when it is not the one loaded last; raises StoreError,
        SnapshotError."""
        rows = _opened(self._refresher, "refresher").query(snapshot.SELECT_SQL)
        if not rows:
            return None
        version, _, writer, data = rows[0]
        if version == self._snapshot_version and writer == self._snapshot_writer:
            return None
        report = snapshot.loads(data)
        if writer != self._snapshot_writer:
            log.info("consumer metrics: serving the report computed by %s", writer)
        self._snapshot_version, self._snapshot_writer = version, writer
        return report

    def _oldest_day(self, now_ms: int) -> int:
        """The first day retention keeps."""
        return now_ms // DAY_MS - self.config.retention_days

    def apply_retention(self) -> None:
        oldest = self._oldest_day(int(time.time() * 1000))
        try:
            with self._write_lock:
                deleted = _opened(self.store, "store").prune(oldest)
        except StoreError as exc:
            log.error("state retention failed: %s", exc)
            return
        # Only after the rows are gone: a name forgotten before would let a new one take its place
        # while its row is still stored.
        self.activity.forget_names(oldest * DAY_MS)
        if any(deleted.values()):
            log.info(
                "retention: deleted rows older than %d days: %s",
                self.config.retention_days,
                ", ".join(f"{n} {table}" for table, n in deleted.items() if n),
            )

    def read(self, fn: Callable[[Store], T]) -> T:
        """Run `fn(store)` on the admin read connection (never behind a flush or a refresh)."""
        with self._read_lock:
            return fn(_opened(self._reader, "reader"))

    def _reload_plans(self) -> None:
        plans = _opened(self.plans, "plans")

        def query(sql: str) -> list[tuple[Any, ...]]:
            with self._refresh_lock:
                return _opened(self._refresher, "refresher").query(sql)

        try:
            n = plans.load(query)
        except Exception as exc:  # whatever a hand-edited file or query does: keep the old table
            log.error("%s (keeping the previous %d entries)", exc, len(plans.plans))
            return
        log.debug("plan lookup: %d consumers", n)

    def stop(self, deadline: float | None = None) -> bool:
        """Stop both threads (interrupting a refresh), write what is left within _STOP_TIMEOUT
        (and by `deadline`, a monotonic time, if sooner), close the store.

        Returns False when rows could not be written (they are lost; the log says how many)."""
        if self._stopped:
            return True
        self._stopped = True
        bound = time.monotonic() + _STOP_TIMEOUT
        deadline = bound if deadline is None else min(bound, deadline)
        self._stop.set()
        if self._refresher is not None and self._refresher is not self.store:
            self._refresher.refuse()  # now, not when the interrupting thread runs: close() may be first
            _interrupt(self._refresher)  # a refresh can take minutes; shutdown does not wait
        if self._refreshing.is_alive():  # interrupted, it returns at once; stuck, it is left
            self._refreshing.join(min(_STOP_REFRESH, max(0.0, deadline - time.monotonic())))
        self._release_lease()  # handover: another replica computes from its next refresh
        if self._flusher.is_alive():  # a flush in progress finishes, within the bound
            self._flusher.join(max(0.0, deadline - time.monotonic()))
        ok = True
        if self.store is not None:
            ok = self._final_flush(self.store, deadline)
        self._close_stores()
        return ok

    def _final_flush(self, store: Store, deadline: float) -> bool:
        """Write what is left to `store` (or, once _follow_file() reopened it, to the new one)."""
        if self._flusher.is_alive():  # still inside a flush at the bound: roll it back, so the
            # connection closes cleanly (a SQLite WAL merged) instead of dying mid-transaction
            _interrupt(store)
            self._flusher.join(_STOP_REFRESH)
            log.error(
                "state flush still running after %.0fs at shutdown: interrupted; %d rows "
                "not written to %s are lost",
                _STOP_TIMEOUT,
                self.activity.pending(),
                store.description,
            )
            return False
        batch = self.activity.drain()
        total = sum(len(rows) for rows in batch)
        if not total:
            self.activity.written()
            return True
        # Past the bound the writer is interrupted: one chunk never runs far beyond it.
        watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), store.interrupt)
        watchdog.daemon = True
        watchdog.start()
        written, slowest, failed = 0, 0.0, False
        try:
            with self._write_lock:
                self._follow_file()
            for chunk in _chunks(batch, _FINAL_CHUNK):
                if written and time.monotonic() + slowest > deadline:
                    break  # the next chunk would not fit: stop at a transaction boundary
                started = time.monotonic()
                with self._write_lock:
                    _opened(self.store, "store").write(chunk)
                slowest = max(slowest, time.monotonic() - started)
                written += sum(len(rows) for rows in chunk)
        except StoreError as exc:
            failed = time.monotonic() < deadline  # else the watchdog stopped it: out of time
            log.debug("state final flush stopped: %s", exc)
        except Exception:
            log.exception("state final flush failed")
            failed = True
        finally:
            watchdog.cancel()
            self.activity.written()  # nothing is retried after this: the rows are in or lost
        self.health.rows_written += written
        if failed:
            log.error(
                "state final flush failed: %d rows not written to %s are lost",
                total - written,
                _opened(self.store, "store").description,
            )
            return False
        if written < total:
            log.error(
                "state final flush: %d of %d rows not written to %s within the %gs shutdown bound are lost",
                total - written,
                total,
                _opened(self.store, "store").description,
                _STOP_TIMEOUT,
            )
            return False
        self.health.flushes["success"] += 1
        return True

    def close(self) -> None:
        """Close the connections of a service that never started (start-up failed)."""
        self._release_lease()
        self._close_stores()

    def _release_lease(self) -> None:
        if self._lease is not None:
            self._lease.release()
        self.health.leader = False

    def _close_stores(self) -> None:
        closed: list[Store] = []
        for store in (self._reader, self._refresher, self.store):
            if store is not None and all(store is not c for c in closed):
                try:
                    store.close()
                except Exception:  # noqa: BLE001 - closing at shutdown: nothing left to save
                    pass
                closed.append(store)


def _opened(value: T | None, what: str) -> T:
    """`value`, which open() (or the constructor) sets before any thread or request uses it."""
    if value is None:
        raise RuntimeError(f"StateService.{what} is not set: open() the service first")
    return value


def _interrupt(store: Store) -> None:
    """Interrupt what runs on `store` without waiting: a PostgreSQL cancel to a server that
    does not answer takes its full timeout (2 s), which shutdown does not spend."""
    threading.Thread(target=store.interrupt, name="apiusage-state-interrupt", daemon=True).start()


def _chunks(batch: ActivityBatch, size: int) -> Iterator[ActivityBatch]:
    """The batch in parts of about `size` rows, each holding whole consumers (their consumer row
    with all their activity, parameter and experiment rows), the endpoint, parameter, feedback,
    experiment tally and release rows in the first: every part committed is a consistent store,
    whatever happens to the next."""
    (
        consumers,
        activity,
        endpoints,
        pairs,
        parameters,
        feedback,
        exp_consumers,
        exp_days,
        exp_latency,
        releases,
    ) = _complete(batch)
    by_consumer: dict[tuple[str, str], list[ActivityRow]] = {}
    for act in activity:  # (day, service, consumer_id, ...)
        by_consumer.setdefault((act[1], act[2]), []).append(act)
    pairs_of: dict[tuple[str, str], list[ConsumerParameterRow]] = {}
    for pair in pairs:  # (service, method, route, location, parameter, consumer_id, ...)
        pairs_of.setdefault((pair[0], pair[5]), []).append(pair)
    exposed: dict[tuple[str, str], list[ExperimentConsumerRow]] = {}
    for exp in exp_consumers:  # (service, experiment, consumer_id, ...)
        exposed.setdefault((exp[0], exp[2]), []).append(exp)
    part: ActivityBatch = (
        [], [], list(endpoints), [], list(parameters), list(feedback),
        [], list(exp_days), list(exp_latency), list(releases),
    )  # fmt: skip
    rows = len(endpoints) + len(parameters) + len(feedback) + len(exp_days) + len(exp_latency) + len(releases)
    for row in consumers:  # (service, consumer_id, ...)
        mine = by_consumer.pop((row[0], row[1]), [])
        theirs = pairs_of.pop((row[0], row[1]), [])
        trials = exposed.pop((row[0], row[1]), [])
        part[0].append(row)
        part[1].extend(mine)
        part[3].extend(theirs)
        part[6].extend(trials)
        rows += 1 + len(mine) + len(theirs) + len(trials)
        if rows >= size:
            yield part
            part, rows = ([], [], [], [], [], [], [], [], [], []), 0
    # Rows whose consumer row was written before (activity: none today; exposures: a consumer of
    # an exposure sink fed apart from consume()).
    for mine in by_consumer.values():
        part[1].extend(mine)
        rows += len(mine)
    for theirs in pairs_of.values():
        part[3].extend(theirs)
        rows += len(theirs)
    for trials in exposed.values():
        part[6].extend(trials)
        rows += len(trials)
        if rows >= size:
            yield part
            part, rows = ([], [], [], [], [], [], [], [], [], []), 0
    if rows:
        yield part


def _remove_database(path: str) -> None:
    for name in (path, f"{path}-wal", f"{path}-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name)
