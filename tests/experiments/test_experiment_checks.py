"""experiments/checks.py: the experiment checks of the state refresh, on a real SQLite store fed by
the processor's own ConsumerActivity, against the figures `apiusage experiments report` computes."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from apiusage.experiments.checks import (
    ExperimentChecker,
    experiment_checks,
    experiment_window,
    information_fraction,
)
from apiusage.experiments.readout import read_experiment
from apiusage.experiments.verdict import analyse
from apiusage.processor.config import LimitsConfig, SqliteState, StateConfig
from apiusage.processor.derive.flags import Exposure
from apiusage.processor.state.activity import DAY_MS, ConsumerActivity
from apiusage.processor.state.report import ConsumerReport
from apiusage.processor.state.store import Store, open_store
from apiusage.processor.telemetry import PipelineStats
from scipy import stats
from statsmodels.stats import proportion

from tests.support.experiment_checks import (
    EXPERIMENT,
    NOW_MS,
    SERVICE,
    TODAY,
    checked_experiment,
    iso_day,
    protocol,
    traffic,
)
from tests.support.experiment_checks import raising_4xx as raising_4xx_exposures

S, E = SERVICE, EXPERIMENT


def flush(store: Store, exposures: list[Exposure]) -> None:
    """Through the processor's own state path: ConsumerActivity's rows, one store write."""
    activity = ConsumerActivity(30, PipelineStats())
    activity.consume_exposures(exposures)
    store.write(activity.drain())
    activity.written()


@pytest.fixture
def store(tmp_path) -> Iterator[Store]:
    s = open_store(StateConfig(sqlite=SqliteState(path=str(tmp_path / "state.db"))))
    yield s
    s.close()


def raising_4xx(store: Store, day: int = TODAY - 1) -> None:
    flush(store, raising_4xx_exposures(day))


def test_a_treatment_raising_4xx_fails_its_guardrail_with_the_reports_p_value(store) -> None:
    raising_4xx(store)
    exp = checked_experiment()
    checks = experiment_checks(store, [exp], NOW_MS)
    # The two-proportion test verdict.py runs (statsmodels, Agresti-Caffo), computed here apart.
    p_4xx = proportion.test_proportions_2indep(
        200, 10_000, 120, 10_000, method="agresti-caffo", compare="diff"
    ).pvalue
    assert p_4xx == pytest.approx(6.8978e-06, rel=1e-4)
    key = (S, E)
    assert checks.running == {key: 1}
    assert checks.srm_p_value == {key: 1.0} and checks.srm_mismatch == {key: 0}
    assert checks.guardrail_failed == {
        (*key, "treatment", "client_error_ratio"): 1,
        (*key, "treatment", "latency_p95"): 0,
    }
    assert checks.p_value[(*key, "treatment", "client_error_ratio")] == pytest.approx(p_4xx, rel=1e-12)
    # No 5xx on either side: too few events for the test (verdict.py's minimum-events rule), so
    # it is not tested and exports no p-value.
    assert (*key, "treatment", "error_ratio") not in checks.p_value
    assert checks.outcomes == {"success": 1, "failure": 0} and checks.failures == {} and checks.dropped == {}
    # Exactly what `apiusage experiments report` reads and judges over the same window, an
    # interim look on the experiment's last day (the boundary p < 0.020 to 0.025).
    fraction = information_fraction(exp, NOW_MS)
    assert fraction is not None and 13 / 14 <= fraction < 1
    report = analyse(exp, read_experiment(store, exp, (TODAY - 13) * DAY_MS, NOW_MS), fraction)
    result = report.result("treatment", "client_error_ratio")
    assert (
        result.guardrail_failed
        and result.p_adjusted == checks.p_value[(*key, "treatment", "client_error_ratio")]
    )
    latency = report.result("treatment", "latency_p95")
    if latency.tested:
        assert checks.p_value[(*key, "treatment", "latency_p95")] == latency.p_adjusted
    else:
        assert (*key, "treatment", "latency_p95") not in checks.p_value


def test_an_unbalanced_split_is_a_mismatch_and_blocks_every_guardrail(store) -> None:
    # 600 vs 400 consumers against a planned 50/50: chi-square 40 on 1 degree of freedom.
    flush(store, traffic("control", 600, 600, 0, TODAY - 1) + traffic("treatment", 400, 400, 100, TODAY - 1))
    checks = experiment_checks(store, [checked_experiment()], NOW_MS)
    assert checks.srm_mismatch == {(S, E): 1}
    assert checks.srm_p_value[(S, E)] == pytest.approx(stats.chi2.sf(40.0, 1), rel=1e-9)
    assert checks.srm_p_value[(S, E)] == pytest.approx(2.539e-10, rel=1e-3)
    # 25 % 4xx in the treatment, but nothing is read while the assignment is off.
    assert checks.guardrail_failed == {
        (S, E, "treatment", "client_error_ratio"): 0,
        (S, E, "treatment", "latency_p95"): 0,
    }
    assert checks.p_value == {}
    assert checks.running == {(S, E): 1}


def test_an_ended_experiment_exports_running_0_and_its_values_up_to_the_planned_end(store) -> None:
    # Started 20 days ago for 14 days: ended 6 days ago. Balanced inside the window; 300 more
    # control consumers after the end would make it a mismatch if they were read.
    start = TODAY - 20
    flush(store, traffic("control", 300, 300, 0, start + 5) + traffic("treatment", 300, 300, 0, start + 5))
    flush(store, traffic("control", 300, 300, 0, TODAY - 2, who="late-"))
    exp = checked_experiment(start=iso_day(start), planned_days=14)
    checks = experiment_checks(store, [exp], NOW_MS)
    assert checks.running == {(S, E): 0}
    assert checks.srm_p_value == {(S, E): 1.0} and checks.srm_mismatch == {(S, E): 0}
    # The report over the planned window says the same; over everything up to now it would not.
    until = (start + 14) * DAY_MS
    assert analyse(exp, read_experiment(store, exp, start * DAY_MS, until)).srm.p_value == 1.0
    assert not analyse(exp, read_experiment(store, exp, start * DAY_MS, NOW_MS)).srm.ok


def test_the_running_window_follows_start_and_planned_days() -> None:
    noon = TODAY * DAY_MS + DAY_MS // 2
    since = (TODAY - 13) * DAY_MS
    assert experiment_window(checked_experiment(), noon, None) == (True, since, noon)
    # Its last day runs; the day after, it has ended, read up to the planned end.
    last = checked_experiment(start=iso_day(TODAY - 13), planned_days=14)
    assert experiment_window(last, noon, None) == (True, (TODAY - 13) * DAY_MS, noon)
    ended = checked_experiment(start=iso_day(TODAY - 14), planned_days=14)
    assert experiment_window(ended, noon, None) == (False, (TODAY - 14) * DAY_MS, TODAY * DAY_MS)
    # Not started yet: nothing to read.
    assert experiment_window(checked_experiment(start=iso_day(TODAY + 1)), noon, None) is None
    # Without start: from the first exposure day (every stored day is read, as the report does).
    open_start = checked_experiment(start=None, planned_days=3)
    assert experiment_window(open_start, noon, None) is None
    assert experiment_window(open_start, noon, TODAY - 2) == (True, None, noon)
    assert experiment_window(open_start, noon, TODAY - 3) == (False, None, TODAY * DAY_MS)
    # Without planned_days: it runs until it leaves the file.
    assert experiment_window(checked_experiment(planned_days=None), noon, None) == (True, since, noon)


def test_without_start_the_first_exposure_in_the_store_starts_it(store) -> None:
    # No exposure yet: declared, not running.
    assert experiment_checks(store, [checked_experiment(start=None)], NOW_MS).running == {(S, E): 0}
    flush(store, traffic("control", 10, 10, 0, TODAY - 3) + traffic("treatment", 10, 10, 0, TODAY - 3))
    assert experiment_checks(store, [checked_experiment(start=None, planned_days=3)], NOW_MS).running == {
        (S, E): 0
    }
    checks = experiment_checks(store, [checked_experiment(start=None, planned_days=4)], NOW_MS)
    assert checks.running == {(S, E): 1} and checks.srm_p_value == {(S, E): 1.0}
    # Before its start: running 0, and no check.
    later = experiment_checks(store, [checked_experiment(start=iso_day(TODAY + 1))], NOW_MS)
    assert (later.running, later.srm_p_value, later.outcomes) == (
        {(S, E): 0},
        {},
        {"success": 1, "failure": 0},
    )


def test_data_the_statistics_refuse_fails_one_experiment_logged_once_and_the_others_go_on(
    store, caplog
) -> None:
    raising_4xx(store)
    # Impossible counts (more 4xx than requests), as a damaged or hand-edited store may hold.
    store.execute(
        "INSERT INTO experiment_days (service, experiment, variant, day, requests, errors, client_errors, "
        "duration_sum, spans, span_errors, span_client_errors) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (S, "broken", "treatment", TODAY - 1, 10.0, 0.0, 50.0, 0.5, 10, 0, 50),
    )
    checker = ExperimentChecker([checked_experiment("broken"), checked_experiment()])
    caplog.set_level(logging.ERROR, logger="apiusage.experiments.checks")
    for _ in range(3):
        report = ConsumerReport()
        outcomes = checker(store, NOW_MS, report)
        assert outcomes == {"success": 1, "failure": 1}
        assert report.experiment_running == {(S, E): 1}
        assert report.experiment_guardrail_failed[(S, E, "treatment", "client_error_ratio")] == 1
    [record] = caplog.records
    assert record.getMessage() == (
        "experiment broken: variant 'treatment': client_errors (50) exceed requests (10); its checks "
        "(api_experiment_*) are not exported"
    )
    # Repaired: counted a success again, and said so.
    store.execute("DELETE FROM experiment_days WHERE experiment = 'broken'")
    caplog.set_level(logging.INFO, logger="apiusage.experiments.checks")
    assert checker(store, NOW_MS, ConsumerReport()) == {"success": 2, "failure": 0}
    assert caplog.records[-1].getMessage() == "experiment broken: its checks are exported again"


def test_labels_are_bounded_by_the_limits_and_what_is_left_out_is_counted(store) -> None:
    raising_4xx(store)
    limits = LimitsConfig(max_label_length=8, max_label_values={"experiment": 1, "variant": 100})
    others = [checked_experiment(f"exp-{i}") for i in range(3)]
    checks = experiment_checks(store, [checked_experiment(), *others], NOW_MS, limits)
    short = "checkou…"  # 8 characters, as every label of the processor is cut
    assert checks.running == {("orders-…", short): 1}
    assert checks.guardrail_failed[("orders-…", short, "treatme…", "client_error_ratio")] == 1
    # 3 experiments left out, each with running, 2 SRM series, 2 guardrail flags and 3 p-values
    assert checks.dropped == {("api_experiment_running", "experiment"): (3, 24)}
    report = ConsumerReport()
    checks.fill(report)
    assert report.folded == {("api_experiment_running", "experiment"): (3, 24)}
    # And the variant limit: past it, a treatment's series are left out (here the sample ratio
    # is off, 0 consumers in treatment-2: nothing is tested, every guardrail flag is 0).
    three = checked_experiment(variants=["control", "treatment", "treatment-2"])
    checks = experiment_checks(store, [three], NOW_MS, LimitsConfig(max_label_values={"variant": 1}))
    assert checks.srm_mismatch == {(S, E): 1} and checks.p_value == {}
    assert checks.guardrail_failed == {
        (S, E, "treatment", "client_error_ratio"): 0,
        (S, E, "treatment", "latency_p95"): 0,
    }
    assert checks.dropped == {("api_experiment_guardrail_failed", "variant"): (1, 2)}


def test_an_ended_experiment_is_not_read_again_within_the_hour(store, monkeypatch) -> None:
    start = TODAY - 20
    flush(store, traffic("control", 30, 30, 0, start + 1) + traffic("treatment", 30, 30, 0, start + 1))
    exp = checked_experiment(start=iso_day(start), planned_days=14)
    checker = ExperimentChecker([exp])
    reads = []
    import apiusage.experiments.checks as checks_module

    real = checks_module.read_experiment
    monkeypatch.setattr(checks_module, "read_experiment", lambda *a: reads.append(a) or real(*a))
    first, second = ConsumerReport(), ConsumerReport()
    checker(store, NOW_MS, first)
    checker(store, NOW_MS + 60_000, second)
    assert len(reads) == 1 and first.experiment_srm_p_value == second.experiment_srm_p_value == {(S, E): 1.0}
    checker.ended_every = 0.0
    checker(store, NOW_MS + 120_000, ConsumerReport())
    assert len(reads) == 2


def test_the_checks_run_at_most_every_interval_and_refreshes_between_reuse_them(store) -> None:
    raising_4xx(store)
    checker = ExperimentChecker([checked_experiment()], every=3600.0)
    first, second = ConsumerReport(), ConsumerReport()
    assert checker(store, NOW_MS, first) == {"success": 1, "failure": 0}
    flush(store, traffic("control", 200, 200, 0, TODAY - 1, who="more-"))  # would be a mismatch
    assert checker(store, NOW_MS, second) == {}  # nothing checked: nothing counted
    assert second.experiment_guardrail_failed == first.experiment_guardrail_failed != {}
    assert second.experiment_srm_mismatch == {(S, E): 0}
    checker.every = 0.0
    third = ConsumerReport()
    assert checker(store, NOW_MS, third) == {"success": 1, "failure": 0}
    assert third.experiment_srm_mismatch == {(S, E): 1}


def _halfway_rise(store: Store) -> tuple:
    """1.2 % vs 2.0 % 4xx on 4,000 requests a side yesterday, in an experiment started 7 days ago
    for 14: p = 0.0046, under alpha but not past today's interim boundary (t from 7/14 to 8/14:
    p < 0.0015 to 0.0036)."""
    flush(
        store, traffic("control", 100, 4_000, 48, TODAY - 1) + traffic("treatment", 100, 4_000, 80, TODAY - 1)
    )
    p = proportion.test_proportions_2indep(
        80, 4_000, 48, 4_000, method="agresti-caffo", compare="diff"
    ).pvalue
    assert p == pytest.approx(0.0046392, rel=1e-4)
    return checked_experiment(start=iso_day(TODAY - 7), planned_days=14), p


def test_halfway_a_p_under_alpha_fails_no_guardrail_before_the_planned_end(store) -> None:
    exp, p = _halfway_rise(store)
    checks = experiment_checks(store, [exp], NOW_MS)
    key = (S, E, "treatment", "client_error_ratio")
    # Against alpha at every look this was 1 (the old rule); the boundary halfway is far stricter.
    assert checks.guardrail_failed[key] == 0 and checks.running == {(S, E): 1}
    assert checks.p_value[key] == pytest.approx(p, rel=1e-12)
    fraction = information_fraction(exp, NOW_MS)
    assert fraction is not None and 7 / 14 <= fraction < 8 / 14
    report = analyse(exp, read_experiment(store, exp, (TODAY - 7) * DAY_MS, NOW_MS), fraction)
    assert not report.result("treatment", "client_error_ratio").guardrail_failed
    assert report.result("treatment", "client_error_ratio").threshold == pytest.approx(
        stats.norm.sf(stats.norm.isf(0.0125) / fraction**0.5) * 2, rel=1e-12
    )
    # The read at the planned end (no fraction) is against alpha: there it fails.
    assert (
        analyse(exp, read_experiment(store, exp, (TODAY - 7) * DAY_MS, NOW_MS))
        .result("treatment", "client_error_ratio")
        .guardrail_failed
    )


def test_the_report_command_reads_the_same_boundary_and_alpha_after_the_planned_end(
    store, tmp_path, capsys
) -> None:
    import yaml
    from apiusage.cli import main

    exp, _ = _halfway_rise(store)
    files = tmp_path / "experiments.yaml"
    files.write_text(yaml.safe_dump({"version": 1, "experiments": {E: protocol(start=iso_day(TODAY - 7))}}))
    config = tmp_path / "apiusage.yaml"
    config.write_text(
        yaml.safe_dump({"experiments": str(files), "state": {"sqlite": {"path": str(tmp_path / "state.db")}}})
    )
    assert main(["experiments", "report", "--config", str(config)]) == 0
    now = capsys.readouterr().out
    assert (
        "no significant change in 4xx yet (1.2% vs 2.0%, p = 0.0046, not past the interim boundary p < 0.00"
        in now
    )
    assert "  interim look: before the planned end a result counts only past the interim boundary" in now
    # --until the planned end: the final read, against alpha, no interim note.
    assert main(["experiments", "report", "--config", str(config), "--until", iso_day(TODAY + 7)]) == 0
    final = capsys.readouterr().out
    assert "treatment raises 4xx from 1.2% to 2.0% (p = 0.0046): guardrail failed" in final
    assert "interim look" not in final
