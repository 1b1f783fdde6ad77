"""kill -9 under load while refreshes run back to back: every consumer acknowledged more than one
flush interval before the kill is in the store (issue 12, item 14).

Since issue 13 a refresh of this history takes a fraction of a second, so refreshes run one after
the other beside the flushes (refresh_interval 100ms); a refresh that takes seconds is injected
in tests/processor/state/test_threads.py."""

from __future__ import annotations

import http.client
import signal
import sqlite3
import threading
import time
from urllib.parse import urlsplit

import pytest

from tests.support import usage_scenario as sc
from tests.support.processor import sample, start_processor
from tests.support.state_faults import seed_history

pytestmark = pytest.mark.slow

FLUSH = 0.5
SLACK = 1.0  # worker hand-off plus the flush itself, on a busy two-core machine
HISTORY = 12_000  # consumers × 30 days of activity


class Sender(threading.Thread):
    """Sends exports of 10 new consumers each, up to 40 a second; records when each consumer was
    acknowledged (200)."""

    def __init__(self, endpoint: str, name: str) -> None:
        super().__init__(daemon=True)
        url = urlsplit(endpoint)
        self._host, self._port = url.hostname, url.port
        self._name = name
        self.sent: set[str] = set()
        self.acked: dict[str, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection(self._host, self._port, timeout=5)
        n = 0
        deadline = time.monotonic() + 30
        try:
            while not self.stop.wait(0.025) and time.monotonic() < deadline:
                names = [f"{self._name}-{n + i:05d}" for i in range(10)]
                n += 10
                recent = int(time.time() * 1000) - 1000
                body = sc.request(
                    [dict(sc.call(0, 0, c, "GET", "/v1/orders", 200, plan="pro"), at=recent) for c in names]
                )
                self.sent.update(names)
                conn.request("POST", "/v1/traces", body, {"Content-Type": "application/x-protobuf"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    now = time.monotonic()
                    self.acked.update((c, now) for c in names)
        except (OSError, http.client.HTTPException):
            pass  # the processor was killed
        finally:
            conn.close()


def test_kill_9_during_refreshes_loses_at_most_one_flush_interval(tmp_path) -> None:
    db = tmp_path / "state.db"
    seed_history(db, HISTORY)
    config = {"state": {"flush_interval": f"{int(FLUSH * 1000)}ms", "refresh_interval": "100ms"}}
    with start_processor(tmp_path, config) as running:
        # The first refresh starts now and takes seconds; the load arrives meanwhile.
        senders = [Sender(running.http_endpoint, f"load{i}") for i in range(2)]
        for s in senders:
            s.start()
        time.sleep(2.5)
        m = running.scrape()
        killed_at = time.monotonic()
        running.process.kill()
        running.process.wait(10)
        for s in senders:
            s.stop.set()
            s.join(10)

    # The scenario held: refreshes ran during the load.
    assert sample(m, "apiusage_state_refreshes_total", outcome="success") >= 1
    assert sample(m, "apiusage_state_flushes_total", outcome="failure") == 0
    acked = {c: t for s in senders for c, t in s.acked.items()}
    sent = set().union(*(s.sent for s in senders))
    must_have = {c for c, t in acked.items() if t < killed_at - FLUSH - SLACK}
    assert len(must_have) >= 50, f"only {len(must_have)} consumers acknowledged early enough"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        stored = {
            c for (c,) in conn.execute("SELECT consumer_id FROM consumers WHERE service = ?", (sc.SERVICE,))
        }
        ((history,),) = conn.execute("SELECT COUNT(*) FROM consumers WHERE service = 'history-api'")
    assert history == HISTORY
    missing = sorted(must_have - stored, key=acked.__getitem__)
    assert not missing, (
        f"{len(missing)} of {len(must_have)} consumers acknowledged more than "
        f"{FLUSH + SLACK}s before kill -9 are not in the store (acknowledged "
        f"{killed_at - acked[missing[-1]]:.2f}..{killed_at - acked[missing[0]]:.2f}s "
        "before it)"
    )
    assert stored <= sent  # nothing invented


def test_sigterm_during_refreshes_flushes_and_exits_promptly(tmp_path) -> None:
    db = tmp_path / "state.db"
    seed_history(db, HISTORY)
    config = {"state": {"flush_interval": "1h", "refresh_interval": "100ms"}}
    with start_processor(tmp_path, config) as running:
        sc.send(running.http_endpoint, sc.recent_consumers(0, 20))
        running.wait_processed(20)
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        _, stderr = running.process.communicate(timeout=30)
        took = time.monotonic() - started
    assert running.process.returncode == 0, stderr
    assert took < 2.0, f"shutdown took {took:.1f}s: it waited for the refresh"
    assert "refresh failed" not in stderr  # an interrupted refresh is not a store failure
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM consumers WHERE service = ?", (sc.SERVICE,)).fetchall() == [
            (20,)
        ]
