"""experiments/readout.py: the VariantData the statistics read, from real SQLite and PostgreSQL
stores written by the state's own flush path."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator

import pytest
from apiusage.conventions.experiments import Experiment
from apiusage.experiments import readout
from apiusage.experiments.data import VariantData
from apiusage.experiments.readout import MAX_TTFS_SAMPLE, read_experiment
from apiusage.processor.config import PostgresState, SqliteState, StateConfig
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.schema import EXPERIMENT_LATENCY_BOUNDS
from apiusage.processor.state.store import Store, open_store
from apiusage.processor.telemetry import PipelineStats

from tests.support.postgres import postgres_server

S, E = "orders-api", "checkout-v2"
DAY = int(time.time() * 1000) // DAY_MS - 2
T0 = DAY * DAY_MS + 3_600_000
N = len(EXPERIMENT_LATENCY_BOUNDS) + 1
EXPERIMENT = Experiment(
    name=E,
    service=S,
    flag="checkout-v2",
    variants=("A", "B"),
    control="A",
    split={"A": 0.5, "B": 0.5},
    feature="checkout",
)


def x(
    variant: str,
    consumer: str | None,
    at_ms: int,
    code: str = "200",
    duration: float = 0.001,
    weight: float = 1.0,
) -> Exposure:
    return Exposure(
        S, E, variant, "POST", "/v2/orders", code, "pro", "sdk", None, consumer, duration, weight,
        at_ms * 1_000_000,
    )  # fmt: skip


def used(consumer: str, at_ms: int, feature: str = "checkout") -> ApiRequest:
    return ApiRequest(
        S, "POST", "/v2/orders", "200", "pro", "false", "sdk", "1.0", api_version=None, feature=feature,
        consumer_id=consumer, duration=0.01, weight=1.0, end_time_ns=at_ms * 1_000_000, trace_id=b"t" * 16,
        span_id=b"s" * 8,
    )  # fmt: skip


@contextlib.contextmanager
def store_of(kind: str, tmp_path) -> Iterator[Store]:
    with contextlib.ExitStack() as stack:
        if kind == "postgres":
            pg = stack.enter_context(postgres_server())
            config = StateConfig(postgres=PostgresState(dsn=pg.dsn))
        else:
            config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")))
        store = open_store(config)
        stack.callback(store.close)
        yield store


def flush(store: Store, exposures: list[Exposure], requests: tuple[ApiRequest, ...] = ()) -> None:
    activity = ConsumerActivity(30, PipelineStats())
    activity.consume(requests)
    activity.consume_exposures(exposures)
    store.write(activity.drain())
    activity.written()


def counts(**buckets: float) -> tuple[float, ...]:
    out = [0.0] * N
    for k, v in buckets.items():
        out[int(k[1:])] = v
    return tuple(out)


def scenario(store: Store) -> None:
    # c1: A (2xx at once, then a 5xx), later seen in B; used the feature only before its assignment.
    # c2: B, a 4xx then a 2xx 1.5 s later; used the feature the next day: an adopter.
    # c3: A after a late-arriving B; first 2xx 1 s after its first exposure (a 5xx).
    # c4: B, only 5xx: never succeeded. One anonymous request in A of 128 s.
    flush(
        store,
        [
            x("A", "c1", T0 + 1000, "200", 0.001),
            x("A", "c1", T0 + 2000, "503", 0.25),
            x("B", "c2", T0 + 1500, "404", 0.001),
            x("B", "c2", T0 + 3000, "201", 0.001),
            x("B", "c3", T0 + 5000, "200", 0.001),
            x("A", "c3", T0 + 4000, "500", 0.001),
            x("B", "c4", T0 + 6000, "502", 0.25),
            x("A", None, T0 + 100, "200", 128.0),
        ],
        (used("c1", T0 + 500), used("c3", T0 + 4500, feature="other")),
    )
    flush(
        store,
        [x("B", "c1", T0 + DAY_MS + 10), x("B", "c2", T0 + DAY_MS + 20)],
        (used("c2", T0 + DAY_MS + 20),),
    )


B_250MS = EXPERIMENT_LATENCY_BOUNDS.index(next(b for b in EXPERIMENT_LATENCY_BOUNDS if b >= 0.25))


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.live)])
def test_the_readout_of_a_scripted_experiment_is_exact(tmp_path, kind: str) -> None:
    with store_of(kind, tmp_path) as store:
        scenario(store)
        assert read_experiment(store, EXPERIMENT, None, None) == {
            "A": VariantData(
                variant="A",
                requests=4.0,
                errors=2.0,
                client_errors=0.0,
                consumers=2,
                contaminated=2,
                latency_counts=counts(b0=2.0, **{f"b{B_250MS}": 1.0, "b51": 1.0}),
                adopters=0,
                ttfs_seconds=(0.0, 1.0),
                never_succeeded=0,
            ),
            "B": VariantData(
                variant="B",
                requests=6.0,
                errors=1.0,
                client_errors=1.0,
                consumers=2,
                contaminated=0,
                latency_counts=counts(b0=5.0, **{f"b{B_250MS}": 1.0}),
                adopters=1,
                ttfs_seconds=(1.5,),
                never_succeeded=1,
            ),
        }
        # The next day only: its tallies, and no consumer first assigned in it.
        day2 = read_experiment(store, EXPERIMENT, (DAY + 1) * DAY_MS, None)
        assert [(v.requests, v.consumers, v.ttfs_seconds, v.latency_counts[0]) for v in day2.values()] == [
            (0.0, 0, (), 0.0),
            (2.0, 0, (), 2.0),
        ]
        # The first day only: consumers first seen by T0 + 5000 (c1, c2, c3), the first day's tallies.
        day1 = read_experiment(store, EXPERIMENT, T0, T0 + 5001)
        assert {k: (v.requests, v.consumers, v.never_succeeded) for k, v in day1.items()} == {
            "A": (4.0, 2, 0),
            "B": (4.0, 1, 0),
        }


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.live)])
def test_sampled_traffic_reads_as_span_counts_with_the_weighted_totals_as_estimates(
    tmp_path, kind: str
) -> None:
    # 10% head sampling (weight 10) on A: 3 spans, one a 5xx; B: one span of weight 10 and one
    # of weight 1 (a 4xx the tail sampler always keeps); its 4xx estimate equals its span count.
    with store_of(kind, tmp_path) as store:
        flush(
            store,
            [
                x("A", "c1", T0, "200", weight=10.0),
                x("A", "c1", T0 + 1, "503", 0.25, weight=10.0),
                x("A", None, T0 + 2, "200", weight=10.0),
                x("B", "c2", T0 + 3, "200", weight=10.0),
                x("B", "c2", T0 + 4, "404", weight=1.0),
            ],
        )
        out = read_experiment(store, EXPERIMENT)
    assert out == {
        "A": VariantData(
            "A", 3.0, 1.0, 0.0, 1, 0, counts(b0=2.0, **{f"b{B_250MS}": 1.0}), 0, (0.0,), 0,
            estimated_requests=30.0, estimated_errors=10.0, estimated_client_errors=None,
        ),
        "B": VariantData(
            "B", 2.0, 0.0, 1.0, 1, 0, counts(b0=2.0), 0, (0.0,), 0,
            estimated_requests=11.0, estimated_errors=None, estimated_client_errors=None,
        ),
    }  # fmt: skip


def test_a_variant_without_data_reads_as_zeros_and_an_unknown_stored_one_is_kept(tmp_path) -> None:
    with store_of("sqlite", tmp_path) as store:
        flush(store, [x("C", "c1", T0)])  # not declared (an older experiments.yaml wrote it)
        out = read_experiment(store, EXPERIMENT, None, None)
    assert list(out) == ["A", "B", "C"]
    assert out["A"] == VariantData("A", 0.0, 0.0, 0.0, 0, 0, (0.0,) * N, 0, (), 0)
    assert (out["C"].requests, out["C"].consumers, out["C"].ttfs_seconds) == (1.0, 1, (0.0,))


def _many(store: Store, n: int) -> None:
    """`n` consumers in A, consumer i succeeding i ms after its first exposure (every 7th never)."""
    rows = [
        (S, E, f"id-{i:07d}", "A", T0, T0 + i, None if i % 7 == 0 else T0 + i, None, 1.0) for i in range(n)
    ]
    store.write(([], [], [], [], [], [], rows, [], []))


def test_time_to_first_success_is_a_deterministic_uniform_sample_of_10000(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(readout, "_PAGE", 3_000)  # several pages
    n = 25_000
    with store_of("sqlite", tmp_path) as store:
        _many(store, n)
        first = read_experiment(store, EXPERIMENT, None, None)["A"]
        again = read_experiment(store, EXPERIMENT, None, None)["A"]
    population = [i / 1000 for i in range(n) if i % 7]
    assert (first.consumers, first.never_succeeded) == (n, len(range(0, n, 7)))
    assert len(first.ttfs_seconds) == MAX_TTFS_SAMPLE and first.ttfs_seconds == again.ttfs_seconds
    assert len(set(first.ttfs_seconds)) == MAX_TTFS_SAMPLE and set(first.ttfs_seconds) <= set(population)
    # Uniform: the sample's mean and quartiles are the population's, within sampling error
    # (standard error of the mean: 7.2 s / sqrt(10,000) x sqrt(1 - 0.47) = 0.05 s).
    assert abs(statistics.fmean(first.ttfs_seconds) - statistics.fmean(population)) < 0.3
    q_sample = statistics.quantiles(first.ttfs_seconds, n=4)
    q_population = statistics.quantiles(population, n=4)
    assert all(abs(a - b) < 0.5 for a, b in zip(q_sample, q_population, strict=True))
    # Below the bound: every value, once.
    with store_of("sqlite", tmp_path / "small") as store:
        _many(store, 50)
        assert read_experiment(store, EXPERIMENT, None, None)["A"].ttfs_seconds == tuple(
            i / 1000 for i in range(50) if i % 7
        )


@pytest.mark.slow
def test_the_readout_of_100k_consumers_is_bounded_in_time(tmp_path) -> None:
    n = 100_000
    with store_of("sqlite", tmp_path) as store:
        _many(store, n)
        started = time.perf_counter()
        a = read_experiment(store, EXPERIMENT, None, None)["A"]
        took = time.perf_counter() - started
    print(f"readout of {n} consumers: {took:.2f}s")
    assert (a.consumers, len(a.ttfs_seconds)) == (n, MAX_TTFS_SAMPLE)
    assert took < 10
