"""Release markers in the state store: first and last sight of each (service, version) through the
batch write path, on SQLite and PostgreSQL, and the gauges they become."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apiusage.processor.config import LimitsConfig, PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.exporters.consumer_metrics import ConsumerCollector
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.state.service import StateService
from apiusage.processor.telemetry import PipelineStats
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.utils import floatToGoString as go

from tests.support.postgres import postgres_server

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.live)]
HOUR_MS = 3_600_000


def req(version: str | None, at_ms: int, service: str = "orders", weight: float = 1.0) -> ApiRequest:
    return ApiRequest(
        service, "GET", "/v1/orders", "200", "pro", "false", "sdk", "1.0", None, None, None,
        0.01, weight, at_ms * 1_000_000, b"t" * 16, b"s" * 8, service_version=version,
    )  # fmt: skip


class _Nothing:
    dsn = ""

    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _config(tmp_path: Path, backend: str, pg) -> StateConfig:  # noqa: ANN001
    if backend == "postgres":
        return StateConfig(postgres=PostgresState(dsn=pg.dsn))
    return StateConfig(sqlite=SqliteState(path=str(tmp_path / "releases-state.db")))


def _service(config: StateConfig, limits: LimitsConfig) -> StateService:
    service = StateService(config, ConsumerActivity(30, PipelineStats()), None, limits=limits)
    service.open()
    return service


def _release_lines(service: StateService) -> list[str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ConsumerCollector(service))
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if line.startswith("api_release")]


@pytest.mark.parametrize("backend", BACKENDS)
def test_markers_keep_the_first_sight_across_flushes_and_replicas(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apiusage.processor.state import activity as activity_module

    # Hours of releases replayed at once: the clock-skew bound (tested below) is widened.
    monkeypatch.setattr(activity_module, "RELEASE_PAST_SKEW_MS", 24 * HOUR_MS)
    now = int(time.time() // 1 * 1000)
    t = now - 10 * HOUR_MS  # whole seconds: first_seen / 1000 is exact
    with postgres_server() if backend == "postgres" else _Nothing() as pg:
        config = _config(tmp_path, backend, pg)
        limits = LimitsConfig(max_releases=2)
        a, b = _service(config, limits), _service(config, limits)
        try:
            a.activity.consume([req("1.4.2", t + HOUR_MS, weight=3.0), req("1.4.2", t + 2 * HOUR_MS)])
            a.activity.consume([req(None, t), req("1.3.0", t - HOUR_MS, service="billing")])
            assert a.flush()
            # Another replica saw 1.4.2 earlier (its spans arrived later): the marker moves back.
            b.activity.consume([req("1.4.2", t, weight=2.0), req("1.5.0", t + 5 * HOUR_MS)])
            assert b.flush()
            # A later flush of a later request never moves first_seen forward.
            a.activity.consume([req("1.5.0", t + 6 * HOUR_MS), req("1.5.0", t + 4 * HOUR_MS)])
            assert a.flush()
            rows = a.store.query("SELECT * FROM releases ORDER BY service, version")  # type: ignore[union-attr]
            assert [tuple(r) for r in rows] == [
                ("billing", "1.3.0", t - HOUR_MS, t - HOUR_MS, 1.0),
                ("orders", "1.4.2", t, t + 2 * HOUR_MS, 6.0),
                ("orders", "1.5.0", t + 4 * HOUR_MS, t + 6 * HOUR_MS, 3.0),
            ]
            # 1.6.0 arrives: with max_releases 2, 1.4.2 leaves the gauges (it stays in the table).
            b.activity.consume([req("1.6.0", t + 7 * HOUR_MS)])
            assert b.flush()
            a.refresh(now_ms=now)
            s = t / 1000
            assert _release_lines(a) == [
                f'api_release_first_seen_timestamp_seconds{{service="billing",version="1.3.0"}} '
                f"{go(s - 3600)}",
                f'api_release_first_seen_timestamp_seconds{{service="orders",version="1.5.0"}} '
                f"{go(s + 4 * 3600)}",
                f'api_release_first_seen_timestamp_seconds{{service="orders",version="1.6.0"}} '
                f"{go(s + 7 * 3600)}",
                'api_release_rank{service="billing",version="1.3.0"} 0.0',
                'api_release_rank{service="orders",version="1.5.0"} 1.0',
                'api_release_rank{service="orders",version="1.6.0"} 0.0',
            ]
            # The other replica exposes the same report (computed once, loaded by the others).
            b.refresh(now_ms=now)
            assert _release_lines(b) == _release_lines(a)
        finally:
            a.close()
            b.close()


def test_failed_write_keeps_the_markers_for_the_next_flush(tmp_path: Path) -> None:
    """A batch restored after a failed write merges with newer rows: min first, max last, sum."""
    activity = ConsumerActivity(30, PipelineStats())
    now = int(time.time() * 1000)
    activity.consume([req("2.0.0", now - 2000, weight=2.0)])
    batch = activity.drain()
    assert batch[9] == [("orders", "2.0.0", now - 2000, now - 2000, 2.0)]
    activity.consume([req("2.0.0", now - 1000), req("2.0.0", now - 3000)])
    activity.restore(batch)
    assert activity.drain()[9] == [("orders", "2.0.0", now - 3000, now - 1000, 4.0)]


def test_hostile_versions_are_bounded_by_the_backlog() -> None:
    stats = PipelineStats()
    activity = ConsumerActivity(30, stats, max_pending=1000)
    now = int(time.time() * 1000)
    activity.consume([req(f"v{i}", now) for i in range(100_000)])
    releases = activity.drain()[9]
    # Endpoint row first, then releases up to twice the backlog limit; the rest counted as dropped.
    assert len(releases) == 1999
    assert activity.rows_dropped == 100_000 - 1999


def test_the_final_flush_at_shutdown_writes_the_markers(tmp_path: Path) -> None:
    """stop() writes what is pending in chunks of whole consumers; the release rows go too."""
    config = _config(tmp_path, "sqlite", None)
    now = int(time.time() * 1000)
    service = _service(config, LimitsConfig())
    service.activity.consume([req("3.0.0", now - 5000, weight=4.0), req("3.0.0", now - 1000)])
    assert service.stop()
    service.close()
    reopened = _service(config, LimitsConfig())
    try:
        rows = reopened.store.query("SELECT * FROM releases")  # type: ignore[union-attr]
        assert [tuple(r) for r in rows] == [("orders", "3.0.0", now - 5000, now - 1000, 5.0)]
    finally:
        reopened.close()


def test_a_span_with_a_clock_days_behind_does_not_move_a_release_back(monkeypatch) -> None:
    """Regression: one 1.5.0 span stamped 5 days ago made 1.5.0 older than the 1.4.2 it replaced
    (first_seen is the minimum), so 1.4.2 ranked newest and ApiReleaseRegression compared the
    wrong pair. A release is first seen at most 15 minutes before the processor saw it."""
    from apiusage.processor.state import activity as activity_module

    now = 1_780_000_000_000
    monkeypatch.setattr(activity_module.time, "time", lambda: now / 1000)
    activity = ConsumerActivity(30, PipelineStats())
    activity.consume(
        [req("1.5.0", now - 3_600_000), req("1.5.0", now - 5 * 86_400_000), req("1.5.0", now - 60_000)]
    )
    skew = activity_module.RELEASE_PAST_SKEW_MS
    assert skew == 15 * 60_000
    assert activity.drain()[9] == [("orders", "1.5.0", now - skew, now - 60_000, 3.0)]
