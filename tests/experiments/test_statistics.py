"""experiments/statistics.py: known effects found, no effect not found (at the alpha rate over
many seeds), the sample-ratio check, quantiles read from the bucketed histogram, power and MDE."""

from __future__ import annotations

import math

import numpy as np
import pytest
from apiusage.experiments.statistics import (
    LATENCY_RESOLUTION,
    MANN_WHITNEY_CAP,
    compare_latency,
    compare_proportions,
    compare_ttfs,
    median_interval,
    p95_interval,
    power_and_mde,
    quantile_from_histogram,
    sample_ratio_mismatch,
)
from experiment_scenarios import BOUNDS, BUCKETS, bucketed, latency
from scipy import stats
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

ALPHA = 0.05
SEEDS = 300


def _within_alpha_rate(significant: int, runs: int = SEEDS, alpha: float = ALPHA) -> bool:
    """Whether `significant` of `runs` A/A comparisons is inside the binomial 99.9% interval."""
    low, high = stats.binom.interval(0.999, runs, alpha)
    return low <= significant <= high


# -- proportions --------------------------------------------------------------------------------


def test_a_4xx_rise_from_1_2_to_2_0_percent_over_20000_requests_is_significant() -> None:
    rng = np.random.default_rng(16)
    x_c, x_t = rng.binomial(20_000, 0.012), rng.binomial(20_000, 0.020)
    result = compare_proportions(x_c, 20_000, x_t, 20_000, ALPHA)
    assert result.p_control == x_c / 20_000 and result.p_treatment == x_t / 20_000
    assert result.difference == pytest.approx(x_t / 20_000 - x_c / 20_000, abs=1e-15)
    assert result.significant and result.p_value < 1e-6
    # The interval of the difference holds the true 0.8 points and excludes 0.
    assert 0 < result.ci_low < 0.008 < result.ci_high


def test_the_proportion_test_is_agresti_caffo_with_the_treatment_minus_the_control() -> None:
    # By hand: one success and one failure added to each side, then a Wald z.
    x_c, n_c, x_t, n_t = 240, 20_000, 400, 20_000
    pc, pt = (x_c + 1) / (n_c + 2), (x_t + 1) / (n_t + 2)
    se = math.sqrt(pc * (1 - pc) / (n_c + 2) + pt * (1 - pt) / (n_t + 2))
    z = (pt - pc) / se
    result = compare_proportions(x_c, n_c, x_t, n_t, ALPHA)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(z), rel=1e-9)
    assert (result.ci_low, result.ci_high) == pytest.approx(
        (pt - pc - stats.norm.ppf(0.975) * se, pt - pc + stats.norm.ppf(0.975) * se), rel=1e-9
    )
    assert result.relative_change == pytest.approx((0.02 - 0.012) / 0.012)
    # The direction: a treatment lower than the control has a negative difference.
    lower = compare_proportions(x_t, n_t, x_c, n_c, ALPHA)
    assert lower.difference == pytest.approx(-0.008) and lower.ci_high < 0


def test_no_effect_is_not_significant() -> None:
    rng = np.random.default_rng(3)
    x_c, x_t = rng.binomial(20_000, 0.012, size=2)
    result = compare_proportions(x_c, 20_000, x_t, 20_000, ALPHA)
    assert not result.significant and result.p_value > ALPHA
    assert result.ci_low < 0 < result.ci_high


def test_an_aa_run_over_300_seeds_finds_proportions_significant_at_the_alpha_rate() -> None:
    significant = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(seed)
        x_c, x_t = rng.binomial(20_000, 0.012, size=2)
        significant += compare_proportions(x_c, 20_000, x_t, 20_000, ALPHA).significant
    assert _within_alpha_rate(significant), significant


def test_the_interval_excludes_zero_exactly_when_the_test_is_significant() -> None:
    rng = np.random.default_rng(5)
    for _ in range(400):
        n_c, n_t = rng.integers(50, 5_000, size=2)
        x_c, x_t = rng.binomial(n_c, 0.05), rng.binomial(n_t, rng.choice([0.05, 0.08]))
        r = compare_proportions(x_c, n_c, x_t, n_t, ALPHA)
        assert r.significant == (r.ci_low > 0 or r.ci_high < 0), (x_c, n_c, x_t, n_t)


def test_degenerate_proportions_answer_without_warnings() -> None:
    # No events anywhere, or only events: nothing differs (p = 1), and no RuntimeWarning escapes.
    for x in (0, 100):
        r = compare_proportions(x, 100, x, 100, ALPHA)
        assert r.p_value == 1.0 and not r.significant and r.difference == 0
    # No trials on one side: nothing to test.
    empty = compare_proportions(0, 0, 5, 100, ALPHA)
    assert math.isnan(empty.p_value) and not empty.significant and math.isnan(empty.p_control)
    # Weighted (non-integer) counts, as sampled traffic gives them.
    weighted = compare_proportions(3.5, 100.2, 2.0, 50.1, ALPHA)
    assert 0 < weighted.p_value < 1 and weighted.ci_low < 0 < weighted.ci_high


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((5, 4, 1, 10), "more events than trials"),
        ((-1, 10, 1, 10), "x_control must be a non-negative number"),
        ((1, 10, float("nan"), 10), "x_treatment must be a non-negative number"),
        ((1, float("inf"), 1, 10), "n_control must be a non-negative number"),
    ],
)
def test_bad_counts_are_refused_by_name(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compare_proportions(*args, ALPHA)


# -- sample ratio -------------------------------------------------------------------------------


def test_an_unbalanced_assignment_52_48_on_20000_consumers_fails_the_srm_check() -> None:
    rng = np.random.default_rng(52)
    treated = int((rng.random(20_000) < 0.48).sum())
    result = sample_ratio_mismatch(
        {"control": 20_000 - treated, "treatment": treated}, {"control": 0.5, "treatment": 0.5}
    )
    assert not result.ok and result.p_value < 0.001
    assert result.expected == {"control": 10_000.0, "treatment": 10_000.0}
    exact = sample_ratio_mismatch({"control": 10_400, "treatment": 9_600}, {"control": 50, "treatment": 50})
    assert exact.chi2 == pytest.approx(32.0) and exact.p_value == pytest.approx(stats.chi2.sf(32.0, 1))


def test_an_assignment_as_planned_passes_including_an_uneven_plan() -> None:
    assert sample_ratio_mismatch({"a": 10_000, "b": 10_000}, {"a": 0.5, "b": 0.5}) == (
        0.0,
        1.0,
        {"a": 10_000.0, "b": 10_000.0},
        True,
    )
    uneven = sample_ratio_mismatch({"a": 7_050, "b": 2_950}, {"a": 0.7, "b": 0.3})
    assert uneven.ok and uneven.expected == pytest.approx({"a": 7_000.0, "b": 3_000.0})
    assert uneven.chi2 == pytest.approx(50**2 / 7_000 + 50**2 / 3_000)


def test_srm_over_300_balanced_seeds_fails_at_about_the_threshold_rate() -> None:
    failed = 0
    for seed in range(SEEDS):
        treated = int(np.random.default_rng(seed).binomial(20_000, 0.5))
        failed += not sample_ratio_mismatch({"c": 20_000 - treated, "t": treated}, {"c": 1, "t": 1}).ok
    assert _within_alpha_rate(failed, alpha=0.001), failed


def test_srm_edge_cases() -> None:
    # A variant with no consumers yet counts as zero; none at all is not a mismatch.
    assert not sample_ratio_mismatch({"a": 500}, {"a": 0.5, "b": 0.5}).ok
    assert sample_ratio_mismatch({}, {"a": 0.5, "b": 0.5}).ok
    with pytest.raises(ValueError, match=r"variants \['c'\] are not in the planned split"):
        sample_ratio_mismatch({"a": 1, "c": 2}, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="observed counts must be non-negative"):
        sample_ratio_mismatch({"a": -1}, {"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="planned weights must be positive"):
        sample_ratio_mismatch({"a": 1}, {"a": 0, "b": 0})


# -- latency from the histogram ----------------------------------------------------------------


def _one_bucket(index: int, count: float = 100.0) -> list[float]:
    counts = [0.0] * BUCKETS
    counts[index] = count
    return counts


def test_quantile_from_histogram_interpolates_within_the_bucket() -> None:
    # All in bucket 10, (bound[9], bound[10]]: the median is its middle, q linear across it.
    counts = _one_bucket(10)
    assert quantile_from_histogram(counts, 0.5) == pytest.approx((BOUNDS[9] + BOUNDS[10]) / 2, rel=1e-12)
    assert quantile_from_histogram(counts, 0.95) == pytest.approx(BOUNDS[9] + 0.95 * (BOUNDS[10] - BOUNDS[9]))
    # Half in bucket 0 (from 0 to 1 ms), half in bucket 2.
    counts = [0.0] * BUCKETS
    counts[0], counts[2] = 50, 50
    assert quantile_from_histogram(counts, 0.25) == pytest.approx(0.0005)
    assert quantile_from_histogram(counts, 0.5) == pytest.approx(0.001)
    assert quantile_from_histogram(counts, 0.75) == pytest.approx(BOUNDS[1] + 0.5 * (BOUNDS[2] - BOUNDS[1]))
    # q = 0 and q = 1: the edges of the first and last occupied buckets.
    assert quantile_from_histogram(counts, 0.0) == 0.0
    assert quantile_from_histogram(counts, 1.0) == pytest.approx(BOUNDS[2])


def test_a_quantile_among_the_slowest_requests_is_the_last_bound() -> None:
    counts = _one_bucket(30, 90)
    counts[BUCKETS - 1] = 10
    assert quantile_from_histogram(counts, 0.95) == BOUNDS[-1] == pytest.approx(0.001 * 1.25**50)
    assert quantile_from_histogram(counts, 0.9) == pytest.approx(BOUNDS[30])


def test_quantile_from_histogram_refuses_bad_input_by_name() -> None:
    assert math.isnan(quantile_from_histogram([0.0] * BUCKETS, 0.95))
    with pytest.raises(ValueError, match=r"latency_counts: expected 52 bucket counts .* got 51"):
        quantile_from_histogram([1.0] * (BUCKETS - 1), 0.5)
    with pytest.raises(ValueError, match="must be non-negative numbers"):
        quantile_from_histogram([-1.0] + [0.0] * (BUCKETS - 1), 0.5)
    with pytest.raises(ValueError, match="must be non-negative numbers"):
        quantile_from_histogram([float("nan")] * BUCKETS, 0.5)
    with pytest.raises(ValueError, match="q must be between 0 and 1"):
        quantile_from_histogram(_one_bucket(3), 1.5)


def test_the_p95_read_from_buckets_is_within_the_bucket_width_of_the_sample_p95() -> None:
    durations = np.random.default_rng(9).lognormal(np.log(0.08), 0.5, 50_000)
    estimate = quantile_from_histogram(bucketed(durations), 0.95)
    assert estimate == pytest.approx(np.quantile(durations, 0.95), rel=0.05)


def test_the_p95_interval_is_seeded_and_narrows_with_traffic() -> None:
    rng = np.random.default_rng(1)
    small, large = latency(rng, 5_000), latency(rng, 80_000)
    low, high = p95_interval(small, ALPHA)
    assert p95_interval(small, ALPHA) == (low, high)  # the default generator is seeded
    assert p95_interval(small, ALPHA, np.random.default_rng(2)) != (low, high)
    assert low < quantile_from_histogram(small, 0.95) < high
    low_l, high_l = p95_interval(large, ALPHA)
    # Sixteen times the requests: about a quarter of the width.
    assert 0.15 < (high_l - low_l) / (high - low) < 0.4
    assert all(math.isnan(b) for b in p95_interval([0.0] * BUCKETS, ALPHA))


def test_a_30_percent_p95_shift_is_detected() -> None:
    rng = np.random.default_rng(30)
    control, treatment = latency(rng, 20_000, 0.08), latency(rng, 20_000, 0.08 * 1.3)
    result = compare_latency(control, treatment, ALPHA)
    assert result.significant and result.p_value < 1e-6
    assert result.relative_change == pytest.approx(0.3, abs=0.05)
    assert result.ci_control[1] < result.ci_treatment[0]
    assert result.ci_control == p95_interval(control, ALPHA)
    assert result.ci_treatment == p95_interval(treatment, ALPHA)
    # The detectable change at this traffic is well under the shift found.
    # the bootstrap alone would say a few percent; a 25%-wide bucket cannot resolve less
    assert result.minimum_detectable_effect == LATENCY_RESOLUTION == 0.25


def test_no_latency_shift_is_not_significant() -> None:
    rng = np.random.default_rng(31)
    result = compare_latency(latency(rng, 20_000), latency(rng, 20_000), ALPHA)
    assert not result.significant and result.p_value > ALPHA


def test_an_aa_run_over_300_seeds_finds_latency_significant_at_the_alpha_rate() -> None:
    significant = 0
    for seed in range(SEEDS):
        rng = np.random.default_rng(10_000 + seed)
        significant += compare_latency(
            latency(rng, 2_000), latency(rng, 2_000), ALPHA, resamples=10
        ).significant
    assert _within_alpha_rate(significant), significant


def test_mann_whitney_reads_bucket_ties_like_scipy_on_the_expanded_requests() -> None:
    control, treatment = _one_bucket(10, 30), _one_bucket(10, 20)
    control[11], treatment[11], treatment[12] = 10, 15, 5
    expanded_c = np.repeat(np.arange(BUCKETS), np.asarray(control, dtype=int))
    expanded_t = np.repeat(np.arange(BUCKETS), np.asarray(treatment, dtype=int))
    expected = stats.mannwhitneyu(expanded_t, expanded_c, method="asymptotic").pvalue
    assert compare_latency(control, treatment, ALPHA).p_value == pytest.approx(expected, rel=1e-12)


def test_a_histogram_above_the_cap_is_tested_as_its_shape_at_the_cap() -> None:
    rng = np.random.default_rng(4)
    control = np.asarray(latency(rng, 20_000))
    treatment = np.asarray(latency(rng, 20_000, 0.082))
    scale = 1_000 * MANN_WHITNEY_CAP / 20_000  # 100 million requests each
    at_cap = compare_latency(control * (MANN_WHITNEY_CAP / 20_000), treatment * (MANN_WHITNEY_CAP / 20_000))
    huge = compare_latency(control * scale, treatment * scale)
    assert huge.p_value == pytest.approx(at_cap.p_value, rel=1e-9)
    assert huge.p95_control == pytest.approx(at_cap.p95_control)


def test_latency_without_requests_or_with_one_value_everywhere() -> None:
    empty = compare_latency([0.0] * BUCKETS, _one_bucket(4), ALPHA)
    assert math.isnan(empty.p_value) and not empty.significant and math.isnan(empty.p95_control)
    same = compare_latency(_one_bucket(4), _one_bucket(4, 300), ALPHA)
    assert same.p_value == 1.0 and not same.significant


# -- time to first success ----------------------------------------------------------------------


def test_a_slower_first_success_is_found_and_an_equal_one_is_not() -> None:
    rng = np.random.default_rng(12)
    control, slower = rng.exponential(30, 800), rng.exponential(45, 800)
    result = compare_ttfs(control, slower, ALPHA)
    assert result.significant and result.median_treatment > result.median_control
    assert result.median_control == float(np.median(control))
    assert result.ci_control[0] < result.median_control < result.ci_control[1]
    assert result.ci_control == median_interval(control, ALPHA)
    same = compare_ttfs(control, rng.exponential(30, 800), ALPHA)
    assert not same.significant


def test_ttfs_edges() -> None:
    assert math.isnan(compare_ttfs([], [1.0, 2.0]).p_value)
    assert compare_ttfs([5.0, 5.0], [5.0]).p_value == 1.0
    with pytest.raises(ValueError, match="control ttfs_seconds: times to first success must be non-negative"):
        compare_ttfs([-1.0], [1.0])
    with pytest.raises(ValueError, match="treatment ttfs_seconds"):
        compare_ttfs([1.0], [float("inf")])


# -- power and minimum detectable effect ------------------------------------------------------


def test_power_and_mde_match_statsmodels_solve_power_for_10_to_12_percent() -> None:
    # The textbook case: 10% -> 12% at alpha 0.05 and power 0.8 needs about 3,835 per group.
    effect = proportion_effectsize(0.12, 0.10)
    n = NormalIndPower().solve_power(effect_size=effect, alpha=0.05, power=0.8, ratio=1.0)
    assert round(n) == 3_835
    achieved, mde = power_and_mde(n, n, 0.10, 0.05, 0.8, planned_mde=0.2)
    assert achieved == pytest.approx(0.8, abs=1e-6)
    assert mde == pytest.approx(0.2, abs=1e-6)


def test_power_with_unequal_groups_is_statsmodels_power() -> None:
    effect = proportion_effectsize(0.011, 0.01)
    expected = NormalIndPower().power(effect, nobs1=30_000, alpha=0.05, ratio=2.0)
    achieved, mde = power_and_mde(30_000, 60_000, 0.01, 0.05, 0.8, planned_mde=0.1)
    assert achieved == pytest.approx(expected, rel=1e-12)
    # More traffic, smaller detectable effect.
    assert power_and_mde(300_000, 600_000, 0.01, 0.05, 0.8, 0.1).minimum_detectable_effect < mde / 3


def test_power_and_mde_without_traffic_or_baseline_are_unknown() -> None:
    for args in ((0, 100, 0.1), (100, 100, 0.0), (100, 100, 1.0)):
        assert all(math.isnan(v) for v in power_and_mde(*args, 0.05, 0.8, 0.1))
    # A tiny group: the smallest detectable rise can be "up to 100%", never beyond.
    _, mde = power_and_mde(5, 5, 0.5, 0.05, 0.8, 0.1)
    assert mde == pytest.approx(1.0)


def test_a_histogram_beyond_int64_requests_still_gets_an_interval() -> None:
    counts = _one_bucket(5, 9e20)
    counts[6] = 1e20
    low, high = p95_interval(counts, ALPHA)
    assert low <= quantile_from_histogram(counts, 0.95) <= high
    assert compare_latency(counts, counts, ALPHA).p_value == pytest.approx(1.0)


def test_a_p95_that_moves_against_the_shift_of_the_distribution_is_not_significant() -> None:
    """Regression: most treatment requests were faster (bucket 2 against 5), a few more were slow,
    so the interpolated p95 rose 72 -> 78 ms while Mann-Whitney said "faster" with p < 1e-6; the
    verdict called it a failed latency guardrail. The two must agree for a result."""
    control = [0.0] * BUCKETS
    treatment = [0.0] * BUCKETS
    control[5], control[20] = 9400.0, 600.0
    treatment[2], treatment[20] = 9000.0, 1000.0
    result = compare_latency(control, treatment, resamples=200)
    assert result.p95_treatment > result.p95_control
    assert result.p_value < 1e-6 and result.shift == -1
    assert result.significant is False
    # One bucket on both sides: no spread, yet no change under a bucket's width is detectable.
    one = [0.0] * BUCKETS
    one[20] = 1e6
    flat = compare_latency(one, one, resamples=200)
    assert (flat.p_value, flat.shift, flat.minimum_detectable_effect) == (1.0, 0, LATENCY_RESOLUTION)
