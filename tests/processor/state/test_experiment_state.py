"""Experiment state: exposures into experiment_consumers / experiment_days / experiment_latency,
written in the flush transaction on SQLite and PostgreSQL, and the two gauges the refresh
exposes. Exact rows for scripted exposures; first-variant stickiness across flushes and
replicas; contamination; a failed write restored without double counting; the bounds."""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator

import pytest
from apiusage.processor.config import LimitsConfig, PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.exporters.consumer_metrics import ConsumerCollector
from apiusage.processor.state import snapshot
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.experiments import ExperimentActivity, latency_bucket
from apiusage.processor.state.schema import EXPERIMENT_LATENCY_BOUNDS
from apiusage.processor.state.service import StateService, _chunks
from apiusage.processor.state.store import PostgresStore, Store, open_store
from apiusage.processor.telemetry import PipelineStats
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.postgres import postgres_server

S, E = "orders-api", "checkout-v2"
TODAY = int(time.time() * 1000) // DAY_MS
DAY = TODAY - 2
T0 = DAY * DAY_MS + 3_600_000  # 01:00 UTC, two days ago


def x(
    variant: str,
    consumer: str | None,
    at_ms: int,
    code: str = "200",
    duration: float = 0.0078125,
    weight: float = 1.0,
    experiment: str = E,
) -> Exposure:
    return Exposure(
        S, experiment, variant, "POST", "/v2/orders", code, "pro", "sdk", None, consumer, duration, weight,
        at_ms * 1_000_000,
    )  # fmt: skip


def request(consumer: str, at_ms: int, code: str = "200") -> ApiRequest:
    return ApiRequest(
        S, "POST", "/v2/orders", code, "pro", "false", "sdk", "1.0", api_version=None, feature="checkout",
        consumer_id=consumer, duration=0.01, weight=1.0, end_time_ns=at_ms * 1_000_000, trace_id=b"t" * 16,
        span_id=b"s" * 8,
    )  # fmt: skip


def bucket(duration: float) -> int:
    """The definition, spelled out: the first bound >= duration, else len(bounds)."""
    return next((i for i, b in enumerate(EXPERIMENT_LATENCY_BOUNDS) if b >= duration), 51)


@contextlib.contextmanager
def backend(kind: str, tmp_path) -> Iterator[StateConfig]:
    if kind == "postgres":
        with postgres_server() as pg:
            yield StateConfig(postgres=PostgresState(dsn=pg.dsn), retention_days=30)
    else:
        yield StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")), retention_days=30)


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.live)]

# Flush 1: c1 in A (a 2xx, then a 5xx); c2 in B (a 4xx, then a 2xx of weight 2); c3's B exposure
# arrives before its earlier A one (A is its assignment, B contamination); an anonymous request.
FLUSH_1 = [
    x("A", "c1", T0 + 1000, "200", 0.00390625),
    x("A", "c1", T0 + 2000, "503", 0.25),
    x("B", "c2", T0 + 1500, "404", 0.0009765625),
    x("B", "c2", T0 + 3000, "201", 0.0625, weight=2.0),
    x("B", "c3", T0 + 5000, "200", 0.0078125),
    x("A", "c3", T0 + 4000, "500", 0.0078125),
    x("A", None, T0 + 100, "200", 128.0),
    x("B", None, T0 + 200, "200", -1.0),  # ended before it began: a request, no latency
]
# Flush 2, the next day: c1 now seen in B (contamination, it stays in A); c2 again in B; c3 in A
# (its other variant stays B); c3 succeeds in A for the first time.
FLUSH_2 = [
    x("B", "c1", T0 + DAY_MS + 10, "200", 0.001),
    x("B", "c2", T0 + DAY_MS + 20, "200", 0.001),
    x("A", "c3", T0 + DAY_MS + 30, "200", 0.001),
]
CONSUMERS = [
    (S, E, "c1", "A", T0 + 1000, T0 + DAY_MS + 10, T0 + 1000, "B", 3.0),
    (S, E, "c2", "B", T0 + 1500, T0 + DAY_MS + 20, T0 + 3000, None, 4.0),
    (S, E, "c3", "A", T0 + 4000, T0 + DAY_MS + 30, T0 + 5000, "B", 3.0),
]
# Weighted requests, errors, 4xx, duration sum; then the spans, 5xx spans and 4xx spans (c2's
# weight-2 request is two requests but one span).
DAYS = [
    (S, E, "A", DAY, 4.0, 2.0, 0.0, 0.00390625 + 0.25 + 0.0078125 + 128.0, 4, 2, 0),
    (S, E, "A", DAY + 1, 1.0, 0.0, 0.0, 0.001, 1, 0, 0),
    (S, E, "B", DAY, 5.0, 0.0, 1.0, 0.0009765625 + 2 * 0.0625 + 0.0078125, 4, 0, 1),
    (S, E, "B", DAY + 1, 2.0, 0.0, 0.0, 0.002, 2, 0, 0),
]


def latency_rows() -> list[tuple]:
    tally: dict[tuple, list] = {}
    for e in FLUSH_1 + FLUSH_2:
        if e.duration < 0:
            continue
        key = (S, E, e.variant, e.end_time_ns // 1_000_000 // DAY_MS, bucket(e.duration))
        cell = tally.setdefault(key, [0.0, 0])
        cell[0] += e.weight
        cell[1] += 1
    return sorted((*k, *v) for k, v in tally.items())


def rows(store: Store) -> tuple[list, list, list]:
    return (
        store.query("SELECT * FROM experiment_consumers ORDER BY consumer_id"),
        store.query("SELECT * FROM experiment_days ORDER BY variant, day"),
        store.query("SELECT * FROM experiment_latency ORDER BY service, experiment, variant, day, bucket"),
    )


def test_the_latency_bucket_is_the_first_bound_at_or_above_the_duration() -> None:
    bounds = EXPERIMENT_LATENCY_BOUNDS
    assert len(bounds) == 51
    durations = (0.0, 0.001, 0.0010001, bounds[10], bounds[50], bounds[50] * 1.01)
    assert [latency_bucket(d) for d in durations] == [0, 0, 1, 10, 50, 51]
    assert all(latency_bucket(d) == bucket(d) for d in (1e-9, 0.0123, 0.5, 3.3, 69.0, 1e6))


@pytest.mark.parametrize("kind", BACKENDS)
def test_scripted_exposures_give_these_exact_rows_and_the_first_variant_sticks(tmp_path, kind: str) -> None:
    with backend(kind, tmp_path) as config:
        store = open_store(config)
        activity = ConsumerActivity(30, PipelineStats())
        activity.consume_exposures(FLUSH_1)
        batch = activity.drain()
        assert len(batch) == 10 and batch[:6] == ([], [], [], [], [], []) and batch[9] == []  # after the six
        assert sorted(batch[6]) == [
            (S, E, "c1", "A", T0 + 1000, T0 + 2000, T0 + 1000, None, 2.0),
            (S, E, "c2", "B", T0 + 1500, T0 + 3000, T0 + 3000, None, 3.0),
            (S, E, "c3", "A", T0 + 4000, T0 + 5000, T0 + 5000, "B", 2.0),
        ]
        store.write(batch)
        activity.written()
        activity.consume_exposures(FLUSH_2)
        store.write(activity.drain())
        activity.written()
        consumers, days, latency = rows(store)
        assert consumers == CONSUMERS
        assert days == DAYS
        assert latency == latency_rows()
        assert activity.pending() == 0
        store.close()


@pytest.mark.parametrize("kind", BACKENDS)
def test_prune_deletes_experiment_rows_older_than_the_retention(tmp_path, kind: str) -> None:
    with backend(kind, tmp_path) as config:
        store = open_store(config)
        old, new = DAY - 40, DAY
        store.write(
            ([], [], [], [], [], [],
             [(S, E, "gone", "A", old * DAY_MS, old * DAY_MS, None, None, 1.0),
              (S, E, "kept", "A", old * DAY_MS, new * DAY_MS, None, None, 2.0)],
             [(S, E, "A", old, 1.0, 0.0, 0.0, 0.5), (S, E, "A", new, 2.0, 0.0, 0.0, 0.5)],
             [(S, E, "A", old, 3, 1.0), (S, E, "A", new, 3, 2.0)])
        )  # fmt: skip
        deleted = store.prune(TODAY - 30)
        assert {k: v for k, v in deleted.items() if k.startswith("experiment")} == {
            "experiment_consumers": 1,
            "experiment_days": 1,
            "experiment_latency": 1,
        }
        assert [r[2] for r in store.query("SELECT * FROM experiment_consumers")] == ["kept"]
        assert store.query("SELECT day FROM experiment_days") == [(new,)]
        assert store.query("SELECT day FROM experiment_latency") == [(new,)]
        store.close()


def _state(tmp_path, limits: LimitsConfig | None = None, config: StateConfig | None = None) -> StateService:
    config = config or StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")), retention_days=30)
    service = StateService(config, ConsumerActivity(30, PipelineStats()), limits=limits)
    service.open()
    return service


def test_a_failed_write_rolls_back_everything_and_the_retry_counts_once(tmp_path) -> None:
    service = _state(tmp_path)
    activity = service.activity
    try:
        activity.consume([request("c1", T0 + 1000)])
        activity.consume_exposures(FLUSH_1)
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            db.execute(
                "CREATE TRIGGER boom BEFORE INSERT ON experiment_latency "
                "BEGIN SELECT RAISE(ABORT, 'boom'); END"
            )
        assert service.flush() is False
        store = service.store
        assert store is not None
        # One transaction: the consumer row written before the experiment rows is rolled back too.
        assert store.query("SELECT COUNT(*) FROM consumers") == [(0,)]
        assert rows(store) == ([], [], [])
        activity.consume_exposures(FLUSH_2)  # arrives while the failed rows wait in memory
        # Merged with the restored rows, not added beside them: the consumer, activity and endpoint
        # rows, and one row per experiment consumer, day and latency bucket of both flushes.
        assert activity.pending() == 3 + len(CONSUMERS) + len(DAYS) + len(latency_rows())
        with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
            db.execute("DROP TRIGGER boom")
        assert service.flush() is True
        assert rows(store) == (CONSUMERS, DAYS, latency_rows())
        assert store.query("SELECT consumer_id, first_seen FROM consumers") == [("c1", T0 + 1000)]
        assert activity.pending() == 0
        assert service.flush() is True  # nothing left: nothing written twice
        assert rows(store) == (CONSUMERS, DAYS, latency_rows())
    finally:
        service.stop()


@pytest.mark.parametrize("kind", BACKENDS)
def test_the_gauges_expose_assigned_and_contaminated_consumers_exactly(tmp_path, kind: str) -> None:
    with backend(kind, tmp_path) as config:
        service = _state(tmp_path, config=config)
        try:
            service.activity.consume_exposures(
                [*FLUSH_1, *FLUSH_2, *(x("on", c, T0, experiment="dark-mode") for c in ("c8", "c9"))]
            )
            assert service.flush() is True
            service.refresh(now_ms=TODAY * DAY_MS)
            registry = CollectorRegistry()
            registry.register(ConsumerCollector(service))
            text = generate_latest(registry).decode()
            # What the other replicas load: the same values, through the stored snapshot.
            assert snapshot.loads(snapshot.dumps(service.report)) == service.report
        finally:
            service.stop()
    lines = [line for line in text.splitlines() if "api_experiment_" in line]
    assert lines == [
        "# HELP api_experiment_consumers Consumers in an experiment by the variant they were first "
        "assigned (they stay in it).",
        "# TYPE api_experiment_consumers gauge",
        f'api_experiment_consumers{{experiment="{E}",service="{S}",variant="A"}} 2.0',
        f'api_experiment_consumers{{experiment="{E}",service="{S}",variant="B"}} 1.0',
        f'api_experiment_consumers{{experiment="dark-mode",service="{S}",variant="on"}} 2.0',
        "# HELP api_experiment_contaminated_consumers Consumers of an experiment later seen in another "
        "variant than the one first assigned.",
        "# TYPE api_experiment_contaminated_consumers gauge",
        f'api_experiment_contaminated_consumers{{experiment="{E}",service="{S}"}} 2.0',
        f'api_experiment_contaminated_consumers{{experiment="dark-mode",service="{S}"}} 0.0',
    ]


def test_the_gauges_fold_experiments_past_the_label_limit(tmp_path) -> None:
    limits = LimitsConfig(max_label_values={"experiment": 2})  # experiment has its own default (200)
    service = _state(tmp_path, limits)
    try:
        service.activity.consume_exposures(
            [x("A", f"c{i}-{n}", T0, experiment=f"exp{n}") for n in range(4) for i in range(n + 1)]
            + [x("B", "c0-3", T0 + 1, experiment="exp3")]
        )
        assert service.flush() is True
        service.refresh(now_ms=TODAY * DAY_MS)
        report = service.report
    finally:
        service.stop()
    assert report.experiment_consumers == {
        (S, "exp3", "A"): 4,
        (S, "exp2", "A"): 3,
        (S, "__other__", "A"): 3,
    }
    assert report.experiment_contaminated == {(S, "exp3"): 1, (S, "exp2"): 0, (S, "__other__"): 0}
    assert report.folded[("api_experiment_consumers", "experiment")] == (2, 2)


def test_exposures_past_the_hard_bound_are_dropped_and_counted() -> None:
    activity = ConsumerActivity(30, PipelineStats(), max_pending=5)
    # 10 rows fit (twice the bound): one day row and one latency row, then 8 consumers.
    activity.consume_exposures([x("A", f"c{i}", T0) for i in range(12)])
    assert (activity.pending(), activity.rows_dropped, activity.backlogged()) == (10, 4, True)
    assert len(activity.drain()[6]) == 8
    future = ExperimentActivity(30, PipelineStats())
    future.consume_exposures([x("A", "c1", int(time.time() * 1000) + 3_600_000)])
    assert (future.pending(), future.rows_dropped) == (0, 1)
    stats = PipelineStats()
    ExperimentActivity(30, stats).consume_exposures([x("A", "c1", (TODAY - 40) * DAY_MS)])
    assert stats.data_quality_issues.get("beyond_retention") == 1


def test_the_final_flush_chunks_keep_each_consumer_with_its_experiment_rows() -> None:
    activity = ConsumerActivity(30, PipelineStats())
    activity.consume([request(f"c{i}", T0 + i) for i in range(5)])
    activity.consume_exposures([x("A", f"c{i}", T0 + i) for i in range(5)] + [x("A", "solo", T0)])
    batch = activity.drain()
    parts = list(_chunks(batch, 4))
    # 3 rows a consumer (consumer, activity, experiment), 3 tallies in the first part (endpoint,
    # experiment day, latency bucket); the exposure without a consumer row of its own comes last.
    assert [sorted(r[2] for r in part[6]) for part in parts] == [["c0"], ["c1", "c2"], ["c3", "c4"], ["solo"]]
    assert [len(part[7]) for part in parts] == [1, 0, 0, 0]
    for part in parts:
        assert {r[1] for r in part[0]} >= {r[2] for r in part[6]} - {"solo"}
    assert sum(len(p[6]) for p in parts) == 6 and sum(len(p[8]) for p in parts) == 1


@pytest.mark.live
@pytest.mark.slow
def test_concurrent_replicas_keep_one_variant_per_consumer_and_the_other_as_contamination() -> None:
    n = 2_000
    with postgres_server() as pg:
        config = StateConfig(postgres=PostgresState(dsn=pg.dsn))
        open_store(config).close()
        writers = [PostgresStore(pg.dsn), PostgresStore(pg.dsn)]
        batches = []
        for variant in ("A", "B"):
            activity = ConsumerActivity(30, PipelineStats())
            # Each replica sees every consumer first in its own variant, at the same time.
            activity.consume_exposures([x(variant, f"c{i:05d}", T0 + i) for i in range(n)])
            batches.append(activity.drain())
        barrier = threading.Barrier(2)
        errors: list[BaseException] = []

        def write(store: PostgresStore, batch) -> None:
            try:
                barrier.wait(10)
                for _ in range(3):  # three flushes each, interleaved with the other replica's
                    store.write(batch)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=write, args=pair) for pair in zip(writers, batches, strict=True)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        reader = writers[0]
        stored = reader.query("SELECT variant, other_variant, requests FROM experiment_consumers")
        assert len(stored) == n
        assert all({variant, other} == {"A", "B"} and requests == 6.0 for variant, other, requests in stored)
        assert reader.query("SELECT variant, requests FROM experiment_days ORDER BY variant") == [
            ("A", 3.0 * n),
            ("B", 3.0 * n),
        ]

        for w in writers:
            w.close()


@pytest.mark.slow
def test_100k_consumers_in_one_experiment_fit_time_and_memory_bounds(tmp_path) -> None:
    n = 100_000
    exposures = [x("AB"[i % 2], f"consumer-{i:06d}", T0 + i, duration=0.001 * (i % 97)) for i in range(n)]
    activity = ConsumerActivity(30, PipelineStats())
    started = time.perf_counter()
    for i in range(0, n, 5_000):
        activity.consume_exposures(exposures[i : i + 5_000])
    consumed = time.perf_counter() - started
    estimate = activity.pending_bytes()
    store = open_store(StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db"))))
    started = time.perf_counter()
    store.write(activity.drain())
    activity.written()
    written = time.perf_counter() - started
    # Memory, traced on a fifth of them (tracing slows the loop tenfold).
    sample = ConsumerActivity(30, PipelineStats())
    tracemalloc.start()
    sample.consume_exposures(exposures[: n // 5])
    traced, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"100k exposures: consume {consumed:.2f}s, estimated {estimate / 2**20:.1f} MiB "
        f"(traced {5 * traced / 2**20:.1f} MiB), SQLite write {written:.2f}s"
    )
    assert store.query("SELECT variant, COUNT(*) FROM experiment_consumers GROUP BY variant ORDER BY 1") == [
        ("A", n // 2),
        ("B", n // 2),
    ]
    assert store.query("SELECT SUM(count) FROM experiment_latency") == [(float(n),)]
    assert consumed < 5 and written < 20
    # The estimate that bounds the backlog does not undercount what the rows really take.
    assert traced < sample.pending_bytes() and estimate < 64 << 20
    store.close()


_WRITER = """
import sys, time
from apiusage.processor.config import SqliteState, StateConfig
from apiusage.processor.state.store import open_store
path, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = open_store(StateConfig(sqlite=SqliteState(path=path)))
consumers = [("s", f"c{i:06d}", t, t, t, "pro", "pro", "sdk", "1") for i in range(n)]
trials = [("s", "e", f"c{i:06d}", "AB"[i % 2], t, t, t, None, 1.0) for i in range(n)]
days = [("s", "e", v, t // 86_400_000, n / 2, 0.0, 0.0, 1.0) for v in "AB"]
print("writing", flush=True)
store.write((consumers, [], [], [], [], [], trials, days, []))
print("written", flush=True)
time.sleep(60)
"""


@pytest.mark.slow
def test_kill_9_mid_write_leaves_all_of_a_flush_or_none_of_it(tmp_path) -> None:
    db, n = tmp_path / "state.db", 200_000
    argv = [sys.executable, "-c", _WRITER, str(db), str(n), str(T0)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None and child.stdout.readline() == "writing\n"
            time.sleep(0.3)  # inside the transaction (the write takes seconds)
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            finished = "written" in child.stdout.read()
        finally:
            child.kill()
    store = open_store(StateConfig(sqlite=SqliteState(path=str(db))))
    try:
        assert store.query("PRAGMA integrity_check") == [("ok",)]
        counts = [
            store.query(f"SELECT COUNT(*) FROM {table}")[0][0]
            for table in ("consumers", "experiment_consumers", "experiment_days")
        ]
        # One transaction: all of it once the write returned, none of it when killed inside.
        assert counts == ([n, n, 2] if finished else [0, 0, 0])
        print(f"kill -9 {'after' if finished else 'mid'}-write left {counts}")
    finally:
        store.close()
