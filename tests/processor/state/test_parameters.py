"""Issue 15's consumer state: distinct consumers per parameter and of feedback, unused declared
parameters; on real SQLite and real PostgreSQL, through the admin endpoint and the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from apiusage.conventions.catalog import load_catalog
from apiusage.processor.config import LimitsConfig, PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.feedback import Feedback
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.report import build_report
from apiusage.processor.state.service import StateService
from apiusage.processor.telemetry import PipelineStats

from tests.support.polling import read_until
from tests.support.postgres import postgres_server
from tests.support.processor import LOOPBACK_CONFIG, get, merge, running_processor

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
    - method: GET
      route: /v1/orders/{order_id}/lines
      parameters: {query: [page]}
    - method: DELETE
      route: /v1/orders/{order_id}
      parameters: {query: [force]}
    - method: GET
      route: /v1/health
"""


def request(
    method: str,
    route: str,
    consumer: str | None,
    at_ms: int,
    query: tuple[str, ...] | None = None,
    body: tuple[str, ...] | None = None,
    weight: float = 1.0,
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
        weight,
        at_ms * 1_000_000,
        b"t" * 16,
        b"s" * 8,
        query_parameters=query,
        body_fields=body,
    )


def scenario(now: int) -> tuple[list[list[ApiRequest]], list[Feedback]]:
    """Two flushes of requests and a batch of feedback, `now` in Unix ms."""
    first = [
        request("GET", "/v1/orders", "c1", now - HOUR_MS, ("cursor", "limit")),
        request("POST", "/v1/orders", "c1", now - HOUR_MS, None, ("address.city", "items", "items.sku")),
        request("GET", "/v1/orders", "c2", now - 3 * DAY_MS, ("limit",)),
        request("GET", "/v1/orders", "c3", now - 20 * DAY_MS, ("expand", "limit")),
        request("GET", "/v1/orders", "c4", now - 40 * DAY_MS, ("status",)),
        # Without a consumer: no consumer rows, but the names count as sent.
        request("GET", "/v1/orders", None, now - 2 * HOUR_MS, ("cursor", "undeclared")),
        request("GET", "/v1/orders/:orderId/lines", "c2", now - 2 * DAY_MS, ("page",)),
        request("DELETE", "/v1/orders/{order_id}", "c1", now - 45 * DAY_MS, ("force",)),
        request("GET", "/v1/health", "c1", now - HOUR_MS),
    ]
    # The same pair again in another flush, weighted: still one consumer.
    second = [request("GET", "/v1/orders", "c1", now - 2 * HOUR_MS, ("limit",), weight=4.0)]
    feedback = [
        Feedback(SERVICE, "", "docs", "5", "c1", (now - HOUR_MS) * 1_000_000),
        Feedback(SERVICE, "", "docs", "2", "c2", (now - 3 * DAY_MS) * 1_000_000),
        Feedback(SERVICE, "/v1/orders", "bug", "1", "c2", (now - 2 * DAY_MS) * 1_000_000),
        Feedback(SERVICE, "", "bug", "1", None, now * 1_000_000),  # anonymous: api_feedback_total only
        Feedback(SERVICE, "", "other", "3", "c3", (now - 10 * DAY_MS) * 1_000_000),
        Feedback(SERVICE, "", "other", "3", "c4", (now - 31 * DAY_MS) * 1_000_000),
    ]
    return [first, second], feedback


EXPECTED_PARAMETER_CONSUMERS = {
    (SERVICE, "GET", "/v1/orders", "query", "limit", "1d"): 1,
    (SERVICE, "GET", "/v1/orders", "query", "limit", "7d"): 2,
    (SERVICE, "GET", "/v1/orders", "query", "limit", "30d"): 3,
    (SERVICE, "GET", "/v1/orders", "query", "cursor", "1d"): 1,
    (SERVICE, "GET", "/v1/orders", "query", "cursor", "7d"): 1,
    (SERVICE, "GET", "/v1/orders", "query", "cursor", "30d"): 1,
    (SERVICE, "GET", "/v1/orders", "query", "expand", "30d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "address.city", "1d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "address.city", "7d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "address.city", "30d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "items", "1d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "items", "7d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "items", "30d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "items.sku", "1d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "items.sku", "7d"): 1,
    (SERVICE, "POST", "/v1/orders", "body", "items.sku", "30d"): 1,
    (SERVICE, "GET", "/v1/orders/:orderId/lines", "query", "page", "7d"): 1,
    (SERVICE, "GET", "/v1/orders/:orderId/lines", "query", "page", "30d"): 1,
}
# GET /v1/orders: status (40 days ago) and sort (never); POST: dry_run and customer (address is
# sent as address.city); the lines endpoint sends its one name; DELETE has no call in 30 days.
EXPECTED_UNUSED = {
    (SERVICE, "GET", "/v1/orders"): 2,
    (SERVICE, "POST", "/v1/orders"): 2,
    (SERVICE, "GET", "/v1/orders/:orderId/lines"): 0,
}
EXPECTED_FEEDBACK = {(SERVICE, "1d"): 1, (SERVICE, "7d"): 2, (SERVICE, "30d"): 3}


def _config(tmp_path: Path, backend: str, pg) -> StateConfig:  # noqa: ANN001
    if backend == "postgres":
        return StateConfig(postgres=PostgresState(dsn=pg.dsn))
    return StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _fill(config: StateConfig, tmp_path: Path, now: int, catalog=None) -> StateService:  # noqa: ANN001
    activity = ConsumerActivity(400, PipelineStats())
    service = StateService(config, activity, catalog, limits=LimitsConfig())
    service.open()
    batches, feedback = scenario(now)
    for batch in batches:
        activity.consume(batch)
        assert service.flush()
    activity.consume_feedback(feedback)
    assert service.flush()
    assert activity.pending() == 0
    return service


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.live)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_distinct_consumers_per_parameter_feedback_and_unused_parameters_per_window(
    tmp_path: Path, backend: str
) -> None:
    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(CATALOG)
    catalog = load_catalog(catalog_file)
    now = int(time.time() * 1000)
    with postgres_server() if backend == "postgres" else _nothing() as pg:
        service = _fill(_config(tmp_path, backend, pg), tmp_path, now, catalog)
        try:
            store = service.store
            # One row per pair, whatever the number of requests and flushes.
            assert store.query(
                "SELECT consumer_id, first_day, last_call, calls FROM consumer_parameters "
                "WHERE method = 'GET' AND route = '/v1/orders' AND parameter = 'limit' ORDER BY consumer_id"
            ) == [
                ("c1", (now - 2 * HOUR_MS) // DAY_MS, now - HOUR_MS, 5.0),
                ("c2", (now - 3 * DAY_MS) // DAY_MS, now - 3 * DAY_MS, 1.0),
                ("c3", (now - 20 * DAY_MS) // DAY_MS, now - 20 * DAY_MS, 1.0),
            ]
            assert store.query(
                "SELECT location, parameter, first_seen, last_seen FROM parameters "
                "WHERE method = 'GET' AND route = '/v1/orders' ORDER BY parameter"
            ) == [
                ("query", "cursor", now - 2 * HOUR_MS, now - HOUR_MS),
                ("query", "expand", now - 20 * DAY_MS, now - 20 * DAY_MS),
                ("query", "limit", now - 20 * DAY_MS, now - HOUR_MS),
                ("query", "status", now - 40 * DAY_MS, now - 40 * DAY_MS),
                ("query", "undeclared", now - 2 * HOUR_MS, now - 2 * HOUR_MS),
            ]
            assert store.query("SELECT * FROM consumer_feedback ORDER BY consumer_id") == [
                (SERVICE, "c1", now - HOUR_MS, now - HOUR_MS, 1),
                (SERVICE, "c2", now - 3 * DAY_MS, now - 2 * DAY_MS, 2),
                (SERVICE, "c3", now - 10 * DAY_MS, now - 10 * DAY_MS, 1),
                (SERVICE, "c4", now - 31 * DAY_MS, now - 31 * DAY_MS, 1),
            ]
            report = build_report(store, now, catalog, LimitsConfig())
            assert report.parameter_consumers == EXPECTED_PARAMETER_CONSUMERS
            assert report.feedback_consumers == EXPECTED_FEEDBACK
            assert report.unused_parameters == EXPECTED_UNUSED
            assert report.unused == {(SERVICE,): 1}  # DELETE: no call in 30 days

            # Retention at 30 days prunes the new tables too.
            deleted = store.prune(now // DAY_MS - 30)
            assert {t: deleted[t] for t in ("consumer_parameters", "parameters", "consumer_feedback")} == {
                "consumer_parameters": 2,  # c4 status, c1 force
                "parameters": 2,
                "consumer_feedback": 1,  # c4
            }
            assert build_report(store, now, catalog, LimitsConfig()).parameter_consumers == (
                EXPECTED_PARAMETER_CONSUMERS
            )
        finally:
            service.stop()


def test_parameter_labels_past_their_limit_fold_into_a_distinct_other(tmp_path: Path) -> None:
    now = int(time.time() * 1000)
    activity = ConsumerActivity(400, PipelineStats())
    service = StateService(
        StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db"))), activity, limits=LimitsConfig()
    )
    service.open()
    try:
        # c0 sends p0..p4, c1 sends p0..p2: with 2 names kept, p2, p3 and p4 fold into one
        # __other__ counted by distinct consumers (2: c0, c1), not by summing the names (4).
        activity.consume(
            [
                request("GET", "/a", "c0", now - HOUR_MS, ("p0", "p1", "p2", "p3", "p4")),
                request("GET", "/a", "c1", now - HOUR_MS, ("p0", "p1", "p2")),
                request("GET", "/a", "c2", now - HOUR_MS, ("p0",)),
            ]
        )
        assert service.flush()
        limits = LimitsConfig(max_label_values={"parameter": 2})
        report = build_report(service.store, now, None, limits)
        got = {k[4]: n for k, n in report.parameter_consumers.items() if k[5] == "30d"}
        assert got == {"p0": 3, "p1": 2, "__other__": 2}
        assert report.folded["api_parameter_consumers", "parameter"] == (3, 9)
    finally:
        service.stop()


def test_the_backlog_bound_counts_parameter_rows_and_drops_past_twice_the_limit() -> None:
    now = int(time.time() * 1000)
    activity = ConsumerActivity(400, PipelineStats(), max_pending=10)
    # One request: endpoint row, consumer row, activity row, 2 parameter rows, 2 pair rows.
    activity.consume([request("GET", "/a", "c0", now, ("a", "b"))])
    assert (activity.pending(), activity.backlogged()) == (7, False)
    activity.consume_feedback([Feedback(SERVICE, "", "x", "1", "c0", now * 1_000_000)] * 3)
    assert activity.pending() == 8
    batch = activity.drain()
    assert [len(rows) for rows in batch] == [1, 1, 1, 2, 2, 1, 0, 0, 0, 0]  # no experiment or release rows
    assert batch[5] == [(SERVICE, "c0", now, now, 3)]
    activity.consume([request("GET", "/a", "c1", now, tuple(f"n{i}" for i in range(20)))])
    # 8 in flight + 12 rows fit below twice the bound (20): the endpoint row, 5 names with their
    # pair rows and a sixth name; the rest is dropped and counted (its pair, 14 names x 2 rows,
    # the activity row and the consumer row).
    assert (activity.pending(), activity.rows_dropped) == (20, 1 + 28 + 2)
    activity.restore(batch)  # a failed flush: back in memory, merged, not counted twice
    assert activity.pending() == 19  # the endpoint row was merged
    # Feedback beyond retention or from the future is not stored.
    fresh = ConsumerActivity(10, PipelineStats())
    fresh.consume_feedback(
        [
            Feedback(SERVICE, "", "x", "1", "old", (now - 20 * DAY_MS) * 1_000_000),
            Feedback(SERVICE, "", "x", "1", "ahead", (now + DAY_MS) * 1_000_000),
        ]
    )
    assert (fresh.pending(), fresh.rows_dropped) == (0, 1)


def test_a_batch_of_100000_distinct_names_stays_within_the_bound() -> None:
    now = int(time.time() * 1000)
    # Names unbounded per endpoint here: the backlog bound is what is tested (test_name_bound.py).
    activity = ConsumerActivity(
        400, PipelineStats(), max_pending=1_000, max_pending_bytes=1 << 30, max_names_per_route=1_000_000
    )
    names = tuple(f"p{i:06d}\x7f" for i in range(100_000))
    activity.consume([request("POST", "/a", "c0", now, None, names)])
    assert activity.pending() == 2_000
    # Wanted: an endpoint row, 2 rows a name, an activity and a consumer row; 2,000 stored.
    assert activity.rows_dropped == 1 + 2 * 100_000 + 2 - 2_000


TOKEN = "s3cret-admin-token-0123456789"
EXPECTED_LISTING = [
    {
        "service": SERVICE,
        "method": "GET",
        "route": "/v1/orders",
        "last_call": None,
        "window_days": 30,
        "declared": 5,
        "unused": [{"location": "query", "name": "status"}, {"location": "query", "name": "sort"}],
    },
    {
        "service": SERVICE,
        "method": "POST",
        "route": "/v1/orders",
        "last_call": None,
        "window_days": 30,
        "declared": 4,
        "unused": [{"location": "query", "name": "dry_run"}, {"location": "body", "name": "customer"}],
    },
    {
        "service": SERVICE,
        "method": "GET",
        "route": "/v1/orders/:orderId/lines",
        "last_call": None,
        "window_days": 30,
        "declared": 1,
        "unused": [],
    },
]


def _listing(now: int) -> list[dict]:
    from apiusage.processor.state.listing import iso

    out = json.loads(json.dumps(EXPECTED_LISTING))
    for entry, at in zip(out, (now - HOUR_MS, now - HOUR_MS, now - 2 * DAY_MS), strict=True):
        entry["last_call"] = iso(at)
    return out


def test_admin_endpoint_lists_unused_parameters_with_the_token_and_audits(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    audit_log = tmp_path / "audit.log"
    cfg = {
        "catalog": str(tmp_path / "catalog.yaml"),
        "admin": {"endpoint": "127.0.0.1:0", "token": TOKEN, "audit_log": str(audit_log)},
        "state": {"refresh_interval": "200ms"},
    }
    now = int(time.time() * 1000)
    with running_processor(cfg) as running:
        processor = running.processor
        for batch in scenario(now)[0]:
            processor.activity.consume(batch)
        processor.state.flush()
        base = processor.urls()["admin"].removesuffix("/consumers")
        url = f"{base}/parameters/unused"
        assert get(url)[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, body, _ = get(url, auth)
        assert (status, json.loads(body)) == (200, {"endpoints": _listing(now)})
        status, body, _ = get(f"{url}?service=shop&method=post&route=/v1/orders", auth)
        assert (status, json.loads(body)) == (200, {"endpoints": _listing(now)[1:2]})
        status, body, _ = get(f"{url}?service=nope", auth)
        assert (status, json.loads(body)) == (200, {"endpoints": []})
        status, body, _ = get(f"{base}/parameters/used", auth)
        assert (status, json.loads(body)) == (
            404,
            {"error": "try /v1/consumers/deprecated, /v1/consumers/at-risk or /v1/parameters/unused"},
        )
        m = read_until(
            running.scrape,
            lambda m: (
                (
                    "api_unused_parameters",
                    frozenset({("service", SERVICE), ("method", "GET"), ("route", "/v1/orders")}),
                )
                in m
            ),
            10,
        )
        unused = {
            tuple(dict(labels)[k] for k in ("service", "method", "route")): v
            for (name, labels), v in m.items()
            if name == "api_unused_parameters"
        }
        assert unused == EXPECTED_UNUSED
    entries = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [(e["path"], e["authorized"], e["status"], e.get("consumers_returned")) for e in entries] == [
        ("/v1/parameters/unused", False, 401, None),
        ("/v1/parameters/unused", True, 200, 0),
        ("/v1/parameters/unused", True, 200, 0),
        ("/v1/parameters/unused", True, 200, 0),
        ("/v1/parameters/used", True, 404, 0),
    ]


@pytest.mark.slow
def test_consumers_cli_lists_unused_parameters(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    db = tmp_path / "state.db"
    now = int(time.time() * 1000)
    _fill(StateConfig(sqlite=SqliteState(path=str(db))), tmp_path, now).stop()
    config_file = tmp_path / "apiusage.yaml"
    config_file.write_text(
        yaml.safe_dump(
            merge(
                LOOPBACK_CONFIG,
                {
                    "catalog": str(tmp_path / "catalog.yaml"),
                    "state": {"sqlite": {"path": str(db)}},
                    "admin": {"audit_log": str(tmp_path / "audit.log")},
                },
            )
        )
    )
    exe = Path(sys.executable).with_name("apiusage")
    base = [str(exe), "consumers", "--config", str(config_file)]
    result = subprocess.run(
        [*base, "--format", "json", "unused-parameters"], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert json.loads(result.stdout) == {"endpoints": _listing(now)}
    result = subprocess.run(
        [*base, "unused-parameters", "--method", "POST"], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == (
        f"POST /v1/orders (shop) last call {_listing(now)[1]['last_call']}: 2 of 4 declared "
        "parameters not sent in 30 days\n  query  dry_run\n  body   customer\n"
    )
    result = subprocess.run(
        [*base, "unused-parameters", "--service", "other"], capture_output=True, text=True, timeout=30
    )
    assert result.stdout == "no catalog endpoint with declared parameters was called in the last 30 days\n"
    no_catalog = tmp_path / "no-catalog.yaml"
    no_catalog.write_text(config_file.read_text().replace(f"catalog: {tmp_path / 'catalog.yaml'}\n", ""))
    result = subprocess.run(
        [str(exe), "consumers", "--config", str(no_catalog), "unused-parameters"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stderr, result.stdout) == (
        0,
        "apiusage: warning: no catalog configured (the catalog: key): no declared parameters to compare\n",
        "no catalog endpoint with declared parameters was called in the last 30 days\n",
    )
    entries = [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]
    assert [(e["path"], e["query"], e["consumers_returned"]) for e in entries] == [
        ("consumers unused-parameters", {}, 0),
        ("consumers unused-parameters", {"method": "POST"}, 0),
        ("consumers unused-parameters", {"service": "other"}, 0),
        ("consumers unused-parameters", {}, 0),
    ]


_WRITER = textwrap.dedent(
    """
    import sys, time
    from apiusage.processor.config import SqliteState, StateConfig
    from apiusage.processor.derive.requests import ApiRequest
    from apiusage.processor.state.activity import ConsumerActivity
    from apiusage.processor.state.service import StateService
    from apiusage.processor.telemetry import PipelineStats

    activity = ConsumerActivity(400, PipelineStats(), max_pending=10_000_000, max_pending_bytes=1 << 32)
    service = StateService(StateConfig(sqlite=SqliteState(path=sys.argv[1])), activity)
    service.open()
    names = tuple(f"p{i}" for i in range(5))
    for flush in range(1000):
        now = time.time_ns()
        activity.consume([
            ApiRequest("shop", "GET", f"/r{i % 7}", "200", "pro", "false", "sdk", "1", None, None,
                       f"f{flush}-c{i}", 0.01, 1.0, now, b"t" * 16, b"s" * 8,
                       query_parameters=names, body_fields=("x",))
            for i in range(4000)
        ])
        print("flushing", flush, flush=True)
        service.flush()
    """
)


@pytest.mark.slow
def test_kill_9_during_a_flush_leaves_every_consumer_whole(tmp_path: Path) -> None:
    """A flush is one transaction: after SIGKILL mid-flush, every consumer in the store has its
    parameter rows and every parameter row its consumer, never half a flush."""
    db = tmp_path / "state.db"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    with subprocess.Popen(
        [sys.executable, str(script), str(db)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    ) as process:
        try:
            assert process.stdout is not None
            for expected in ("flushing 0", "flushing 1", "flushing 2"):
                assert process.stdout.readline().strip() == expected
            time.sleep(0.05)  # inside the third flush (32,000 rows: about 0.3 s here)
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        (consumers,) = conn.execute("SELECT COUNT(*) FROM consumers").fetchone()
        assert consumers in (8000, 12000)  # two or three whole flushes, never part of one
        assert conn.execute(
            "SELECT COUNT(*), COUNT(DISTINCT consumer_id) FROM consumer_parameters"
        ).fetchone() == (consumers * 6, consumers)
        assert conn.execute(
            "SELECT COUNT(*) FROM consumer_parameters p WHERE NOT EXISTS (SELECT 1 FROM consumers c "
            "WHERE c.service = p.service AND c.consumer_id = p.consumer_id)"
        ).fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM parameters").fetchone() == (7 * 6,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_version_3_store_migrates_to_4_with_its_data_and_empty_new_tables(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apiusage.processor.state import schema
    from apiusage.processor.state import store as store_module
    from apiusage.processor.state.store import open_store

    now = int(time.time() * 1000)
    day = now // DAY_MS
    with postgres_server() if backend == "postgres" else _nothing() as pg:
        config = _config(tmp_path, backend, pg)
        with monkeypatch.context() as m:  # the code as it was before version 4
            m.setattr(store_module, "MIGRATIONS", schema.MIGRATIONS[:3])
            m.setattr(store_module, "LATEST", 3)
            old = open_store(config)
            old.write(
                (
                    [(SERVICE, "c1", now, now, now, "pro", "pro", "sdk", "1.0")],
                    [(day, SERVICE, "c1", "GET", "/v1/orders", "", "sdk", "1.0", 1.0, 0.0, now)],
                    [(SERVICE, "GET", "/v1/orders", 0, now, now)],
                )
            )
            tables = {t for (t,) in old.query(_TABLES[backend])}
            assert not tables & {"consumer_parameters", "parameters", "consumer_feedback"}
            old.close()
        store = open_store(config)
        try:
            assert [v for (v,) in store.query("SELECT version FROM schema_migrations ORDER BY 1")] == [
                1,
                2,
                3,
                4,
                5,  # migrations 5 and 6 (issue 16) run too
                6,
            ]
            assert store.query("SELECT consumer_id, last_seen FROM consumers") == [("c1", now)]
            for table in ("consumer_parameters", "parameters", "consumer_feedback"):
                assert store.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]
            report = build_report(store, now, None, LimitsConfig())
            assert (
                report.endpoint_consumers[SERVICE, "GET", "/v1/orders", "1d"],
                report.parameter_consumers,
            ) == (
                1,
                {},
            )
            activity = ConsumerActivity(400, PipelineStats())
            activity.consume([request("GET", "/v1/orders", "c1", now, ("limit",))])
            activity.consume_feedback([Feedback(SERVICE, "", "docs", "4", "c1", now * 1_000_000)])
            store.write(activity.drain())
            report = build_report(store, now, None, LimitsConfig())
            assert report.parameter_consumers[SERVICE, "GET", "/v1/orders", "query", "limit", "1d"] == 1
            assert report.feedback_consumers == {(SERVICE, "1d"): 1, (SERVICE, "7d"): 1, (SERVICE, "30d"): 1}
        finally:
            store.close()


_TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table'",
    "postgres": "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
}


def test_parameter_consumers_off_keeps_the_names_per_endpoint_only(tmp_path: Path) -> None:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    now = int(time.time() * 1000)
    cfg = {"catalog": str(tmp_path / "catalog.yaml"), "state": {"parameter_consumers": False}}
    with running_processor(cfg) as running:
        processor = running.processor
        for batch in scenario(now)[0]:
            processor.activity.consume(batch)
        consumers, activity, endpoints, pairs, parameters, feedback, *_ = processor.activity.drain()
        assert (len(pairs), len(parameters)) == (0, 5 + 3 + 1 + 1)  # per endpoint: GET, POST, lines, DELETE
        processor.activity.restore((consumers, activity, endpoints, pairs, parameters, feedback))
        assert processor.state.flush()
        report = build_report(processor.state.store, now, processor.catalog, LimitsConfig())
        assert (report.parameter_consumers, report.unused_parameters) == ({}, EXPECTED_UNUSED)


def test_the_stored_report_carries_the_new_families_and_an_older_one_reads_as_empty(tmp_path: Path) -> None:
    import zlib

    from apiusage.processor.state import snapshot

    catalog_file = tmp_path / "catalog.yaml"
    catalog_file.write_text(CATALOG)
    now = int(time.time() * 1000)
    service = _fill(StateConfig(sqlite=SqliteState(path=str(tmp_path / "s.db"))), tmp_path, now)
    try:
        report = build_report(service.store, now, load_catalog(catalog_file), LimitsConfig())
    finally:
        service.stop()
    loaded = snapshot.loads(snapshot.dumps(report))
    assert (loaded.parameter_consumers, loaded.unused_parameters, loaded.feedback_consumers) == (
        EXPECTED_PARAMETER_CONSUMERS,
        EXPECTED_UNUSED,
        EXPECTED_FEEDBACK,
    )
    assert loaded == report
    # Written by a replica that predates them (a rolling upgrade): the families are empty.
    doc = json.loads(zlib.decompress(snapshot.dumps(report)))
    for name in ("parameter_consumers", "unused_parameters", "feedback_consumers"):
        del doc[name]
    older = snapshot.loads(zlib.compress(json.dumps(doc).encode()))
    assert (older.parameter_consumers, older.unused_parameters, older.feedback_consumers) == ({}, {}, {})
    assert older.endpoint_consumers == report.endpoint_consumers
