"""The per-endpoint bound on the state's parameter names (processors.limits.max_names_per_route):
values put into names cannot grow the parameters tables, declared names are always stored, and
the bound survives a restart and forgets with retention; on real SQLite and real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from apiusage.conventions.catalog import load_catalog
from apiusage.processor.app import Processor
from apiusage.processor.config import LimitsConfig, PostgresState, SqliteState, StateConfig, parse_config
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.report import build_report
from apiusage.processor.state.service import StateService
from apiusage.processor.telemetry import PipelineStats

from tests.support.postgres import postgres_server

HOUR_MS = 3_600_000
SERVICE = "shop"
CATALOG = """\
services:
  shop:
    endpoints:
    - method: GET
      route: /v1/orders
      parameters: {query: [limit, cursor, expand, status, sort]}
    - method: POST
      route: /v1/orders
      parameters: {query: [dry_run], body: [items, customer, address]}
"""
BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.live)]


def request(
    method: str,
    route: str,
    consumer: str | None,
    at_ms: int,
    query: tuple[str, ...] | None = None,
    body: tuple[str, ...] | None = None,
) -> ApiRequest:
    return ApiRequest(
        SERVICE,
        method,
        route,
        "200",
        "pro",
        "false",
        "sdk",
        "1.0",
        None,
        None,
        consumer,
        0.01,
        1.0,
        at_ms * 1_000_000,
        b"t" * 16,
        b"s" * 8,
        query_parameters=query,
        body_fields=body,
    )


def _config(tmp_path: Path, backend: str, pg, retention_days: int = 400) -> StateConfig:  # noqa: ANN001
    if backend == "postgres":
        return StateConfig(postgres=PostgresState(dsn=pg.dsn), retention_days=retention_days)
    return StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")), retention_days=retention_days)


class _Nothing:
    dsn = ""

    def __enter__(self) -> _Nothing:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _service(config: StateConfig, catalog, stats: PipelineStats, activity_days: int = 400) -> StateService:  # noqa: ANN001
    activity = ConsumerActivity(activity_days, stats, catalog=catalog)
    service = StateService(config, activity, catalog, limits=LimitsConfig())
    service.open()
    return service


def _names(store, method: str) -> list[tuple[str, str]]:  # noqa: ANN001
    return store.query(
        "SELECT location, parameter FROM parameters WHERE method = ? AND route = '/v1/orders' "
        "ORDER BY location, parameter",
        (method,),
    )


def _junk(start: int, n: int) -> tuple[str, ...]:
    return tuple(f"t{i:06d}" for i in range(start, start + n))


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_300000_names_on_one_endpoint_keep_100_undeclared_every_declared_one_and_a_restart_the_bound(
    tmp_path: Path, backend: str
) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    catalog = load_catalog(tmp_path / "catalog.yaml")
    now = int(time.time() * 1000)
    with postgres_server() if backend == "postgres" else _Nothing() as pg:
        config = _config(tmp_path, backend, pg)
        stats = PipelineStats()
        service = _service(config, catalog, stats)
        activity = service.activity
        try:
            # 300,000 tokens as query names, 1,000 a request, from two consumers; the first 100
            # (t000000..t000099, the first request's first ones) are admitted.
            for flush in range(3):
                activity.consume(
                    [
                        request(
                            "GET",
                            "/v1/orders",
                            f"c{i % 2}",
                            now - HOUR_MS,
                            _junk(100_000 * flush + 1000 * i, 1000),
                        )
                        for i in range(100)
                    ]
                )
                assert service.flush()
            # Declared names past the bound are stored; an undeclared one is not.
            activity.consume([request("GET", "/v1/orders", "c0", now - HOUR_MS, ("cursor", "limit", "zzz"))])
            # Body: 100 undeclared fields take the bound, then a field under the declared object
            # `address` is not stored but `address` is recorded as sent (not reported unused).
            activity.consume([request("POST", "/v1/orders", "c0", now - HOUR_MS, None, _junk(0, 100))])
            activity.consume(
                [request("POST", "/v1/orders", "c1", now - HOUR_MS, None, ("address.t999999", "items", "x"))]
            )
            # Another endpoint keeps its own 100.
            activity.consume([request("GET", "/v1/other", "c0", now - HOUR_MS, _junk(500_000, 100))])
            assert service.flush()
            store = service.store
            get_names = _names(store, "GET")
            assert len(get_names) == 102
            assert get_names[:2] == [("query", "cursor"), ("query", "limit")]
            assert get_names[2:] == [("query", n) for n in _junk(0, 100)]
            post_names = _names(store, "POST")
            assert post_names == [("body", "address"), ("body", "items")] + [
                ("body", n) for n in _junk(0, 100)
            ]
            assert store.query("SELECT COUNT(*) FROM parameters WHERE route = '/v1/other'") == [(100,)]
            # Who sent what: the admitted names only, and no consumer row for the recorded `address`.
            assert store.query(
                "SELECT method, COUNT(*), COUNT(DISTINCT parameter) FROM consumer_parameters "
                "WHERE route = '/v1/orders' GROUP BY method ORDER BY method"
            ) == [("GET", 102, 102), ("POST", 101, 101)]
            assert store.query("SELECT COUNT(*) FROM consumer_parameters WHERE parameter = 'address'") == [
                (0,)
            ]
            # Every name not stored is counted: 299,900 tokens, zzz, address.t999999 and x.
            assert stats.data_quality_issues["names_not_stored"] == 299_900 + 1 + 2
            report = build_report(store, now, catalog, LimitsConfig())
            # GET: expand, status, sort unused; POST: dry_run, customer (address was sent under it).
            assert report.unused_parameters == {
                (SERVICE, "GET", "/v1/orders"): 3,
                (SERVICE, "POST", "/v1/orders"): 2,
            }
        finally:
            service.stop()

        # A restart admits no new names: the 100 stored ones are seeded, first seen first.
        stats = PipelineStats()
        service = _service(config, catalog, stats)
        activity = service.activity
        try:
            assert activity.names_admitted((SERVICE, "GET", "/v1/orders")) == 100
            assert activity.names_admitted((SERVICE, "GET", "/v1/other")) == 100
            later = now - HOUR_MS // 2
            activity.consume(
                [request("GET", "/v1/orders", "c2", later, ("expand", "t000005", *_junk(600_000, 50)))]
            )
            assert service.flush()
            store = service.store
            assert stats.data_quality_issues["names_not_stored"] == 50
            assert len(_names(store, "GET")) == 103  # + expand
            assert store.query(
                "SELECT last_seen FROM parameters WHERE method = 'GET' AND parameter = 't000005'"
            ) == [(later,)]
            report = build_report(store, now, catalog, LimitsConfig())
            assert report.unused_parameters[SERVICE, "GET", "/v1/orders"] == 2
        finally:
            service.stop()


@pytest.mark.parametrize("backend", BACKENDS)
def test_names_pruned_by_retention_free_their_places(tmp_path: Path, backend: str) -> None:
    now = int(time.time() * 1000)
    with postgres_server() if backend == "postgres" else _Nothing() as pg:
        stats = PipelineStats()
        # The activity accepts 40-day-old spans; the store keeps 30 days.
        service = _service(_config(tmp_path, backend, pg, retention_days=30), None, stats, activity_days=40)
        activity = service.activity
        try:
            activity.consume([request("GET", "/v1/orders", "c0", now - 35 * DAY_MS, _junk(0, 100))])
            activity.consume([request("GET", "/v1/orders", "c0", now - HOUR_MS, ("t000000", "late"))])
            assert service.flush()
            assert stats.data_quality_issues["names_not_stored"] == 1
            service.apply_retention()
            # t000001..t000099 were deleted with their rows; t000000 was sent since.
            assert _names(service.store, "GET") == [("query", "t000000")]
            assert activity.names_admitted((SERVICE, "GET", "/v1/orders")) == 1
            activity.consume([request("GET", "/v1/orders", "c0", now, ("late",))])
            assert service.flush()
            assert _names(service.store, "GET") == [("query", "late"), ("query", "t000000")]
            assert stats.data_quality_issues["names_not_stored"] == 1
        finally:
            service.stop()


def test_the_processor_bounds_the_state_names_per_endpoint_with_its_configured_limit(tmp_path: Path) -> None:
    """Regression: before the bound, every distinct name became a row (150 here)."""
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    config = parse_config(
        {
            "catalog": str(tmp_path / "catalog.yaml"),
            "processors": {"limits": {"max_names_per_route": 20}},
            "state": {"sqlite": {"path": str(tmp_path / "state.db")}},
        }
    )
    app = Processor(config)
    assert app.state is not None
    app.state.open()
    now = int(time.time() * 1000)
    try:
        app.activity.consume([request("GET", "/v1/orders", "c0", now, (*_junk(0, 150), "sort"))])
        assert app.state.flush()
        assert len(_names(app.state.store, "GET")) == 21
        assert app.stats.data_quality_issues["names_not_stored"] == 130
    finally:
        app.state.stop()


def test_distinct_routes_cannot_grow_the_admitted_names_past_routes_times_the_bound() -> None:
    """The state's routes are not folded: 100,000 routes of 3 names each meet a bound in all."""
    stats = PipelineStats()
    activity = ConsumerActivity(
        400, stats, max_pending=10_000_000, max_pending_bytes=1 << 34, max_names_per_route=3, max_routes=2
    )
    now = int(time.time() * 1000)
    activity.consume([request("GET", f"/r{i}", None, now, ("a", "b", "c")) for i in range(100_000)])
    assert [activity.names_admitted((SERVICE, "GET", f"/r{i}")) for i in range(3)] == [3, 3, 0]
    assert stats.data_quality_issues["names_not_stored"] == 3 * 100_000 - 6
    assert len(activity.drain()[4]) == 6
    assert len(activity._names_of) == 2  # no entry kept for an endpoint that admitted nothing
