"""A catalog of many `*` entries against many observed routes: the report stays linear."""

from __future__ import annotations

import sqlite3
import time

import pytest
from apiusage.conventions.catalog import parse_catalog
from apiusage.processor.config import SqliteState, StateConfig
from apiusage.processor.state.activity import DAY_MS
from apiusage.processor.state.report import build_report, deprecated_endpoints
from apiusage.processor.state.store import open_store

pytestmark = pytest.mark.slow  # 20,000 catalog entries against 20,000 observed routes

ENTRIES = 20_000
METHODS = ("GET", "POST", "PUT", "DELETE")


def test_star_entries_are_matched_by_index_not_by_scanning_every_observed_route(tmp_path) -> None:
    """Each `*` entry scanned every observed endpoint for its methods: 20,000 entries against
    20,000 observed rows took over two minutes here, a catalog of 100,000 routes far longer."""
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db")))
    open_store(config).close()  # creates the schema
    now = 400 * DAY_MS
    with sqlite3.connect(tmp_path / "s.db") as conn:
        conn.executemany(
            "INSERT INTO endpoints (service, method, route, deprecated, first_seen, last_seen) "
            "VALUES (?, ?, ?, 0, ?, ?)",
            [("svc", m, f"/v1/r{i}/:id", now - DAY_MS, now) for i in range(ENTRIES // 4) for m in METHODS],
        )
    catalog = parse_catalog(
        {
            "services": {
                "svc": {
                    "endpoints": [
                        {"method": "*", "route": f"/v1/r{i}/{{id}}", "deprecated": True}
                        for i in range(ENTRIES)
                    ]
                }
            }
        }
    )
    store = open_store(config)
    try:
        started = time.perf_counter()
        resolved = deprecated_endpoints(store, catalog)
        report = build_report(store, now, catalog)
        elapsed = time.perf_counter() - started
    finally:
        store.close()
    # Observed: every method of the first quarter, in Express syntax; the rest never called.
    observed = [e for e in resolved if e.route.endswith("/:id")]
    assert len(observed) == ENTRIES  # 5,000 routes x 4 methods
    assert {e.method for e in observed} == set(METHODS)
    assert len(resolved) == ENTRIES  # a `*` entry never called has no method to report
    assert report.unused["svc",] == ENTRIES - ENTRIES // 4
    assert report.last_called["svc", "PUT", "/v1/r7/:id"] == now / 1000
    assert elapsed < 20, f"{elapsed:.1f}s"
