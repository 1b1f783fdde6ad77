"""The state store going away: PostgreSQL stopped and started, a SQLite disk that fills up.
Request metrics keep counting, the store's health says so, and nothing is lost once it is back."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import usage_scenario as sc
from tests.support.components import missing
from tests.support.postgres import postgres_server
from tests.support.processor import matching, running_processor, sample, wait_for

consumers = sc.recent_consumers

FAST = {"flush_interval": "100ms", "refresh_interval": "100ms"}


def stored_consumers(running) -> float:
    m = wait_for(running, "apiusage_state_pending_rows", 0)
    running.processor.state.refresh()
    m = running.scrape()
    return sum(matching(m, "api_new_consumers_total").values())


@pytest.mark.slow
@pytest.mark.live
def test_postgres_stopped_and_started(tmp_path) -> None:
    with (
        postgres_server() as pg,
        running_processor({"state": {"postgres": {"dsn": pg.dsn}, **FAST}}) as running,
    ):
        sc.send(running.http_endpoint, consumers(0, 20))
        running.wait_processed(20)
        assert stored_consumers(running) == 20

        pg.stop()
        sc.send(running.http_endpoint, consumers(20, 50))
        m = wait_for(running, "apiusage_state_up", 0)
        assert sample(m, "apiusage_spans_processed_total") == 50  # ingestion goes on
        assert sum(matching(m, "api_requests_total").values()) == 50
        assert sample(m, "apiusage_state_pending_rows") > 0
        assert sample(m, "apiusage_state_flushes_total", outcome="failure") >= 1
        assert running.processor.readiness() == (True, "ready")

        pg.start()
        wait_for(running, "apiusage_state_up", 1, timeout=20)
        assert stored_consumers(running) == 50  # caught up, nothing lost, nothing twice


@contextlib.contextmanager
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs (real ENOSPC) where mounting is permitted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing("root, to mount a small tmpfs for a real full disk")
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if result.returncode:
        missing(f"permission to mount a tmpfs ({result.stderr.strip()})")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> Path:
    junk = folder / "junk"
    with open(junk, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return junk


@pytest.mark.live  # root and mount(8): a real tmpfs fills up
def test_sqlite_disk_full_then_freed(tmp_path) -> None:
    with small_disk(tmp_path) as disk:
        config = {"state": {"sqlite": {"path": str(disk / "state.db")}, **FAST}}
        with running_processor(config) as running:
            sc.send(running.http_endpoint, consumers(0, 10))
            running.wait_processed(10)
            assert stored_consumers(running) == 10

            junk = fill(disk)
            sc.send(
                running.http_endpoint, [dict(c, route="/v1/orders/" + "x" * 200) for c in consumers(10, 400)]
            )
            m = wait_for(running, "apiusage_state_up", 0)
            assert sample(m, "apiusage_spans_processed_total") == 400
            assert sample(m, "apiusage_state_flushes_total", outcome="failure") >= 1

            junk.unlink()
            wait_for(running, "apiusage_state_up", 1, timeout=20)
            assert stored_consumers(running) == 400
        with sqlite3.connect(disk / "state.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert db.execute("SELECT COUNT(*) FROM consumers").fetchall() == [(400,)]
