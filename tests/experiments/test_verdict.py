"""experiments/verdict.py: the verdict of scripted experiments, sentence by sentence."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from apiusage.conventions.experiments import parse_experiments
from apiusage.experiments.statistics import compare_proportions
from apiusage.experiments.verdict import analyse
from experiment_scenarios import BUCKETS, experiment, fixed, variant
from statsmodels.stats.multitest import multipletests

AS_PLANNED = "sample ratio as planned: 1,000 vs 1,000 consumers against a planned 50/50 (p = 1)"
NO_CONTAMINATION = "contamination: none of 2,000 consumers was seen in more than one variant"


def test_a_treatment_raising_4xx_from_1_2_to_2_0_percent_fails_the_guardrail() -> None:
    analysis = analyse(
        experiment(),
        {"control": fixed("control", client_errors=240), "treatment": fixed("treatment", client_errors=400)},
    )
    assert analysis.verdict == (
        AS_PLANNED,
        NO_CONTAMINATION,
        "no significant change in error ratio (0.8% vs 0.8%, p = 1; "
        "with this traffic the smallest detectable change is 34%)",
        "treatment raises 4xx from 1.2% to 2.0% (p < 0.000001): guardrail failed",
        "treatment: no significant change in the primary metric (error ratio); guardrail failed: 4xx",
    )
    result = analysis.result("treatment", "client_error_ratio")
    assert (result.role, result.significant, result.worse, result.guardrail_failed) == (
        "guardrail",
        True,
        True,
        True,
    )
    assert (result.control_value, result.treatment_value) == (0.012, 0.02)
    assert result.p_value == compare_proportions(240, 20_000, 400, 20_000, 0.05).p_value
    assert result.difference_ci[0] > 0 and result.relative_change == pytest.approx(2 / 3)
    assert analysis.guardrails_failed == (result,)
    assert analysis.correction == "none" and result.p_adjusted == result.p_value


def test_the_same_rise_on_4000_requests_reads_with_its_p_value() -> None:
    analysis = analyse(
        experiment(primary="client_error_ratio", guardrails=[]),
        {
            "control": fixed("control", requests=4_000, client_errors=48),
            "treatment": fixed("treatment", requests=4_000, client_errors=80),
        },
    )
    assert analysis.verdict[2:] == (
        "treatment raises 4xx from 1.2% to 2.0% (p = 0.0046): primary metric worse",
        "treatment: primary metric (4xx) worse",
    )


def test_the_4xx_rise_drawn_from_a_seeded_generator_is_found() -> None:
    rng = np.random.default_rng(2026)
    data = {
        "control": variant("control", rng, client_error_rate=0.012),
        "treatment": variant("treatment", rng, client_error_rate=0.020),
    }
    result = analyse(experiment(), data).result("treatment", "client_error_ratio")
    assert result.significant and result.guardrail_failed and result.p_value < 0.001


def test_no_effect_is_not_significant_and_says_what_this_traffic_could_detect() -> None:
    analysis = analyse(
        experiment(guardrails=[]),
        {"control": fixed("control", errors=160), "treatment": fixed("treatment", errors=180)},
    )
    assert analysis.verdict[2:] == (
        "no significant change in error ratio (0.8% vs 0.9%, p = 0.28; "
        "with this traffic the smallest detectable change is 34%)",
        "treatment: no significant change in the primary metric (error ratio)",
    )
    result = analysis.result("treatment", "error_ratio")
    assert not result.significant and not result.guardrail_failed
    assert result.minimum_detectable_effect == pytest.approx(0.336, abs=0.001)
    assert 0 < result.achieved_power < 0.8  # the planned 10% is out of reach at this traffic


def test_no_effect_drawn_from_a_seeded_generator_is_not_significant_anywhere() -> None:
    rng = np.random.default_rng(77)
    exp = experiment(
        guardrails=["client_error_ratio", "latency_p95", "adoption", "time_to_first_success"],
        feature="orders",
    )
    analysis = analyse(exp, {v: variant(v, rng) for v in ("control", "treatment")})
    assert [r.significant for r in analysis.results] == [False] * 5
    assert analysis.verdict[-1] == (
        "treatment: no significant change in the primary metric (error ratio); guardrails held"
    )


def test_a_sample_ratio_mismatch_blocks_the_verdict() -> None:
    analysis = analyse(
        experiment(),
        {
            "control": fixed("control", consumers=5_210, client_errors=240),
            "treatment": fixed("treatment", consumers=4_790, client_errors=400),
        },
    )
    assert analysis.blocked and not analysis.srm.ok
    assert analysis.verdict == (
        "sample ratio mismatch: 5,210 vs 4,790 consumers against a planned 50/50 (p = 0.000027); "
        "fix the assignment before reading results",
        "contamination: none of 10,000 consumers was seen in more than one variant",
        "error ratio: 0.8% vs 0.8% (not read: sample ratio mismatch)",
        "4xx: 1.2% vs 2.0% (not read: sample ratio mismatch)",
        "treatment: no verdict until the sample ratio matches the plan",
    )
    # The 4xx rise is real, yet nothing is called significant nor failed while the split is off.
    assert not any(r.significant or r.guardrail_failed for r in analysis.results)
    assert analysis.result("treatment", "client_error_ratio").p_value < 1e-6


def test_an_unbalanced_assignment_of_52_48_on_20000_consumers_is_caught() -> None:
    rng = np.random.default_rng(48)
    in_control = int((rng.random(20_000) < 0.52).sum())
    data = {
        "control": variant("control", rng, consumers=in_control),
        "treatment": variant("treatment", rng, consumers=20_000 - in_control, client_error_rate=0.02),
    }
    analysis = analyse(experiment(), data)
    assert analysis.blocked and analysis.srm.p_value < 0.001
    assert analysis.verdict[0].startswith(
        f"sample ratio mismatch: {in_control:,} vs {20_000 - in_control:,} consumers against a planned 50/50"
    )
    assert not any(r.significant for r in analysis.results)


def test_an_uneven_plan_is_checked_against_its_own_split() -> None:
    exp = experiment(split={"control": 80, "treatment": 20})
    data = {"control": fixed("control", consumers=8_000), "treatment": fixed("treatment", consumers=2_000)}
    analysis = analyse(exp, data)
    assert not analysis.blocked
    assert (
        analysis.verdict[0]
        == "sample ratio as planned: 8,000 vs 2,000 consumers against a planned 80/20 (p = 1)"
    )


def test_contamination_is_counted_and_its_share_warned_about_above_5_percent() -> None:
    data = {
        "control": fixed("control", contaminated=30),
        "treatment": fixed("treatment", contaminated=20),
    }
    analysis = analyse(experiment(), data)
    assert (analysis.contaminated, analysis.contaminated_share) == (50, 0.025)
    assert (
        analysis.verdict[1]
        == "contamination: 50 of 2,000 consumers (2.5%) were seen in more than one variant"
    )
    heavy = analyse(
        experiment(),
        {"control": fixed("control", contaminated=90), "treatment": fixed("treatment", contaminated=30)},
    )
    assert heavy.verdict[1] == (
        "contamination: 120 of 2,000 consumers (6.0%) were seen in more than one variant; "
        "effects are diluted toward no change: check that the flag is keyed on a stable consumer id"
    )


def _latency_in(bucket: int, requests: float = 20_000) -> list[float]:
    counts = [0.0] * BUCKETS
    counts[bucket] = requests
    return counts


def test_a_slower_treatment_fails_the_latency_guardrail() -> None:
    data = {
        "control": fixed("control", latency_counts=_latency_in(20)),
        "treatment": fixed("treatment", latency_counts=_latency_in(21)),
    }
    analysis = analyse(experiment(guardrails=["latency_p95"]), data)
    assert (
        analysis.verdict[3]
        == "treatment raises p95 latency from 86 ms to 107 ms (p < 0.000001): guardrail failed"
    )
    assert analysis.result("treatment", "latency_p95").guardrail_failed


def test_a_30_percent_latency_shift_drawn_from_a_seeded_generator_fails_the_guardrail() -> None:
    rng = np.random.default_rng(130)
    data = {
        "control": variant("control", rng, median_latency=0.08),
        "treatment": variant("treatment", rng, median_latency=0.08 * 1.3),
    }
    analysis = analyse(experiment(guardrails=["latency_p95"]), data)
    result = analysis.result("treatment", "latency_p95")
    assert result.guardrail_failed and result.relative_change == pytest.approx(0.3, abs=0.05)
    assert analysis.verdict[3].startswith("treatment raises p95 latency from ")
    assert analysis.verdict[3].endswith(": guardrail failed")


def test_lower_adoption_fails_the_guardrail_and_higher_adoption_improves_the_primary() -> None:
    exp = experiment(guardrails=["adoption"], feature="orders")
    analysis = analyse(
        exp, {"control": fixed("control", adopters=300), "treatment": fixed("treatment", adopters=240)}
    )
    assert (
        analysis.verdict[3] == "treatment lowers adoption from 30.0% to 24.0% (p = 0.0025): guardrail failed"
    )
    exp = experiment(primary="adoption", guardrails=[], feature="orders")
    analysis = analyse(
        exp, {"control": fixed("control", adopters=300), "treatment": fixed("treatment", adopters=360)}
    )
    assert analysis.verdict[2:] == (
        "treatment raises adoption from 30.0% to 36.0% (p = 0.0043): primary metric improved",
        "treatment: primary metric (adoption) improved",
    )


def test_a_slower_first_success_fails_the_ttfs_guardrail() -> None:
    rng = np.random.default_rng(45)
    data = {
        "control": variant("control", rng, ttfs_scale=30),
        "treatment": variant("treatment", rng, ttfs_scale=45),
    }
    analysis = analyse(experiment(guardrails=["time_to_first_success"]), data)
    result = analysis.result("treatment", "time_to_first_success")
    assert result.guardrail_failed and result.treatment_value > result.control_value
    assert analysis.verdict[3].startswith("treatment raises median time to first success from ")


def test_several_treatments_are_each_compared_with_control_with_holm_correction() -> None:
    exp = experiment(variants=["control", "a", "b"], guardrails=[], primary="client_error_ratio")
    data = {
        "control": fixed("control", client_errors=240),
        "a": fixed("a", client_errors=300),
        "b": fixed("b", client_errors=250),
    }
    analysis = analyse(exp, data)
    raw = [compare_proportions(240, 20_000, x, 20_000, 0.05).p_value for x in (300, 250)]
    holm = multipletests(raw, alpha=0.05, method="holm")[1]
    a, b = analysis.result("a", "client_error_ratio"), analysis.result("b", "client_error_ratio")
    assert (a.p_value, b.p_value) == tuple(raw)
    assert (a.p_adjusted, b.p_adjusted) == pytest.approx(tuple(holm), rel=1e-12)
    assert analysis.correction == "holm" and a.significant and not b.significant
    assert analysis.verdict == (
        "sample ratio as planned: 1,000 vs 1,000 vs 1,000 consumers against a planned 33.3/33.3/33.3 (p = 1)",
        "contamination: none of 3,000 consumers was seen in more than one variant",
        "a raises 4xx from 1.2% to 1.5% (p = 0.019 after Holm correction): primary metric worse",
        "b: no significant change in 4xx (1.20% vs 1.25%, p = 0.65 after Holm correction; "
        "with this traffic the smallest detectable change is 27%)",
        "a: primary metric (4xx) worse",
        "b: no significant change in the primary metric (4xx)",
    )


def test_a_variant_without_data_yet_is_not_enough_data() -> None:
    analysis = analyse(experiment(), {"control": fixed("control")})
    assert analysis.verdict[2] == "error ratio: not enough data yet (20,000 vs 0 requests)"
    assert all(not r.tested and not r.significant for r in analysis.results)
    assert analysis.variants[1].requests == 0 and math.isnan(analysis.variants[1].error_ratio)


def test_nothing_at_all_yet() -> None:
    analysis = analyse(experiment(), {})
    assert analysis.verdict[:3] == (
        "sample ratio as planned: 0 vs 0 consumers against a planned 50/50 (p = 1)",
        "no consumer has been assigned yet",
        "error ratio: not enough data yet (0 vs 0 requests)",
    )
    assert analysis.verdict[-1] == "treatment: not enough data on the primary metric (error ratio) yet"


def test_data_for_an_unknown_variant_is_left_out_and_named() -> None:
    data = {
        "control": fixed("control"),
        "treatment": fixed("treatment"),
        "beta\x1b[31m": fixed("beta\x1b[31m"),
    }
    analysis = analyse(experiment(), data)
    assert analysis.notes == ("left out data for variants not in the protocol: 'beta\\x1b[31m'",)
    assert [v.variant for v in analysis.variants] == ["control", "treatment"]


def test_inconsistent_data_is_refused_naming_the_experiment_and_the_variant() -> None:
    swapped = {"control": fixed("control"), "treatment": fixed("control")}
    with pytest.raises(
        ValueError, match="experiment checkout-v2: data under 'treatment' is for variant 'control'"
    ):
        analyse(experiment(), swapped)
    too_many = {"control": fixed("control", errors=30_000), "treatment": fixed("treatment")}
    with pytest.raises(
        ValueError, match=r"checkout-v2: variant 'control': errors \(30000\) exceed requests \(20000\)"
    ):
        analyse(experiment(), too_many)
    negative = {"control": fixed("control"), "treatment": fixed("treatment", consumers=-1)}
    with pytest.raises(ValueError, match="variant 'treatment': consumers must be a non-negative number"):
        analyse(experiment(), negative)
    short = {"control": fixed("control", latency_counts=[1.0] * 3), "treatment": fixed("treatment")}
    with pytest.raises(
        ValueError, match="checkout-v2: variant 'control': latency_counts: expected 52 bucket counts"
    ):
        analyse(experiment(), short)
    bad_ttfs = {"control": fixed("control"), "treatment": fixed("treatment", ttfs=[1.0, float("nan")])}
    with pytest.raises(ValueError, match="variant 'treatment': ttfs_seconds must be non-negative numbers"):
        analyse(experiment(), bad_ttfs)
    contaminated = {"control": fixed("control", contaminated=1_001), "treatment": fixed("treatment")}
    with pytest.raises(
        ValueError, match=r"variant 'control': contaminated \(1001\) exceed consumers \(1000\)"
    ):
        analyse(experiment(), contaminated)


def test_numpy_counts_from_a_query_are_accepted() -> None:
    data = {
        "control": fixed("control", consumers=np.int64(1_000), adopters=np.int64(300)),
        "treatment": fixed("treatment", consumers=np.int64(1_000), client_errors=np.float64(400)),
    }
    assert analyse(experiment(), data).result("treatment", "client_error_ratio").guardrail_failed


def test_values_that_round_alike_are_written_with_the_precision_that_tells_them_apart() -> None:
    data = {
        "control": fixed("control", requests=1e12, errors=1e9),
        "treatment": fixed("treatment", requests=1e12, errors=1.001e9),
    }
    analysis = analyse(experiment(guardrails=["latency_p95"]), data)
    assert analysis.verdict[2:4] == (
        "treatment raises error ratio from 0.1% to 0.1001% (p < 0.000001): primary metric worse",
        "no significant change in p95 latency (86 ms vs 86 ms, p = 1; "
        "with this traffic the smallest detectable change is 25%)",
    )


def test_latency_without_a_histogram_yet_is_not_enough_data_counted_in_timed_requests() -> None:
    data = {"control": fixed("control"), "treatment": fixed("treatment", latency_counts=())}
    analysis = analyse(experiment(guardrails=["latency_p95"]), data)
    assert analysis.verdict[3] == "p95 latency: not enough data yet (20,000 vs 0 timed requests)"


def test_the_protocol_example_of_the_docs_parses_and_its_sentences_are_the_verdicts() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "experiments.md").read_text(encoding="utf-8")
    example = re.search(r"```yaml\n(.*?)```", docs, re.S)
    assert example is not None
    exp = parse_experiments(yaml.safe_load(example.group(1))).experiments["checkout-v2"]
    assert (exp.primary, exp.guardrails, exp.split) == (
        "client_error_ratio",
        ("error_ratio", "latency_p95"),
        {"control": 0.5, "treatment": 0.5},
    )
    # The sentences the page quotes are the ones the verdict writes (tests above, same inputs).
    flat = " ".join(docs.split())
    for sentence in (
        "sample ratio mismatch: 5,210 vs 4,790 consumers against a planned 50/50 (p = 0.000027); "
        "fix the assignment before reading results",
        "treatment raises 4xx from 1.2% to 2.0% (p = 0.0046)",
        "no significant change in error ratio (0.8% vs 0.9%, p = 0.28; with this traffic the "
        "smallest detectable change is 34%)",
        "contamination: 50 of 2,000 consumers (2.5%) were seen in more than one variant",
    ):
        assert sentence in flat, sentence


def test_the_verdict_says_when_latency_shifted_against_its_p95() -> None:
    from apiusage.conventions.experiments import parse_experiments
    from apiusage.experiments.data import VariantData
    from apiusage.experiments.verdict import analyse
    from apiusage.processor.state.schema import EXPERIMENT_LATENCY_BOUNDS

    n = len(EXPERIMENT_LATENCY_BOUNDS) + 1
    experiment = parse_experiments(
        {
            "experiments": {
                "x": {
                    "service": "s",
                    "flag": "f",
                    "variants": ["control", "treatment"],
                    "control": "control",
                    "guardrails": ["latency_p95"],
                }
            }
        }
    ).experiments["x"]
    control, treatment = [0.0] * n, [0.0] * n
    control[5], control[20] = 9400.0, 600.0
    treatment[2], treatment[20] = 9000.0, 1000.0
    data = {
        "control": VariantData("control", 10_000, 10, 0, 500, 0, tuple(control), 0, (), 500),
        "treatment": VariantData("treatment", 10_000, 10, 0, 500, 0, tuple(treatment), 0, (), 500),
    }
    analysis = analyse(experiment, data)
    (latency,) = [r for r in analysis.results if r.metric == "latency_p95"]
    assert (latency.significant, latency.guardrail_failed) == (False, False)
    assert latency.sentence == (
        "no significant change in p95 latency (72 ms vs 78 ms): the treatment's requests are faster "
        "overall (p < 0.000001), against the way p95 latency moved"
    )
