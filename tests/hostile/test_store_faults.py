"""Faulty state stores, audit logs, plan lookups and trace backends (issue 12, items 14-17):
refused at start-up with one line naming the key, or survived at run time, counted and logged."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from apiusage.processor.config import SqliteState, StateConfig
from apiusage.processor.state.store import open_store
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support import usage_scenario as sc
from tests.support.postgres import postgres_server
from tests.support.processor import (
    LOOPBACK_CONFIG,
    apiusage_command,
    get,
    merge,
    running_processor,
    sample,
    start_processor,
    wait_for,
)
from tests.support.state_faults import SilentBackend, damage, immutable, seed_history

pytestmark = pytest.mark.slow

TOKEN = "s3cret-admin-token-0123456789"


def serve(tmp_path: Path, extra: dict) -> subprocess.CompletedProcess:
    """`apiusage serve` that is expected to refuse to start."""
    config = tmp_path / "apiusage.yaml"
    config.write_text(yaml.safe_dump(merge(LOOPBACK_CONFIG, extra)))
    return subprocess.run(
        [*apiusage_command(), "serve", "--config", str(config)], capture_output=True, text=True, timeout=20
    )


def post(endpoint: str, batch: list[dict]) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{endpoint}/v1/traces", data=sc.request(batch), headers={"Content-Type": "application/x-protobuf"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


# --- item 15: the store, the audit log -----------------------------------------------------


def test_a_read_only_database_file_stops_start_up_naming_it(tmp_path) -> None:
    db = tmp_path / "state.db"
    open_store(StateConfig(sqlite=SqliteState(path=str(db)))).close()
    with immutable(db):
        result = serve(tmp_path, {"state": {"sqlite": {"path": str(db)}}})
    assert result.returncode == 2
    assert result.stderr == (
        f"apiusage: SQLite state database {db} is read-only (attempt to write "
        "a readonly database): make it writable or point state.sqlite.path "
        "elsewhere\n"
    )


def test_a_database_with_damaged_pages_stops_start_up_naming_it(tmp_path) -> None:
    db = tmp_path / "state.db"
    seed_history(db, 300, days=3)
    damage(db, first_page=3, pages=6)
    result = serve(tmp_path, {"state": {"sqlite": {"path": str(db)}}})
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"apiusage: SQLite state database {db} is damaged (PRAGMA quick_check: Page ")
    assert lines[0].endswith("); restore it from a backup or move it away (state.sqlite.path)")


def test_a_final_flush_that_fails_at_sigterm_is_logged_and_the_exit_status_says_so(tmp_path) -> None:
    with postgres_server() as pg:
        config = {"state": {"postgres": {"dsn": pg.dsn}, "flush_interval": "1h", "refresh_interval": "1h"}}
        with start_processor(tmp_path, config) as running:
            sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
            running.wait_processed(10)
            # 10 consumer rows, 10 activity rows and the one endpoint row
            assert sample(running.scrape(), "apiusage_state_pending_rows") == 21
            pg.stop()
            running.process.send_signal(signal.SIGTERM)
            _, stderr = running.process.communicate(timeout=30)
            status = running.process.returncode
            pg.start()  # the fixture stops it again
    assert status == 1
    lost = [line for line in stderr.splitlines() if "final flush" in line]
    assert len(lost) == 1, stderr
    assert lost[0].endswith(
        "state final flush failed: 21 rows not written to "
        f"postgres://127.0.0.1:{pg.dsn.rsplit(':', 1)[1].split('/')[0]}/"
        "postgres are lost"
    ), lost


def test_an_unwritable_audit_log_stops_start_up_naming_admin_audit_log(tmp_path) -> None:
    (tmp_path / "audit").mkdir()  # a folder where the log file should be: no one can append
    result = serve(
        tmp_path,
        {
            "state": {"sqlite": {"path": str(tmp_path / "s.db")}},
            "admin": {"token": TOKEN, "endpoint": "127.0.0.1:0", "audit_log": str(tmp_path / "audit")},
        },
    )
    assert result.returncode == 2
    assert result.stderr == (
        f"apiusage: admin.audit_log: cannot append to the audit log {tmp_path / 'audit'}: Is a directory\n"
    )


def test_an_audit_log_that_fails_later_answers_503_and_discloses_nothing(tmp_path) -> None:
    audit = tmp_path / "audit.log"
    config = {"admin": {"token": TOKEN, "endpoint": "127.0.0.1:0", "audit_log": str(audit)}}
    with running_processor(config) as running:
        url = running.processor.urls()["admin"] + "/at-risk"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert get(url, auth)[0] == 200
        audit.unlink()
        audit.mkdir()  # the log can no longer be appended to
        status, body, _ = get(url, auth)
        assert (status, json.loads(body)) == (
            503,
            {"error": "the audit log cannot be written (Is a directory); no consumer ids without it"},
        )
        assert get(url)[0] == 503  # not even a 401 goes unaudited


# --- item 16: plan lookup reloads ------------------------------------------------------------


def test_plan_lookup_reload_errors_keep_the_previous_table_and_the_state_threads_go_on(
    tmp_path, caplog
) -> None:
    plans = tmp_path / "plans.csv"
    plans.write_text("consumer_id,plan_tier\nc000,enterprise\n")
    config = {
        "processors": {"plan_lookup": {"file": str(plans), "refresh_interval": "1s"}},
        "state": {"flush_interval": "100ms", "refresh_interval": "100ms"},
    }
    caplog.set_level(logging.ERROR, logger="apiusage.processor.state")
    with running_processor(config) as running:
        lookup = running.processor.plans
        faults = [
            (
                "field",
                lambda: plans.write_text("consumer_id,plan_tier\nc1," + "x" * 200_000 + "\n"),
                f"plan lookup file {plans}, line 2: field larger than field limit (131072) "
                "(keeping the previous 1 entries)",
            ),
            (
                "folder",
                lambda: (plans.unlink(), plans.mkdir()),
                f"cannot read plan lookup file {plans}: [Errno 21] Is a directory: '{plans}' "
                "(keeping the previous 1 entries)",
            ),
            (
                "utf-8",
                lambda: (plans.rmdir(), plans.write_bytes(b"consumer_id,plan_tier\nc1,\xff\xfe\n")),
                f"cannot read plan lookup file {plans}: 'utf-8' codec can't decode byte 0xff in "
                "position 25: invalid start byte (keeping the previous 1 entries)",
            ),
        ]
        sent = 0
        for name, break_it, message in faults:
            caplog.clear()
            before = running.scrape()
            break_it()
            deadline = time.monotonic() + 10
            while message not in caplog.messages:
                assert time.monotonic() < deadline, f"{name}: no log line; got {caplog.messages}"
                time.sleep(0.05)
            assert lookup.plans == {"c000": "enterprise"}, name
            # Flushes and refreshes go on after the failed reload.
            sc.send(running.http_endpoint, sc.recent_consumers(sent, sent + 5))
            sent += 5
            running.wait_processed(sent)
            m = wait_for(running, "apiusage_state_pending_rows", 0)
            written = "apiusage_state_rows_written_total"  # 5 consumers, 5 activity, 1 endpoint
            assert sample(m, written) - sample(before, written) == 11, name
            flushes = "apiusage_state_flushes_total"
            assert sample(m, flushes, outcome="success") > sample(before, flushes, outcome="success")
            refreshes = "apiusage_state_refreshes_total"
            deadline = time.monotonic() + 10
            while sample(m, refreshes, outcome="success") <= sample(before, refreshes, outcome="success"):
                assert time.monotonic() < deadline, f"{name}: no refresh after the failed reload"
                time.sleep(0.1)
                m = running.scrape()
            assert caplog.messages.count(message) >= 1
        plans.write_text("consumer_id,plan_tier\nc001,team\n")
        deadline = time.monotonic() + 10
        while lookup.plans != {"c001": "team"}:
            assert time.monotonic() < deadline, "a good file after the bad ones is not loaded"
            time.sleep(0.05)


# --- item 14: the pending backlog is bounded, with back-pressure -----------------------------


def test_a_backlog_at_its_bound_refuses_exports_retryably_and_drops_nothing(tmp_path) -> None:
    db = tmp_path / "state.db"
    config = {
        "state": {
            "sqlite": {"path": str(db)},
            "flush_interval": "100ms",
            "refresh_interval": "1h",
            "max_pending_rows": 40,
        }
    }
    with running_processor(config) as running:
        blocker = sqlite3.connect(db, isolation_level=None, timeout=10)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database: flushes wait
        try:
            # 10 consumers: 10 consumer rows + 10 activity rows each, and one endpoint row
            for i in range(2):
                assert post(running.http_endpoint, sc.recent_consumers(10 * i, 10 * i + 10))[0] == 200
                running.wait_processed(10 * i + 10)
            m = running.scrape()
            assert sample(m, "apiusage_state_pending_rows") == 41
            status, headers = post(running.http_endpoint, sc.recent_consumers(20, 30))
            assert (status, headers["Retry-After"]) == (503, "5")
            channel = grpc.insecure_channel(running.grpc_endpoint)
            try:
                with pytest.raises(grpc.RpcError) as info:
                    trace_service_pb2_grpc.TraceServiceStub(channel).Export(
                        ExportTraceServiceRequest.FromString(sc.request(sc.recent_consumers(20, 30))),
                        timeout=5,
                    )
            finally:
                channel.close()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "state.max_pending_rows" in info.value.details()
            assert running.processor.readiness() == (False, "state store backlog full")
            m = running.scrape()
            assert sample(m, "apiusage_export_requests_total", transport="http", outcome="state_backlog") == 1
            assert sample(m, "apiusage_export_requests_total", transport="grpc", outcome="state_backlog") == 1
            assert sample(m, "apiusage_spans_processed_total") == 20
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        m = wait_for(running, "apiusage_state_pending_rows", 0, timeout=20)
        assert sample(m, "apiusage_state_rows_dropped_total") == 0
        assert post(running.http_endpoint, sc.recent_consumers(20, 30))[0] == 200
        running.wait_processed(30)
        wait_for(running, "apiusage_state_pending_rows", 0)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM consumers").fetchall() == [(30,)]


# --- item 17: the trace forwarder is bounded in bytes ----------------------------------------


def test_a_backend_that_never_answers_bounds_the_forward_queue_in_bytes(tmp_path) -> None:
    backend = SilentBackend()
    limit = 20_000
    config = {
        "exporters": {
            "otlp": {
                "endpoint": f"http://127.0.0.1:{backend.port}",
                "timeout": "30s",
                "max_queue_bytes": limit,
                "max_queue_requests": 1000,
            }
        }
    }
    try:
        with running_processor(config) as running:
            batches = [sc.recent_consumers(10 * i, 10 * i + 10) for i in range(40)]
            bodies = [sc.request(b) for b in batches]
            assert post(running.http_endpoint, batches[0])[0] == 200
            assert backend.first_bytes.wait(10), "the forwarder never reached the backend"
            for batch in batches[1:]:
                assert post(running.http_endpoint, batch)[0] == 200  # ingestion unaffected
            running.wait_processed(400)
            # What the bound lets through: the body in flight, then the queue while it fits.
            held, kept = len(bodies[0]), 1
            size = len(bodies[1])
            while kept < len(bodies) and held + size <= limit:
                held, kept = held + size, kept + 1
            m = running.scrape()
            assert sample(m, "apiusage_forward_queue_bytes") == held <= limit
            assert sample(m, "apiusage_forward_queue_requests") == kept - 1
            assert (
                sample(m, "apiusage_forwarded_requests_total", signal="traces", outcome="dropped")
                == 40 - kept
            )
            assert sample(m, "apiusage_forwarded_requests_total", signal="traces", outcome="success") == 0
            assert sample(m, "apiusage_export_requests_total", transport="http", outcome="success") == 40
            backend.close()  # so shutdown does not wait for the 30 s timeout
    finally:
        backend.close()
