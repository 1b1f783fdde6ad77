"""Restarts and kill -9 during ingestion: nothing counted twice, the store intact, and at most
one flush interval of data lost."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.support import usage_scenario as sc
from tests.support.processor import sample, start_processor, wait_for

consumers = sc.recent_consumers

FAST = {"state": {"flush_interval": "200ms", "refresh_interval": "200ms"}}


def rows(db: Path) -> tuple[str, int]:
    with sqlite3.connect(db) as conn:
        ((check,),) = conn.execute("PRAGMA integrity_check").fetchall()
        ((n,),) = conn.execute("SELECT COUNT(*) FROM consumers").fetchall()
    return check, n


@pytest.mark.slow
def test_kill_9_during_ingestion_loses_at_most_one_flush_and_counts_nobody_twice(tmp_path) -> None:
    db = tmp_path / "state.db"
    with start_processor(tmp_path, FAST) as first:
        sc.send(first.http_endpoint, consumers(0, 50))
        first.wait_processed(50)
        wait_for(first, "apiusage_state_pending_rows", 0)  # flushed: older than one interval
        sc.send(first.http_endpoint, consumers(50, 100))
        first.process.kill()  # SIGKILL mid-ingestion: no drain, no final flush
        first.process.wait(10)
    check, kept = rows(db)
    assert check == "ok"
    assert 50 <= kept <= 100  # everything flushed before the last interval survived

    with start_processor(tmp_path, FAST) as second:
        sc.send(second.http_endpoint, consumers(0, 100))  # the client retries everything
        second.wait_processed(100)
        wait_for(second, "apiusage_state_pending_rows", 0)
        m = wait_for(second, "api_new_consumers_total", 100, service=sc.SERVICE, plan_tier="pro")
        assert sample(m, "api_active_consumers", service=sc.SERVICE, plan_tier="pro", window="1d") == 100
    assert rows(db) == ("ok", 100)


@pytest.mark.slow
def test_graceful_restart_keeps_every_accepted_span(tmp_path) -> None:
    slow = {"state": {"flush_interval": "1h", "refresh_interval": "200ms"}}
    with start_processor(tmp_path, slow) as first:
        sc.send(first.http_endpoint, consumers(0, 30))
        first.wait_processed(30)
        assert sample(first.scrape(), "apiusage_state_flushes_total", outcome="success") == 0
    # SIGTERM drained the queue and flushed on the way out, though no interval had passed.
    assert rows(tmp_path / "state.db") == ("ok", 30)
    with start_processor(tmp_path, slow) as second:
        sc.send(second.http_endpoint, consumers(0, 30))
        second.wait_processed(30)
        wait_for(second, "api_new_consumers_total", 30, service=sc.SERVICE, plan_tier="pro")
