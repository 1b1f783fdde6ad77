"""The state service: one thread that flushes consumer activity, refreshes the business metrics
from the store, applies retention and reloads the plan lookup, each on its own interval."""

from __future__ import annotations

import logging
import threading
import time

from ..config import LimitsConfig, StateConfig
from ..derive.plans import PlanLookup, PlanLookupError
from ..telemetry import PipelineStats
from .activity import DAY_MS, ConsumerActivity
from .report import ConsumerReport, build_report
from .store import Store, StoreError, open_store

__all__ = ["StateService", "StateHealth"]

log = logging.getLogger("apiusage.processor.state")
_RETENTION_EVERY = 3600.0


class StateHealth:
    def __init__(self) -> None:
        self.flushes = {"success": 0, "failure": 0}
        self.refreshes = {"success": 0, "failure": 0}
        self.last_flush_success = 0.0
        self.last_flush_seconds = 0.0
        self.last_refresh_seconds = 0.0
        self.rows_written = 0
        self.up = True  # False from a failed flush until the next one succeeds


class StateService:
    def __init__(self, config: StateConfig, activity: ConsumerActivity, catalog=None,
                 plans: PlanLookup | None = None, plans_interval: float = 300.0,
                 limits: LimitsConfig | None = None, stats: PipelineStats | None = None) -> None:
        self.config = config
        self.limits = limits  # label limits of the consumer families (None: no folding)
        self._stats = stats
        self.activity = activity
        self.catalog = catalog
        self.plans = plans
        self._plans_interval = plans_interval
        self.health = StateHealth()
        self.report = ConsumerReport()
        self.store: Store | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiusage-state", daemon=True)
        self._lock = threading.Lock()  # one user of the connection at a time

    def open(self) -> None:
        """Open and migrate the store; raises StoreError (start-up fails with its message)."""
        self.store = open_store(self.config)
        if self.plans is not None:
            self._reload_plans()

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        now = time.monotonic()
        next_flush = now + self.config.flush_interval
        next_refresh = now
        next_retention = now
        next_plans = now + self._plans_interval
        while not self._stop.wait(0.05):
            now = time.monotonic()
            if now >= next_flush:
                self.flush()
                next_flush = now + self.config.flush_interval
            if now >= next_refresh:
                self.refresh()
                next_refresh = now + self.config.refresh_interval
            if now >= next_retention:
                self.apply_retention()
                next_retention = now + _RETENTION_EVERY
            if self.plans is not None and now >= next_plans:
                self._reload_plans()
                next_plans = now + self._plans_interval

    def flush(self) -> bool:
        """Write what accumulated since the last flush; on failure keep it for the next one."""
        batch = self.activity.drain()
        if not any(batch):
            return True
        start = time.monotonic()
        try:
            with self._lock:
                self.store.write(batch)
        except StoreError as exc:
            self.activity.restore(batch)
            self.health.flushes["failure"] += 1
            if self.health.up:
                log.error("state flush failed; counting in memory and retrying: %s", exc)
            self.health.up = False
            return False
        if not self.health.up:
            log.info("state store is back; caught up %d rows", sum(len(rows) for rows in batch))
        self.health.up = True
        self.health.flushes["success"] += 1
        self.health.last_flush_success = time.time()
        self.health.last_flush_seconds = time.monotonic() - start
        self.health.rows_written += sum(len(rows) for rows in batch)
        return True

    def refresh(self, now_ms: int | None = None) -> None:
        """Recompute the business metrics; `now_ms` pins the clock (tests, reports)."""
        start = time.monotonic()
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        try:
            with self._lock:
                self.report = build_report(self.store, now_ms, self.catalog, self.limits)
        except StoreError as exc:
            self.health.refreshes["failure"] += 1
            log.error("state metrics refresh failed: %s", exc)
            return
        self.health.refreshes["success"] += 1
        self.health.last_refresh_seconds = time.monotonic() - start
        if self._stats is not None:
            for (metric, label), (_, series) in self.report.folded.items():
                self._stats.overflow(metric, label, series)

    def apply_retention(self) -> None:
        oldest = int(time.time() * 1000) // DAY_MS - self.config.retention_days
        try:
            with self._lock:
                deleted = self.store.delete_activity_before(oldest)
        except StoreError as exc:
            log.error("state retention failed: %s", exc)
            return
        if deleted:
            log.info("retention: deleted %d daily activity rows older than %d days", deleted,
                     self.config.retention_days)

    def read(self, fn):
        """Run `fn(store)` with the connection to itself (admin requests)."""
        with self._lock:
            return fn(self.store)

    def _reload_plans(self) -> None:
        def query(sql: str) -> list[tuple]:
            with self._lock:
                return self.store.query(sql)

        try:
            n = self.plans.load(query)
        except PlanLookupError as exc:
            log.error("%s (keeping the previous %d entries)", exc, len(self.plans.plans))
            return
        log.debug("plan lookup: %d consumers", n)

    def stop(self) -> None:
        """Stop the thread, write what is left, close the store."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        if self.store is not None:
            self.flush()
            self.store.close()
