"""Attacks on the data path and the state (issue 12, second round): hostile plan lookup files,
unbounded state backlogs, trace backends that never finish, config amplification, and state
databases that vanish or fill up while the processor runs."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import shutil
import sqlite3
import subprocess
import time
import tracemalloc
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiusage.processor._typedload import Duration

from tests.support import usage_scenario as sc
from tests.support.cli_run import run_apiusage
from tests.support.components import missing
from tests.support.hostile_backends import (
    ScriptedBackend,
    answer_endless,
    answer_ok,
    answer_trickling,
    answer_trickling_head,
)
from tests.support.polling import wait_until
from tests.support.postgres import postgres_server
from tests.support.processor import running_processor, sample, start_processor, wait_for

pytestmark = pytest.mark.slow


@contextlib.contextmanager
def _unblocking(fifo: Path) -> Iterator[None]:
    """Whatever the code under test does, a reader blocked opening `fifo` is released at the end
    (opening the write side lets its open() return; closing it gives it end of file)."""
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


PLAN_FILE_LIMIT = 256 << 20  # processor.derive.plans.MAX_PLAN_FILE_BYTES


# --- the plan lookup file ---------------------------------------------------------------------


def test_a_plan_lookup_file_replaced_by_a_fifo_is_refused_at_once_and_refreshes_go_on(
    tmp_path, caplog
) -> None:
    plans = tmp_path / "plans.csv"
    plans.write_text("consumer_id,plan_tier\nc000,enterprise\n")
    config = {
        "processors": {"plan_lookup": {"file": str(plans), "refresh_interval": "1s"}},
        "state": {"flush_interval": "100ms", "refresh_interval": "100ms"},
    }
    caplog.set_level(logging.ERROR, logger="apiusage.processor.state")
    message = (
        f"cannot read plan lookup file {plans}: it is a FIFO, not a regular file "
        "(keeping the previous 1 entries)"
    )
    with running_processor(config) as running, _unblocking(plans):
        lookup = running.processor.plans
        plans.unlink()
        os.mkfifo(plans)  # nobody ever writes to it: a blocking open() would wait for ever
        deadline = time.monotonic() + 8
        while message not in caplog.messages:
            assert time.monotonic() < deadline, f"no log line; got {caplog.messages}"
            time.sleep(0.05)
        assert lookup.plans == {"c000": "enterprise"}
        # The refresh thread (which reloads the lookup) was not held: refreshes go on.
        before = sample(running.scrape(), "apiusage_state_refreshes_total", outcome="success")
        deadline = time.monotonic() + 8
        while sample(running.scrape(), "apiusage_state_refreshes_total", outcome="success") <= before:
            assert time.monotonic() < deadline, "no refresh after the FIFO"
            time.sleep(0.1)


def test_a_huge_plan_lookup_file_is_refused_unread(tmp_path) -> None:
    from apiusage.processor.derive.plans import PlanLookup, PlanLookupError

    plans = tmp_path / "plans.csv"
    plans.write_text("consumer_id,plan_tier\nc000,enterprise\n")
    lookup = PlanLookup(str(plans))
    assert lookup.load() == 1
    with plans.open("r+b") as f:  # sparse: costs no disk, but reading it would cost 257 MiB
        f.truncate(PLAN_FILE_LIMIT + (1 << 20))
    started = time.monotonic()
    with pytest.raises(PlanLookupError) as caught:
        lookup.load()
    assert str(caught.value) == (
        f"plan lookup file {plans} is not accepted: "
        f"{PLAN_FILE_LIMIT + (1 << 20)} bytes, at most 268435456 (256 MiB)"
    )
    assert time.monotonic() - started < 2.0
    assert lookup.plans == {"c000": "enterprise"}


# --- the state backlog ------------------------------------------------------------------------


def _anonymous(routes: range) -> list:
    """Spans of no consumer (no consumer id), each on its own route: only endpoint rows."""
    from apiusage.processor.derive.requests import ApiRequest

    now_ns = time.time_ns()
    return [
        ApiRequest(
            "orders",
            "GET",
            f"/r/{i:06d}",
            "200",
            "free",
            "false",
            "sdk",
            "1.0",
            None,
            None,
            None,
            0.01,
            1.0,
            now_ns,
            b"t" * 16,
            b"s" * 8,
        )
        for i in routes
    ]


def test_distinct_routes_without_consumers_meet_the_backlog_bound() -> None:
    from apiusage.processor.state.activity import ConsumerActivity
    from apiusage.processor.telemetry import PipelineStats

    activity = ConsumerActivity(40, PipelineStats(), max_pending=1_000)
    activity.consume(_anonymous(range(999)))
    row = 300 + len("orders") + len("GET") + len("/r/000000")
    assert (activity.pending(), activity.pending_bytes(), activity.backlogged()) == (999, 999 * row, False)
    activity.consume(_anonymous(range(999, 1_000)))
    assert (activity.pending(), activity.backlogged()) == (1_000, True)
    # A store that never comes back: past twice the bound new rows are dropped and counted.
    activity.consume(_anonymous(range(1_000, 5_000)))
    assert (activity.pending(), activity.rows_dropped) == (2_000, 3_000)
    batch = activity.drain()
    assert len(batch[2]) == 2_000 and activity.pending() == 2_000  # drained: still owed
    activity.consume(_anonymous(range(5_000, 5_010)))  # nothing more fits while it is written
    activity.restore(batch)
    assert (activity.pending(), activity.rows_dropped) == (2_000, 3_010)


# --- the trace forwarder ----------------------------------------------------------------------


@contextlib.contextmanager
def _forwarder(backend: ScriptedBackend, timeout: str = "1s") -> Iterator:
    from apiusage.processor.config import OtlpForwarder
    from apiusage.processor.exporters.otlp_forward import Forwarder

    forwarder = Forwarder(
        OtlpForwarder(
            endpoint=f"http://127.0.0.1:{backend.port}", timeout=Duration(float(timeout.removesuffix("s")))
        )
    )
    forwarder.start()
    try:
        yield forwarder
    finally:
        backend.close()
        forwarder.stop(5)


def _wait_outcomes(forwarder, want: dict[str, int], timeout: float) -> None:
    wait_until(
        lambda: forwarder.outcomes["traces"] == want,
        timeout,
        lambda: f"outcomes {want} (got {forwarder.outcomes})",
    )


@pytest.mark.parametrize(
    ("trickle", "requests"),
    [
        # The 200 status line came before the body: it stands; the connection is not reused.
        (answer_trickling, 2),
        # No status line by the deadline: a failed attempt, retried on a new connection.
        (answer_trickling_head, 3),
    ],
    ids=["body", "headers"],
)
def test_a_backend_trickling_its_answer_holds_the_forwarder_one_timeout_not_for_ever(
    trickle, requests
) -> None:
    backend = ScriptedBackend([trickle, answer_ok])
    with _forwarder(backend, "1s") as forwarder:
        started = time.monotonic()
        forwarder.forward(b"first")
        forwarder.forward(b"second")
        # Each read takes 0.2 s, far within the 1 s timeout: only a deadline per attempt ends it.
        _wait_outcomes(forwarder, {"success": 2, "failure": 0, "dropped": 0}, timeout=8)
        assert 1.0 <= time.monotonic() - started < 6.0
        assert (backend.connections, backend.requests, forwarder.depth) == (2, requests, 0)


def test_a_backend_answering_without_end_is_read_64_kib_deep_and_the_connection_closed() -> None:
    backend = ScriptedBackend([answer_endless, answer_ok])
    with _forwarder(backend, "5s") as forwarder:
        forwarder.forward(b"first")
        forwarder.forward(b"second")
        _wait_outcomes(forwarder, {"success": 2, "failure": 0, "dropped": 0}, timeout=8)
        # What the client did not read stays in the socket buffers (a few MiB at most on
        # loopback), far from the 100 MiB announced: the forwarder stopped reading at 64 KiB.
        assert backend.body_sent < 16 << 20
        assert (backend.connections, backend.requests) == (2, 2)


# --- hostile config ---------------------------------------------------------------------------


def test_env_references_cannot_amplify_the_1_mib_config_into_gigabytes(tmp_path, monkeypatch) -> None:
    # 100 KB: an environment string can hold at most 128 KiB (Linux MAX_ARG_STRLEN).
    monkeypatch.setenv("APIUSAGE_TEST_BIG", "x" * 100_000)
    # 21 bytes of file per reference, 100 KB of value each: 300 MB from a 63 KB file.
    (tmp_path / "c.yaml").write_text('catalog: "' + "${APIUSAGE_TEST_BIG}" * 3000 + '"\n')
    run = run_apiusage(["serve", "--config", "c.yaml"], tmp_path)
    assert (run.returncode, run.stdout, run.stderr) == (
        2,
        "",
        "apiusage: c.yaml is invalid:\n  catalog: expands to more than 65536 characters "
        "(${env:...} included)\n",
    )
    assert run.peak_rss_bytes < 200 << 20, f"peak RSS {run.peak_rss_bytes >> 20} MiB"


# --- the SQLite file deleted or replaced under a running processor ----------------------------


def _consumers_in(db: Path) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT COUNT(*), COUNT(DISTINCT consumer_id) FROM consumers").fetchall()
    finally:
        conn.close()


def _remove(db: Path) -> None:
    for name in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
        name.unlink(missing_ok=True)  # `rm state.db*`, as an operator cleaning up would


@pytest.mark.parametrize("what", ["files", "folder"])
def test_a_database_deleted_while_running_is_recreated_with_its_history(tmp_path, caplog, what) -> None:
    db = tmp_path / "state" / "state.db"
    config = {"state": {"sqlite": {"path": str(db)}, "flush_interval": "100ms", "refresh_interval": "1h"}}
    caplog.set_level(logging.INFO, logger="apiusage.processor.state")
    with running_processor(config) as running:
        sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
        running.wait_processed(10)
        wait_for(running, "apiusage_state_pending_rows", 0)
        if what == "folder":
            shutil.rmtree(db.parent)
        else:
            _remove(db)
        sc.send(running.http_endpoint, sc.recent_consumers(10, 20))
        running.wait_processed(20)
        m = wait_for(running, "apiusage_state_pending_rows", 0)
        assert sample(m, "apiusage_state_up") == 1
        assert _consumers_in(db) == [(20, 20)]  # while running: the first 10 were not lost
    assert _consumers_in(db) == [(20, 20)]  # and after the shutdown
    assert not Path(f"{db}.recovered").exists()
    assert (
        f"SQLite state database {db} was deleted while the processor ran: recreating it from "
        "the open connection, history included"
    ) in caplog.messages
    assert f"SQLite state database {db} is in use again" in caplog.messages


def test_a_database_replaced_while_running_is_the_one_written(tmp_path, caplog) -> None:
    from apiusage.processor.config import SqliteState, StateConfig
    from apiusage.processor.state.store import open_store

    db = tmp_path / "state.db"
    config = {"state": {"sqlite": {"path": str(db)}, "flush_interval": "100ms", "refresh_interval": "1h"}}
    caplog.set_level(logging.INFO, logger="apiusage.processor.state")
    with running_processor(config) as running:
        sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
        running.wait_processed(10)
        wait_for(running, "apiusage_state_pending_rows", 0)
        fresh = tmp_path / "restored.db"  # say, last night's backup, put in place
        open_store(StateConfig(sqlite=SqliteState(path=str(fresh)))).close()
        _remove(db)
        fresh.rename(db)
        sc.send(running.http_endpoint, sc.recent_consumers(10, 15))
        running.wait_processed(15)
        wait_for(running, "apiusage_state_pending_rows", 0)
        assert _consumers_in(db) == [(5, 5)]
    assert _consumers_in(db) == [(5, 5)]
    assert (
        f"SQLite state database {db} was replaced while the processor ran: writing to the new "
        "file from now on (the old one's rows are not in it)"
    ) in caplog.messages


# --- a full disk under the SQLite file --------------------------------------------------------


@contextlib.contextmanager
def _small_disk(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if result.returncode:
        missing(f"mount -t tmpfs ({result.stderr.strip()})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=10)


def _fill(disk: Path) -> Path:
    """Take every free byte of `disk` with one file."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        with contextlib.suppress(OSError):
            for _ in range(1 << 20):  # bounded: a 4 GiB disk at most
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_fails_flushes_loudly_keeps_the_rows_and_recovers(tmp_path, caplog) -> None:
    with _small_disk(tmp_path / "disk", "2m") as disk:
        db = disk / "state.db"
        config = {
            "state": {"sqlite": {"path": str(db)}, "flush_interval": "100ms", "refresh_interval": "200ms"}
        }
        caplog.set_level(logging.INFO, logger="apiusage.processor.state")
        with running_processor(config) as running:
            sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
            running.wait_processed(10)
            wait_for(running, "apiusage_state_pending_rows", 0)
            filler = _fill(disk)
            sc.send(running.http_endpoint, sc.recent_consumers(10, 400))
            running.wait_processed(400)
            m = wait_for(running, "apiusage_state_up", 0)
            assert sample(m, "apiusage_state_flushes_total", outcome="failure") >= 1
            assert sample(m, "apiusage_state_pending_rows") == 781  # 390 consumers, 390 activity, 0+1
            filler.unlink()
            m = wait_for(running, "apiusage_state_pending_rows", 0)
            assert sample(m, "apiusage_state_up") == 1
            assert sample(m, "apiusage_state_rows_dropped_total") == 0
            assert _consumers_in(db) == [(400, 400)]
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert [r.exc_info for r in errors] == [None] * len(errors)  # no traceback in the log
        assert any(
            r.getMessage().startswith(
                "state flush failed; counting in memory and retrying: "
                f"cannot write to sqlite:{db}: database or disk is full"
            )
            for r in errors
        ), [r.getMessage() for r in errors]
        assert _consumers_in(db) == [(400, 400)]


@pytest.mark.parametrize("char", ["a", "\U0001f600"], ids=["ascii", "emoji"])
def test_the_backlog_byte_estimate_covers_what_distinct_long_labels_really_take(char) -> None:
    from apiusage.processor.derive.requests import ApiRequest
    from apiusage.processor.state.activity import ConsumerActivity
    from apiusage.processor.telemetry import PipelineStats

    now_ns = time.time_ns()

    def label(i: int) -> str:  # 128 characters, the longest label a span keeps
        return char * 122 + f"{i:06d}"

    # Every string distinct, every row new: nothing shared for the estimate to lean on.
    tracemalloc.start()
    try:
        spans = [
            ApiRequest(
                label(i),
                "GET",
                label(i),
                "200",
                label(i),
                "false",
                label(i),
                label(i),
                None,
                label(i),
                char * 250 + f"{i:06d}",
                0.01,
                1.0,
                now_ns,
                b"t" * 16,
                b"s" * 8,
            )
            for i in range(2_000)
        ]
        activity = ConsumerActivity(40, PipelineStats(), max_pending=1_000_000, max_pending_bytes=1 << 40)
        activity.consume(spans)
        del spans
        gc.collect()
        retained, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert activity.pending() == 6_000
    # The bound is in estimated bytes: the estimate must not be below what the rows hold.
    assert activity.pending_bytes() >= retained, (activity.pending_bytes(), retained)


# --- a state store that stops answering -------------------------------------------------------


def test_a_flush_that_does_not_return_marks_the_state_down_until_it_does(tmp_path, caplog) -> None:
    db = tmp_path / "state.db"
    config = {"state": {"sqlite": {"path": str(db)}, "flush_interval": "100ms", "refresh_interval": "1h"}}
    caplog.set_level(logging.INFO, logger="apiusage.processor.state")
    with running_processor(config) as running:
        blocker = sqlite3.connect(db, isolation_level=None, timeout=10)
        blocker.execute("BEGIN IMMEDIATE")  # the flush waits its 10 s busy timeout: no failure yet
        try:
            started = time.monotonic()
            sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
            running.wait_processed(10)
            m = wait_for(running, "apiusage_state_up", 0, timeout=8)  # stuck past 5 s: down
            assert 5.0 <= time.monotonic() - started < 9.5
            assert sample(m, "apiusage_state_flushes_total", outcome="failure") == 0
            assert sample(m, "apiusage_state_pending_rows") == 21
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        m = wait_for(running, "apiusage_state_pending_rows", 0, timeout=15)
        assert sample(m, "apiusage_state_up") == 1
    stuck = [msg for msg in caplog.messages if msg.startswith("state flush has been writing for ")]
    assert len(stuck) == 1, caplog.messages
    assert stuck[0].endswith("s (more than 5s): the state store is not answering; counting in memory")
    assert _consumers_in(db) == [(10, 10)]


# --- worker CPU per hostile byte ----------------------------------------------------------------


@pytest.mark.parametrize(
    "tracestate",
    [
        "," * (16 << 20),  # 16 Mi empty members
        "ot=" + "th:1;" * (3 << 20),  # an `ot` value of 3 Mi fields
        "ot=th:8," + "x=y," * (4 << 20),  # valid first member, then 4 Mi more
    ],
    ids=["commas", "ot-fields", "members"],
)
def test_a_16_mib_tracestate_costs_the_worker_milliseconds(tracestate) -> None:
    from apiusage.processor.derive.sampling import adjusted_count

    started = time.perf_counter()
    weight = adjusted_count(tracestate)
    took = time.perf_counter() - started
    assert weight == (2.0 if tracestate.startswith("ot=th:8,") else 1.0)
    # W3C: 32 members of at most 256 characters; what lies beyond is not split (it took 0.7-1.4 s).
    assert took < 0.3, f"{took:.3f} s"


def test_sanitizing_a_16_mib_label_value_costs_milliseconds() -> None:
    from apiusage.processor.derive.series import sanitize_label_value

    started = time.perf_counter()
    value = sanitize_label_value("\x01" * (16 << 20), 128)
    took = time.perf_counter() - started
    assert value == " " * 127 + "…"
    assert took < 0.3, f"{took:.3f} s"


# --- SQL that reaches the read connections ------------------------------------------------------


def test_a_plan_lookup_query_that_writes_is_refused_on_postgresql(caplog) -> None:
    import psycopg  # installed by the project: missing, the test fails rather than skips

    with postgres_server() as pg:
        config = {
            "state": {"postgres": {"dsn": pg.dsn}, "flush_interval": "100ms", "refresh_interval": "100ms"},
            # A DELETE cannot stand in the subquery the lookup is wrapped in; a function can.
            "processors": {
                "plan_lookup": {
                    "sql": "SELECT consumer_id, 'free' FROM consumers WHERE wipe() = 1",
                    "refresh_interval": "1s",
                }
            },
        }
        caplog.set_level(logging.ERROR, logger="apiusage.processor.state")
        with running_processor(config) as running:
            with psycopg.connect(pg.dsn, autocommit=True) as conn:
                conn.execute(
                    "CREATE FUNCTION wipe() RETURNS int LANGUAGE sql AS 'DELETE FROM consumers; SELECT 1'"
                )
            sc.send(running.http_endpoint, sc.recent_consumers(0, 10))
            running.wait_processed(10)
            wait_for(running, "apiusage_state_pending_rows", 0)
            deadline = time.monotonic() + 8
            while not any("read-only transaction" in m for m in caplog.messages):
                assert time.monotonic() < deadline, caplog.messages
                assert running.processor.state.read(lambda s: s.query("SELECT COUNT(*) FROM consumers")) == [
                    (10,)
                ]
                time.sleep(0.05)
            count = running.processor.state.read(lambda s: s.query("SELECT COUNT(*) FROM consumers"))
            assert count == [(10,)]
        failed = [m for m in caplog.messages if "read-only transaction" in m]
        assert failed[0].startswith("processors.plan_lookup.sql failed: cannot read postgres://"), failed
        assert "cannot execute DELETE in a read-only transaction" in failed[0], failed


@pytest.mark.parametrize("source", ["file", "sql"])
def test_a_plan_lookup_past_its_entry_bound_is_refused_before_it_is_built(
    tmp_path, monkeypatch, source
) -> None:
    from apiusage.processor.derive import plans as module

    assert getattr(module, "MAX_PLAN_ENTRIES", 2_000_000) == 2_000_000
    monkeypatch.setattr(module, "MAX_PLAN_ENTRIES", 1_000, raising=False)  # the test's scale
    rows = 300_000  # 13 bytes a row: 4 MB of file, well within the 256 MiB bound
    if source == "file":
        plans = tmp_path / "plans.csv"
        with plans.open("w") as f:
            f.write("consumer_id,plan_tier\n")
            f.writelines(f"{i:08d},free\n" for i in range(rows))
        lookup, query, where = module.PlanLookup(str(plans)), None, f"plan lookup file {plans}"
    else:
        db = sqlite3.connect(":memory:")
        sql = (
            f"WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {rows - 1}) "
            "SELECT printf('%08d', i), 'free' FROM n;"
        )
        lookup, where = module.PlanLookup(sql=sql), "processors.plan_lookup.sql"

        def query(text: str) -> list[tuple]:
            return db.execute(text).fetchall()

    lookup.plans = {"kept": "enterprise"}
    started = time.monotonic()
    with pytest.raises(module.PlanLookupError) as caught:
        lookup.load(query)
    assert str(caught.value) == (f"{where} has more than 1000 rows; a lookup holds at most 1000 consumers")
    assert lookup.plans == {"kept": "enterprise"}
    # Row by row (and LIMIT for SQL): the 299,000 rows past the bound are never built.
    assert time.monotonic() - started < 0.5


def test_forwarder_headers_with_line_breaks_are_refused_at_start_up() -> None:
    from apiusage.processor.config import ConfigError, parse_config

    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "exporters": {
                    "otlp": {
                        "endpoint": "http://127.0.0.1:4318",
                        "headers": {
                            "Authorization": "Bearer x\r\nX-Injected: 1",
                            "Bad Name": "x",
                            "X-Tab": "a\tb",
                        },
                    }
                }
            }
        )
    assert str(caught.value) == (
        "(inline) is invalid:\n"
        "  exporters.otlp.headers.Authorization: must be text without control characters "
        "(CR, LF, NUL...)\n"
        "  exporters.otlp.headers: 'Bad Name' is not an HTTP header name (letters, digits and "
        "!#$%&'*+-.^_`|~)"
    )


# --- bodies that are small on the wire and large in memory --------------------------------------


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _empty_spans_body(n: int) -> bytes:
    """An ExportTraceServiceRequest of one resource, one scope and `n` empty spans (2 bytes each)."""

    def varint(x: int) -> bytes:
        out = bytearray()
        while True:
            out.append((x & 0x7F) | (0x80 if x > 0x7F else 0))
            x >>= 7
            if not x:
                return bytes(out)

    spans = b"\x12\x00" * n
    scope = b"\x12" + varint(len(spans)) + spans
    return b"\x0a" + varint(len(scope)) + scope


def test_a_4_mib_body_of_2_million_empty_spans_costs_less_than_150_mib(tmp_path) -> None:
    body = _empty_spans_body(2_000_000)
    with start_processor(tmp_path, {"processors": {"queue": {"max_spans": 100_000}}}) as running:
        before = _peak_rss(running.process.pid)
        request = urllib.request.Request(
            f"{running.http_endpoint}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        # Refused before span 100,001 is built (receivers.otlp.max_spans_per_request).
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=15).close()
        info.value.close()
        assert info.value.code == 413
        growth = _peak_rss(running.process.pid) - before
    assert growth < 150 << 20, f"peak RSS grew {growth >> 20} MiB for a {len(body) >> 20} MiB body"


def test_a_350_kib_json_body_of_empty_spans_is_answered_within_half_a_second() -> None:
    # Before: json_format.ParseDict built every span as a message; an 8 MiB body of `{}` spans took
    # 32 s and 450 MiB. Spans are counted in the parsed document before ParseDict runs.
    from apiusage.processor.receivers.payload import PayloadTooLarge, json_to_protobuf

    body = b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b",".join([b"{}"] * 120_000) + b"]}]}]}"
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge) as info:
        json_to_protobuf(body, 100_000)
    took = time.monotonic() - started
    assert str(info.value) == (
        "more than 100000 spans in one request; send smaller batches (the limit "
        "is receivers.otlp.max_spans_per_request)"
    )
    assert took < 0.5, f"{took:.1f} s for {len(body) >> 10} KiB"


def test_a_json_body_of_more_objects_than_its_spans_could_hold_is_refused_unparsed() -> None:
    # 8 MiB of `{}`: json.loads alone would build four million dicts (~400 MiB).
    from apiusage.processor.receivers.payload import PayloadTooLarge, json_to_protobuf

    body = (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":['
        + b",".join([b"{}"] * 4_000_000)
        + b"]}]}]}]}"
    )
    started = time.monotonic()
    with pytest.raises(PayloadTooLarge) as info:
        json_to_protobuf(body, 1000)
    assert time.monotonic() - started < 0.5
    assert str(info.value) == (
        "JSON body has more than 65024 objects, more than 1000 spans could hold "
        "(receivers.otlp.max_spans_per_request)"
    )


def test_more_spans_than_max_spans_per_request_is_413_on_both_transports() -> None:
    import grpc
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tests.support.otlp import request_with_spans

    config = {"receivers": {"otlp": {"max_spans_per_request": 100}}}
    with running_processor(config) as running:
        body = request_with_spans(101).SerializeToString()
        request = urllib.request.Request(
            f"{running.http_endpoint}/v1/traces",
            data=body,
            headers={"Content-Type": "application/x-protobuf"},
        )
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=5)
        info.value.close()
        assert info.value.code == 413
        with grpc.insecure_channel(running.grpc_endpoint) as channel:
            export = channel.unary_unary(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                request_serializer=ExportTraceServiceRequest.SerializeToString,
            )
            with pytest.raises(grpc.RpcError) as rpc:
                export(request_with_spans(101), timeout=5)
            assert rpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert rpc.value.details() == (
                "more than 100 spans in one request; send smaller batches "
                "(the limit is receivers.otlp.max_spans_per_request)"
            )
            export(request_with_spans(100), timeout=5)
        m = running.wait_processed(100)
        assert sample(m, "apiusage_export_requests_total", transport="http", outcome="too_large") == 1
        assert sample(m, "apiusage_export_requests_total", transport="grpc", outcome="too_large") == 1
        assert sample(m, "apiusage_export_requests_total", transport="grpc", outcome="success") == 1
