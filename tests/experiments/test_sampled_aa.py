"""An A/A experiment under 10% head sampling is "significant" about alpha of the time.

Each run: a few thousand spans, split at random between two identical variants with the same
5xx rate, every span of sampling weight 10 (it stands for ten requests). They go through the
state's real path (ExperimentActivity -> a real SQLite Store -> read_experiment -> analyse).
Before the fix the weighted counts were the sample sizes: ten times the real ones, so the
two-proportion test was sqrt(10) times too confident and about half of the A/A runs came out
significant (100 of these 200). Now the tests count the spans: the rate stays within the
binomial band of alpha.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from apiusage.conventions.experiments import Experiment
from apiusage.experiments.readout import read_experiment
from apiusage.experiments.verdict import analyse
from apiusage.processor.config import SqliteState, StateConfig
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.state.experiments import ExperimentActivity
from apiusage.processor.state.store import DAY_MS, open_store
from apiusage.processor.telemetry import PipelineStats
from scipy import stats

pytestmark = pytest.mark.slow  # ~10 s: 200 runs of the real state and statistics

S = "orders-api"
RUNS = 200
SPANS = 3000  # per run, both variants
ERROR_RATE = 0.05
WEIGHT = 10.0  # 10% head sampling: each kept span stands for ten requests
ALPHA = 0.05
T0 = (int(time.time() * 1000) // DAY_MS - 1) * DAY_MS + 3_600_000


def _experiment(run: int) -> Experiment:
    return Experiment(
        name=f"aa-{run}", service=S, flag=f"aa-{run}", variants=("A", "B"), control="A",
        split={"A": 0.5, "B": 0.5}, primary="error_ratio", alpha=ALPHA,
    )  # fmt: skip


def _exposures(run: int) -> list[Exposure]:
    rng = np.random.default_rng(20261201 + run)
    variants = rng.integers(0, 2, SPANS)
    failed = rng.random(SPANS) < ERROR_RATE
    durations = rng.lognormal(np.log(0.05), 0.5, SPANS)
    return [
        Exposure(
            S,
            f"aa-{run}",
            "AB"[v],
            "POST",
            "/v2/orders",
            "503" if bad else "200",
            "pro",
            "sdk",
            None,
            None,
            float(d),
            WEIGHT,
            (T0 + i) * 1_000_000,
        )  # fmt: skip
        for i, (v, bad, d) in enumerate(
            zip(variants.tolist(), failed.tolist(), durations.tolist(), strict=True)
        )
    ]


def _significant_runs(store) -> int:  # noqa: ANN001
    significant = 0
    for run in range(RUNS):
        experiment = _experiment(run)
        result = analyse(experiment, read_experiment(store, experiment)).result("B", "error_ratio")
        assert result.tested
        significant += result.significant
    return significant


def test_an_aa_test_under_10_percent_sampling_is_significant_at_about_alpha(tmp_path) -> None:
    store = open_store(StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")), retention_days=30))
    activity = ExperimentActivity(30, PipelineStats())
    try:
        for run in range(RUNS):
            activity.consume_exposures(_exposures(run))
        store.write(([], [], [], [], [], [], *activity.drain(), []))
        activity.written()
        significant = _significant_runs(store)
        # The band a correct 5% test falls in 99% of the time over RUNS independent runs. Before
        # the fix (weighted counts as sample sizes): 100 of 200 (50%).
        low, high = stats.binom.ppf([0.005, 0.995], RUNS, ALPHA)
        assert (low, high) == (3, 19)  # rates 1.5% to 9.5%
        assert low <= significant <= high, f"{significant} of {RUNS} A/A runs significant"
        # The spans are the sample sizes; the weighted sums are the estimates.
        data = read_experiment(store, _experiment(0))
        assert sum(d.requests for d in data.values()) == SPANS
        assert [(d.estimated_requests, d.estimated_errors) for d in data.values()] == [
            (d.requests * WEIGHT, d.errors * WEIGHT) for d in data.values()
        ]
    finally:
        store.close()
