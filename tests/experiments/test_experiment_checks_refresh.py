"""The experiment checks through the state service: the leader's refresh computes them into the
report (the five api_experiment_* check gauges), the other replicas serve them from the stored
snapshot, and neither a failing check nor missing statistics stops the other consumer metrics."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

import pytest
from apiusage.conventions.experiments import parse_experiments
from apiusage.experiments.checks import ExperimentChecker
from apiusage.processor.app import experiment_checks_hook
from apiusage.processor.config import LimitsConfig, PostgresState, SqliteState, StateConfig
from apiusage.processor.exporters.consumer_metrics import ConsumerCollector
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.state.service import ExperimentChecksHook, StateService
from apiusage.processor.telemetry import PipelineStats
from prometheus_client import CollectorRegistry, generate_latest
from statsmodels.stats import proportion

from tests.support.experiment_checks import (
    EXPERIMENT,
    NOW_MS,
    SERVICE,
    checked_experiment,
    protocol,
    raising_4xx,
)
from tests.support.postgres import postgres_server
from tests.support.processor import parse_metrics, sample

KEY = {"service": SERVICE, "experiment": EXPERIMENT}
CER = {**KEY, "variant": "treatment", "metric": "client_error_ratio"}
P95 = {**KEY, "variant": "treatment", "metric": "latency_p95"}
P_4XX = proportion.test_proportions_2indep(
    200, 10_000, 120, 10_000, method="agresti-caffo", compare="diff"
).pvalue


def _service(config: StateConfig, hook: ExperimentChecksHook | None) -> StateService:
    limits = LimitsConfig()
    service = StateService(
        config, ConsumerActivity(30, PipelineStats()), limits=limits, experiment_checks=hook
    )
    service.open()
    return service


def _checker() -> ExperimentChecker:
    return ExperimentChecker([checked_experiment()], LimitsConfig())


def _scrape(service: StateService) -> dict:
    registry = CollectorRegistry()
    registry.register(ConsumerCollector(service))
    return parse_metrics(generate_latest(registry).decode())


def _feed(service: StateService) -> None:
    service.activity.consume_exposures(raising_4xx())
    assert service.flush() is True


def _assert_checks(m: dict) -> None:
    assert sample(m, "api_experiment_running", **KEY) == 1
    assert sample(m, "api_experiment_sample_ratio_p_value", **KEY) == 1.0
    assert sample(m, "api_experiment_sample_ratio_mismatch", **KEY) == 0
    assert sample(m, "api_experiment_guardrail_failed", **CER) == 1
    assert sample(m, "api_experiment_guardrail_failed", **P95) == 0
    assert sample(m, "api_experiment_p_value", **CER) == pytest.approx(P_4XX, rel=1e-12)
    # No 5xx on either side: too few events for the test (the minimum-events rule), so no p-value.
    assert sample(m, "api_experiment_p_value", **KEY, variant="treatment", metric="error_ratio") is None


def test_the_leaders_refresh_exports_the_checks_and_a_restarted_replica_serves_them(tmp_path) -> None:
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")))
    leader = _service(config, _checker())
    try:
        _feed(leader)
        leader.refresh(now_ms=NOW_MS)
        m = _scrape(leader)
        report = leader.report
    finally:
        leader.stop()
    _assert_checks(m)
    assert sample(m, "api_experiment_consumers", **KEY, variant="treatment") == 100  # the rest is there
    assert sample(m, "apiusage_experiment_checks_total", outcome="success") == 1
    assert sample(m, "apiusage_experiment_checks_total", outcome="failure") == 0
    assert sample(m, "apiusage_experiment_checks_total", outcome="unavailable") == 0
    # The next start (or a replica that does not compute): the published report, checks included,
    # without a checker of its own.
    again = _service(config, None)
    try:
        assert again.report == report and again.report.experiment_guardrail_failed
        _assert_checks(_scrape(again))
    finally:
        again.close()


@pytest.mark.slow
@pytest.mark.live
def test_a_follower_on_postgresql_exports_the_leaders_checks() -> None:
    with postgres_server() as pg, contextlib.ExitStack() as stack:
        config = StateConfig(postgres=PostgresState(dsn=pg.dsn))
        a = _service(config, _checker())
        stack.callback(a.stop)
        b = _service(config, _checker())
        stack.callback(b.stop)
        _feed(a)
        a.refresh(now_ms=NOW_MS)
        b.refresh(now_ms=NOW_MS)
        leader, follower = (a, b) if a.health.leader else (b, a)
        assert (leader.health.leader, follower.health.leader) == (True, False)
        if follower is a:  # the first refresh published nothing the follower could load yet
            leader.refresh(now_ms=NOW_MS)
            follower.refresh(now_ms=NOW_MS)
        assert follower.report == leader.report
        _assert_checks(_scrape(follower))
        # Only the leader checks: the follower counts nothing.
        assert follower.health.experiment_checks == {"success": 0, "failure": 0, "unavailable": 0}
        assert leader.health.experiment_checks["success"] >= 1


def test_a_hook_that_raises_leaves_the_other_consumer_metrics_and_counts_a_failure(tmp_path, caplog) -> None:
    def broken(store, now_ms, report):  # noqa: ANN001, ANN202 - a bug in the hook
        raise ZeroDivisionError("division by zero")

    service = _service(StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db"))), broken)
    try:
        _feed(service)
        caplog.set_level(logging.ERROR, logger="apiusage.processor.state")
        service.refresh(now_ms=NOW_MS)
        service.refresh(now_ms=NOW_MS)
        m = _scrape(service)
        health = service.health
    finally:
        service.stop()
    assert health.refreshes == {"success": 2, "failure": 0} and health.refresh_ok
    assert health.experiment_checks == {"success": 0, "failure": 2, "unavailable": 0}
    assert sample(m, "api_experiment_consumers", **KEY, variant="control") == 100
    assert sample(m, "api_experiment_running", **KEY) is None
    assert [r.getMessage() for r in caplog.records] == [
        "experiment checks failed unexpectedly; the other consumer metrics are exported"
    ]


@contextlib.contextmanager
def _without_statistics() -> Iterator[None]:
    """scipy not importable (statsmodels needs it too), as without the `experiments` extra."""
    with pytest.MonkeyPatch.context() as mp:
        for name in list(sys.modules):
            if name.split(".")[0] == "scipy":
                mp.setitem(sys.modules, name, None)
        package = sys.modules["apiusage.experiments"]
        for name in list(sys.modules):
            if name.startswith("apiusage.experiments."):
                # The package's attribute too: a failed import re-binds it to a half-made module.
                mp.setattr(package, name.rsplit(".", 1)[1], sys.modules[name], raising=False)
                mp.delitem(sys.modules, name)
        mp.setitem(sys.modules, "scipy", None)
        yield


def test_without_the_statistics_it_starts_logs_once_exports_no_checks_and_counts_them(
    tmp_path, caplog
) -> None:
    experiments = parse_experiments(
        {"experiments": {EXPERIMENT: protocol(), "other": protocol("other", flag="other-flag")}}
    )
    caplog.set_level(logging.WARNING, logger="apiusage.processor")
    with _without_statistics():
        hook = experiment_checks_hook(experiments, LimitsConfig())
    assert [r.getMessage() for r in caplog.records] == [
        "experiments: the experiment checks (api_experiment_running, _sample_ratio_*, _guardrail_failed, "
        "_p_value) need the 'scipy' package: pip install 'apiusage[processor,experiments]'; running "
        "without them"
    ]
    service = _service(StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db"))), hook)
    try:
        _feed(service)
        service.refresh(now_ms=NOW_MS)
        service.refresh(now_ms=NOW_MS)
        m = _scrape(service)
    finally:
        service.stop()
    assert sample(m, "apiusage_experiment_checks_total", outcome="unavailable") == 4  # 2 experiments x 2
    assert sample(m, "api_experiment_running", **KEY) is None
    assert sample(m, "api_experiment_consumers", **KEY, variant="control") == 100
    assert len(caplog.records) == 1
    # With the statistics the real checker is wired.
    assert isinstance(experiment_checks_hook(experiments, LimitsConfig()), ExperimentChecker)


def test_a_shutdown_during_the_checks_publishes_no_report_missing_them(tmp_path) -> None:
    config = StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db")))
    checker = _checker()
    service = _service(config, None)

    def stopping(store, now_ms, report):  # noqa: ANN001, ANN202 - shutdown arrives mid-check
        service._stop.set()
        return checker(store, now_ms, report)

    service._experiment_checks = stopping
    try:
        _feed(service)
        before = service.report
        service.refresh(now_ms=NOW_MS)
        assert service.report is before  # not swapped in
        assert service.health.refreshes == {"success": 0, "failure": 0}  # interrupted, not failed
        assert service.store is not None
        assert service.store.query("SELECT COUNT(*) FROM report_snapshot") == [(0,)]
    finally:
        service.stop()


def test_a_shutdown_between_two_experiments_checks_logs_no_error_and_counts_no_failure(
    tmp_path, caplog, monkeypatch
) -> None:
    # stop() interrupts and closes the refresher while the checks go through the experiments (a
    # few seconds each at scale): the ones left are not read, not counted as failures, not logged.
    import apiusage.experiments.checks as checks

    names = [f"exp-{i}" for i in range(5)]
    service = _service(
        StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db"))),
        ExperimentChecker([checked_experiment(n) for n in names], LimitsConfig()),
    )
    checked = checks._checked
    calls: list[str] = []

    def stopping(store, experiment, window, first_day):  # noqa: ANN001, ANN202 - shutdown after the first
        calls.append(experiment.name)
        result = checked(store, experiment, window, first_day)
        if len(calls) == 1:
            service.stop()
        return result

    monkeypatch.setattr(checks, "_checked", stopping)
    _feed(service)
    caplog.set_level(logging.WARNING)
    before = service.report
    service.refresh(now_ms=NOW_MS)
    assert calls == ["exp-0"]
    assert service.report is before
    assert service.health.refreshes == {"success": 0, "failure": 0}
    # An interrupted run counts nothing, as an interrupted refresh.
    assert service.health.experiment_checks == {"success": 0, "failure": 0, "unavailable": 0}
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
