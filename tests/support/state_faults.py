"""State-store fixtures for the hostile suite: a big history that makes a refresh slow, damaged
and write-protected database files, a trace backend that never answers."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from apiusage.processor.config import SqliteState, StateConfig
from apiusage.processor.state.store import open_store

from tests.support.components import missing

DAY_MS = 86_400_000


def seed_history(
    db: Path, consumers: int, days: int = 30, service: str = "history-api", endpoints: int = 1
) -> int:
    """A migrated SQLite state file where `consumers` consumers called `endpoints` of 50 routes
    every day of the last `days` days; returns the number of activity facts (consumer × endpoint ×
    day), written into the model's tables as flushes would have left them."""
    open_store(StateConfig(sqlite=SqliteState(path=str(db)))).close()
    today = int(time.time() * 1000) // DAY_MS
    first = (today - days + 1) * DAY_MS
    # Generated inside SQLite; closed, so the WAL is checkpointed.
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute(
            "CREATE TEMP TABLE seed AS WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n "
            "WHERE i + 1 < ?), e(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM e WHERE k + 1 < ?) "
            "SELECT printf('h%07d', i) AS c, '/r' || ((i + k) % 50) AS route FROM n, e",
            (consumers, endpoints),
        )
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            "INSERT INTO consumers SELECT ?, printf('h%07d', i), ?, NULL, ?, 'free', 'free', "
            "'sdk', '1' FROM n",
            (consumers, service, first, today * DAY_MS + 1),
        )
        days_cte = "WITH RECURSIVE d(j) AS (SELECT 0 UNION ALL SELECT j + 1 FROM d WHERE j + 1 < ?) "
        conn.execute(
            days_cte + "INSERT INTO endpoint_days SELECT ?, 'GET', route, ? - j, c, 1.0, 0.0, "
            "(? - j) * ? + 1 FROM d, seed ORDER BY 3, 4, 5",
            (days, service, today, today, DAY_MS),
        )
        conn.execute(
            days_cte + "INSERT INTO consumer_days SELECT ?, c, ? - j, COUNT(*), 0.0 FROM d, seed "
            "GROUP BY c, j ORDER BY 2, 3",
            (days, service, today),
        )
        conn.execute(
            "INSERT INTO consumer_weeks SELECT service, consumer_id, (day + 3) / 7, SUM(calls) "
            "FROM consumer_days GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        conn.execute(
            "INSERT INTO consumer_endpoints SELECT ?, 'GET', route, c, ?, ?, ?, 0.0 FROM seed ORDER BY 3, 4",
            (service, today - days + 1, today * DAY_MS + 1, float(days)),
        )
        conn.execute(
            "INSERT INTO consumer_features SELECT DISTINCT ?, 'f', c, ?, ? FROM seed ORDER BY 3",
            (service, today * DAY_MS + 1, float(days * endpoints)),
        )
        conn.execute(
            "INSERT INTO consumer_clients SELECT DISTINCT ?, 'sdk', '1', c, ?, ? FROM seed ORDER BY 4",
            (service, today * DAY_MS + 1, float(days * endpoints)),
        )
        conn.execute(
            "INSERT INTO endpoints SELECT DISTINCT ?, 'GET', route, 0, ?, ? FROM seed",
            (service, first, today * DAY_MS + 1),
        )
    return consumers * days * endpoints


def damage(db: Path, first_page: int = 3, pages: int = 8, page_size: int = 4096) -> None:
    """Write garbage over pages of a real database file (page 1, the header, is left alone)."""
    with open(db, "r+b") as f:
        f.seek((first_page - 1) * page_size)
        f.write(bytes([0xA5]) * page_size * pages)


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """A file nobody may write, root included (`chattr +i`): a real read-only database file."""
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if result.returncode:
        missing(f"chattr +i on {path.parent} ({result.stderr.strip()})")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)


class SilentBackend:
    """A TCP server on loopback that accepts connections, reads what arrives and never answers."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port = self._server.getsockname()[1]
        self.received = 0
        self.first_bytes = threading.Event()
        self._stop = threading.Event()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            conn.settimeout(0.2)
            self._conns.append(conn)
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            self.received += len(data)
            self.first_bytes.set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self._conns:
            conn.close()
        self._server.close()
