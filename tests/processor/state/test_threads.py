"""A refresh that takes seconds delays neither flushes nor admin requests (separate threads and
connections), and shows in its duration gauge while it runs."""

from __future__ import annotations

import time

import pytest

from tests.support import usage_scenario as sc
from tests.support.processor import get, running_processor, sample
from tests.support.state_faults import seed_history

pytestmark = pytest.mark.slow

TOKEN = "s3cret-admin-token-0123456789"


def slow_refresh(monkeypatch, seconds: float) -> None:
    """Every refresh takes `seconds` longer, as on a cold page cache at 100,000 consumers (issue 13
    measured 436 s), and stops early, like a real query, when shutdown interrupts its connection.

    The incremental model refreshes 12,000 consumers in well under a second, so the wait is
    injected around the real computation."""
    from apiusage.processor.state import service as service_module
    from apiusage.processor.state.store import StoreError

    real = service_module.build_report

    def slow(store, *args, **kwargs):
        report = real(store, *args, **kwargs)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if store._interrupted:
                raise StoreError("read interrupted: shutting down")
            time.sleep(0.02)
        return report

    monkeypatch.setattr(service_module, "build_report", slow)


def test_flushes_and_admin_requests_go_on_during_a_slow_refresh(tmp_path, monkeypatch) -> None:
    db = tmp_path / "state.db"
    seed_history(db, 12_000)
    slow_refresh(monkeypatch, 5.0)
    config = {
        "state": {"sqlite": {"path": str(db)}, "flush_interval": "100ms", "refresh_interval": "100ms"},
        "admin": {"token": TOKEN, "endpoint": "127.0.0.1:0", "audit_log": str(tmp_path / "a.log")},
    }
    with running_processor(config) as running:
        url = running.processor.urls()["admin"] + "/deprecated"
        started = time.monotonic()
        status, _, _ = get(url, {"Authorization": f"Bearer {TOKEN}"}, timeout=10)
        admin_took = time.monotonic() - started
        sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
        running.wait_processed(10)
        deadline = time.monotonic() + 5
        while sample(m := running.scrape(), "apiusage_state_pending_rows") != 0:
            assert time.monotonic() < deadline, "no flush during the refresh"
            time.sleep(0.05)
        flushed_within = time.monotonic() - started
        time.sleep(max(0.0, started + 1.2 - time.monotonic()))
        running_refresh = running.scrape()
        assert sample(running_refresh, "apiusage_state_refreshes_total", outcome="success") == 0, (
            "the first refresh was already over"
        )
        stopping = time.monotonic()
    stopped_within = time.monotonic() - stopping
    assert status == 200
    assert admin_took < 1.5, f"the admin request waited {admin_took:.1f}s for the refresh"
    assert flushed_within < 3.0
    assert sample(m, "apiusage_state_flushes_total", outcome="success") >= 1
    assert sample(m, "apiusage_state_rows_written_total") == 21  # 10 consumers, 10 rows, 1 endpoint
    # The running refresh shows in its duration gauge (it has run at least 1.2 s).
    assert sample(running_refresh, "apiusage_state_refresh_duration_seconds") >= 1.2
    assert stopped_within < 2.0, f"stop took {stopped_within:.1f}s: it waited for the refresh"


class _BrokenCatalog:
    @property
    def services(self) -> list:
        raise RuntimeError("catalog bug")


def test_an_unexpected_error_in_a_refresh_is_logged_once_and_ends_no_thread(tmp_path, caplog) -> None:
    from apiusage.processor.config import SqliteState, StateConfig
    from apiusage.processor.state.activity import ConsumerActivity
    from apiusage.processor.state.service import StateService
    from apiusage.processor.telemetry import PipelineStats

    from tests.processor.state.test_backlog import requests

    config = StateConfig(
        sqlite=SqliteState(path=str(tmp_path / "s.db")), flush_interval=0.1, refresh_interval=0.1
    )
    activity = ConsumerActivity(40, PipelineStats())
    service = StateService(config, activity, _BrokenCatalog())
    service.open()
    service.start()
    try:
        deadline = time.monotonic() + 10
        while service.health.refreshes["failure"] < 3:
            assert time.monotonic() < deadline, "the refresh thread stopped"
            time.sleep(0.05)
        activity.consume(requests(0, 3))
        while activity.pending():
            assert time.monotonic() < deadline, "the flush thread stopped"
            time.sleep(0.05)
    finally:
        assert service.stop() is True
    assert service.health.rows_written == 7  # 3 consumers, 3 activity rows, 1 endpoint
    assert service.health.refreshes["success"] == 0
    logged = [r for r in caplog.records if r.levelname == "ERROR"]
    assert [r.getMessage() for r in logged] == [
        "state refresh failed unexpectedly; the next one runs on schedule"
    ]
