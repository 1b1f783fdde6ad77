"""The statistics of an experiment: sample ratio, two-proportion tests, latency from the bucketed
histogram, time to first success, power and minimum detectable effect.

Every distribution comes from scipy or statsmodels. The assumptions (docs/experiments.md):
consumers are assigned independently; the ratio tests treat requests as independent trials
(many requests of one consumer make the intervals too narrow); the samples are large enough
for normal approximations (`enough_for_normal`: at least MIN_EXPECTED expected counts in every
cell); latency is known only to its bucket (EXPERIMENT_LATENCY_BOUNDS, 25% wide), so a p95 is
interpolated within one. Counts are of observed units (sampled spans, not their weights).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np
from apiusage.processor.state.schema import EXPERIMENT_LATENCY_BOUNDS
from scipy import stats  # type: ignore[import-untyped]
from statsmodels.stats.power import NormalIndPower  # type: ignore[import-untyped]
from statsmodels.stats.proportion import (  # type: ignore[import-untyped]
    confint_proportions_2indep,
    proportion_confint,
    proportion_effectsize,
    test_proportions_2indep,
)

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "MANN_WHITNEY_CAP",
    "MIN_EXPECTED",
    "LatencyResult",
    "PowerResult",
    "ProportionResult",
    "SrmResult",
    "TtfsResult",
    "compare_latency",
    "compare_proportions",
    "compare_ttfs",
    "enough_for_normal",
    "p95_interval",
    "median_interval",
    "monitoring_threshold",
    "power_and_mde",
    "proportion_interval",
    "quantile_from_histogram",
    "sample_ratio_mismatch",
]

NAN = float("nan")
#: The number of buckets a latency histogram has: one per bound, then the slower ones.
BUCKETS = len(EXPERIMENT_LATENCY_BOUNDS) + 1
#: Bootstrap resamples of a latency histogram, and the seed the default generator starts from
#: (a report read twice says the same).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 20261116
#: A histogram of more requests is resampled at this many (numpy's multinomial takes an int64).
BOOTSTRAP_MAX_REQUESTS = 10**15
#: Mann–Whitney on bucketed latency: at most this many requests per variant are expanded. A
#: larger histogram is scaled down to it, keeping its shape: the p-value is then that of a
#: sample this size, so conservative (a real difference only looks less certain).
MANN_WHITNEY_CAP = 100_000
#: Cochran's rule for the normal approximation of a 2x2 comparison (the two-proportion test is
#: the chi-square test of that table): every expected count, events and non-events of each
#: variant under "no difference", at least this many.
MIN_EXPECTED = 5.0
#: The smallest relative p95 change the histogram can resolve: one bucket is 25% wide.
LATENCY_RESOLUTION = 0.25

_BOUNDS = np.asarray(EXPERIMENT_LATENCY_BOUNDS, dtype=float)
_LOWER = np.concatenate(([0.0], _BOUNDS))  # bucket i spans (_LOWER[i], _BOUNDS[i]]


class SrmResult(NamedTuple):
    """Chi-square of the consumers per variant against the planned split."""

    chi2: float
    p_value: float
    expected: Mapping[str, float]
    ok: bool


class ProportionResult(NamedTuple):
    """Treatment against control for a ratio; difference = p_treatment - p_control."""

    p_control: float
    p_treatment: float
    difference: float
    ci_low: float
    ci_high: float
    relative_change: float
    p_value: float
    significant: bool


class LatencyResult(NamedTuple):
    """p95 latency (seconds) of each variant with its bootstrap interval; Mann–Whitney p-value."""

    p95_control: float
    p95_treatment: float
    ci_control: tuple[float, float]
    ci_treatment: tuple[float, float]
    p_value: float
    significant: bool
    relative_change: float
    #: relative change of p95 detectable at `power` with this traffic (from the bootstrap spread;
    #: at least LATENCY_RESOLUTION)
    minimum_detectable_effect: float
    #: which way the treatment's requests lean (Mann–Whitney): 1 slower, -1 faster, 0 neither
    shift: int = 0


class TtfsResult(NamedTuple):
    """Median time to first success (seconds) of each variant; Mann–Whitney p-value."""

    median_control: float
    median_treatment: float
    ci_control: tuple[float, float]
    ci_treatment: tuple[float, float]
    p_value: float
    significant: bool
    relative_change: float


class PowerResult(NamedTuple):
    """The power to detect the planned effect, and the smallest effect detectable (relative)."""

    achieved_power: float
    minimum_detectable_effect: float


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Degenerate inputs (no events, all events) make statsmodels divide by zero; handled after."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        yield


def _finite(value: float) -> float:
    value = float(value)
    return value if math.isfinite(value) else NAN


def sample_ratio_mismatch(
    observed: Mapping[str, float], planned: Mapping[str, float], threshold: float = 0.001
) -> SrmResult:
    """Chi-square goodness of fit of the consumers per variant to the planned split.

    `planned` gives each variant's weight (normalised here); a variant missing from `observed`
    has none. A strict threshold (0.001, the usual one) because a mismatch blocks the verdict:
    the assignment, not the treatment, may explain any difference.
    """
    unknown = sorted(set(observed) - set(planned))
    if unknown:
        raise ValueError(f"sample ratio: variants {unknown} are not in the planned split {sorted(planned)}")
    if not planned:
        raise ValueError("sample ratio: the planned split is empty")
    weights = {v: float(w) for v, w in planned.items()}
    if any(not math.isfinite(w) or w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"sample ratio: planned weights must be positive numbers (got {dict(planned)})")
    counts = {v: float(observed.get(v, 0)) for v in weights}
    if any(not math.isfinite(c) or c < 0 for c in counts.values()):
        raise ValueError(f"sample ratio: observed counts must be non-negative numbers (got {dict(observed)})")
    total = sum(counts.values())
    share = sum(weights.values())
    expected = {v: total * w / share for v, w in weights.items()}
    if any(expected[v] == 0 and counts[v] > 0 for v in weights):
        return SrmResult(math.inf, 0.0, expected, False)
    cells = [v for v in weights if expected[v] > 0]
    if total == 0 or len(cells) < 2:
        return SrmResult(0.0, 1.0, expected, True)
    chi2, p_value = stats.chisquare([counts[v] for v in cells], [expected[v] for v in cells])
    return SrmResult(float(chi2), float(p_value), expected, bool(p_value >= threshold))


def _check_counts(events: float, trials: float, events_name: str, trials_name: str) -> None:
    for name, value in ((events_name, events), (trials_name, trials)):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"proportions: {name} must be a non-negative number (got {value!r})")
    if events > trials:
        raise ValueError(
            f"proportions: more events than trials ({events_name} {events} > {trials_name} {trials})"
        )


def proportion_interval(successes: float, trials: float, alpha: float) -> tuple[float, float]:
    """Wilson interval of one variant's ratio (good coverage near 0%, where error ratios live)."""
    _check_counts(successes, trials, "events", "trials")
    if trials <= 0:
        return (NAN, NAN)
    low, high = proportion_confint(successes, trials, alpha=alpha, method="wilson")
    # Exactly 0 (100%) with no events (no non-events), not the 1e-17 of floating-point noise.
    return (0.0 if successes == 0 else _finite(low), 1.0 if successes == trials else _finite(high))


def compare_proportions(
    x_control: float, n_control: float, x_treatment: float, n_treatment: float, alpha: float = 0.05
) -> ProportionResult:
    """Two independent proportions: statsmodels test_proportions_2indep and
    confint_proportions_2indep, both with method="agresti-caffo".

    Why Agresti–Caffo: the test and the interval are the same adjusted Wald statistic, so the
    interval excludes 0 exactly when p < alpha (a reader never sees "significant" beside an
    interval through zero); it keeps its coverage at rates near 0% and with zero events; and it
    takes the weighted (non-integer) counts the store holds, where the score interval's root
    search fails. At the traffic an experiment needs, it agrees with the score test.
    """
    _check_counts(x_control, n_control, "x_control", "n_control")
    _check_counts(x_treatment, n_treatment, "x_treatment", "n_treatment")
    p_c = x_control / n_control if n_control > 0 else NAN
    p_t = x_treatment / n_treatment if n_treatment > 0 else NAN
    if n_control <= 0 or n_treatment <= 0:
        return ProportionResult(p_c, p_t, p_t - p_c, NAN, NAN, NAN, NAN, False)
    with _quiet():
        test = test_proportions_2indep(
            x_treatment, n_treatment, x_control, n_control, method="agresti-caffo", compare="diff"
        )
        low, high = confint_proportions_2indep(
            x_treatment, n_treatment, x_control, n_control, "agresti-caffo", compare="diff", alpha=alpha
        )
    p_value = _finite(test.pvalue)
    if math.isnan(p_value) and p_c == p_t:
        p_value = 1.0  # no events (or only events) on both sides: nothing differs
    difference = p_t - p_c
    relative = difference / p_c if p_c > 0 else NAN
    significant = not math.isnan(p_value) and p_value < alpha
    return ProportionResult(p_c, p_t, difference, _finite(low), _finite(high), relative, p_value, significant)


def enough_for_normal(x_control: float, n_control: float, x_treatment: float, n_treatment: float) -> bool:
    """Whether a two-proportion comparison has enough data for its normal approximation: every
    expected count of the 2x2 table (scipy's expected_freq, from the pooled rate) is at least
    MIN_EXPECTED. Below it (a handful of errors, or almost every request failing) a p-value from
    Agresti–Caffo or any Wald-type test is not to be trusted."""
    _check_counts(x_control, n_control, "x_control", "n_control")
    _check_counts(x_treatment, n_treatment, "x_treatment", "n_treatment")
    if n_control <= 0 or n_treatment <= 0:
        return False
    table = [[x_control, n_control - x_control], [x_treatment, n_treatment - x_treatment]]
    return bool(np.min(stats.contingency.expected_freq(table)) >= MIN_EXPECTED)


def _histogram(counts: Sequence[float], name: str = "latency_counts") -> np.ndarray:
    array = np.asarray(counts, dtype=float)
    if array.shape != (BUCKETS,):
        raise ValueError(
            f"{name}: expected {BUCKETS} bucket counts (one per EXPERIMENT_LATENCY_BOUNDS and the "
            f"slower ones), got {array.size}"
        )
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name}: bucket counts must be non-negative numbers")
    return array


def _quantiles(counts: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile of each row of a (rows, BUCKETS) array of histograms."""
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    # The rank from the cumulative sum itself, so q=1 lands in the last non-empty bucket.
    rank = q * total
    reached = (cum >= rank[:, None]) & (counts > 0)
    index = np.argmax(reached, axis=1)
    rows = np.arange(counts.shape[0])
    inside = counts[rows, index]
    before = cum[rows, index] - inside
    upper = np.concatenate((_BOUNDS, [_BOUNDS[-1]]))[index]
    lower = _LOWER[index]
    with np.errstate(invalid="ignore", divide="ignore"):
        value = lower + (upper - lower) * np.clip((rank - before) / inside, 0.0, 1.0)
    # Slower than the last bound: no upper edge to interpolate to; the last bound, as Prometheus'
    # histogram_quantile answers for its +Inf bucket.
    value = np.where(index == BUCKETS - 1, _BOUNDS[-1], value)
    return np.where(total > 0, value, np.nan)


def quantile_from_histogram(counts: Sequence[float], q: float) -> float:
    """The q-quantile (seconds) of a latency histogram, interpolated linearly within its bucket.

    Bucket i holds durations in (bound[i-1], bound[i]] (bucket 0 from 0); the last holds the
    slower ones, and a quantile falling there is the last bound. NaN for an empty histogram.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile: q must be between 0 and 1 (got {q!r})")
    return float(_quantiles(_histogram(counts)[None, :], q)[0])


def _generator(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng(BOOTSTRAP_SEED)


def _bootstrap_p95(counts: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    """p95 of `resamples` multinomial resamples of the histogram (the same number of requests)."""
    total = counts.sum()
    # numpy draws at most int64 requests; at that traffic the interval is far inside one bucket.
    n = int(round(min(total, BOOTSTRAP_MAX_REQUESTS)))
    if n <= 0:
        return np.full(resamples, np.nan)
    draws = rng.multinomial(n, counts / total, size=resamples).astype(float)
    return _quantiles(draws, 0.95)


def p95_interval(
    counts: Sequence[float],
    alpha: float = 0.05,
    rng: np.random.Generator | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the p95: the counts resampled (numpy multinomial) and
    the p95 read from each resample. Seeded (BOOTSTRAP_SEED) unless `rng` is given."""
    estimates = _bootstrap_p95(_histogram(counts), _generator(rng), resamples)
    return _percentiles(estimates, alpha)


def _percentiles(estimates: np.ndarray, alpha: float) -> tuple[float, float]:
    if np.isnan(estimates).all():
        return (NAN, NAN)
    low, high = np.quantile(estimates, [alpha / 2, 1 - alpha / 2])
    return (float(low), float(high))


def _expand(counts: np.ndarray) -> np.ndarray:
    """The bucket index of every request, at most MANN_WHITNEY_CAP of them (shape kept)."""
    total = counts.sum()
    if total > MANN_WHITNEY_CAP:
        scaled = counts * (MANN_WHITNEY_CAP / total)
        whole = np.floor(scaled)
        # Largest remainders get the requests the flooring lost, so the sample is exactly the cap.
        short = int(MANN_WHITNEY_CAP - whole.sum())
        if short > 0:
            whole[np.argsort(-(scaled - whole), kind="stable")[:short]] += 1
        counts = whole
    else:
        counts = np.rint(counts)
    return np.repeat(np.arange(BUCKETS), counts.astype(np.int64))


def _mann_whitney(control: np.ndarray, treatment: np.ndarray) -> tuple[float, int]:
    """The two-sided p-value, and which way treatment requests lean: 1 slower, -1 faster, 0 neither."""
    if control.size == 0 or treatment.size == 0:
        return NAN, 0
    if np.all(control == control[0]) and np.all(treatment == control[0]):
        return 1.0, 0  # one value on both sides: the tie-corrected variance is zero
    # Asymptotic with the tie correction: the buckets make ties the rule, not the exception.
    result = stats.mannwhitneyu(treatment, control, alternative="two-sided", method="asymptotic")
    centre = treatment.size * control.size / 2  # U of the treatment when neither side leans
    shift = 1 if result.statistic > centre else -1 if result.statistic < centre else 0
    return _finite(result.pvalue), shift


def compare_latency(
    counts_control: Sequence[float],
    counts_treatment: Sequence[float],
    alpha: float = 0.05,
    rng: np.random.Generator | None = None,
    power: float = 0.8,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> LatencyResult:
    """p95 of both variants with bootstrap intervals; Mann–Whitney U on the bucketed durations.

    The test compares whole distributions (is a treatment request slower than a control one
    more often than not?), not the p95 itself; the verdict reads its direction from the p95s.
    Requests equal to the bucket index, ties corrected; at most MANN_WHITNEY_CAP per variant.
    The minimum detectable effect comes from the bootstrap standard errors of the two p95s.
    """
    control = _histogram(counts_control, "control latency_counts")
    treatment = _histogram(counts_treatment, "treatment latency_counts")
    # Without a generator each histogram gets its own seeded one, so its interval is the one
    # p95_interval gives it alone (the per-variant table and the comparison agree).
    boot_c = _bootstrap_p95(control, _generator(rng), resamples)
    boot_t = _bootstrap_p95(treatment, _generator(rng), resamples)
    p95_c = float(_quantiles(control[None, :], 0.95)[0])
    p95_t = float(_quantiles(treatment[None, :], 0.95)[0])
    p_value, shift = _mann_whitney(_expand(control), _expand(treatment))
    relative = (p95_t - p95_c) / p95_c if p95_c > 0 else NAN
    mde = NAN
    if p95_c > 0 and not (np.isnan(boot_c).any() or np.isnan(boot_t).any()):
        spread = math.hypot(float(np.std(boot_c)), float(np.std(boot_t)))
        z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
        # Within one bucket a p95 is interpolated, not measured: no change smaller than a bucket's
        # width (25%) can be told apart, however tight the bootstrap (one bucket: no spread at all).
        mde = max(float(z * spread / p95_c), LATENCY_RESOLUTION)
    # The test compares distributions; a p95 moving against the way they shifted is not a result.
    moved = 1 if p95_t > p95_c else -1 if p95_t < p95_c else 0
    significant = not math.isnan(p_value) and p_value < alpha and shift != 0 and moved == shift
    return LatencyResult(
        p95_c,
        p95_t,
        _percentiles(boot_c, alpha),
        _percentiles(boot_t, alpha),
        p_value,
        significant,
        relative,
        mde,
        shift,
    )


def _samples(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError(f"{name}: times to first success must be non-negative numbers of seconds")
    return array


def median_interval(samples: Sequence[float] | np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Distribution-free interval of the median: order statistics (scipy quantile_test)."""
    values = _samples(samples, "ttfs_seconds")
    if values.size == 0:
        return (NAN, NAN)
    with _quiet():
        ci = stats.quantile_test(values, q=float(np.median(values)), p=0.5).confidence_interval(1 - alpha)
    return (_finite(ci.low), _finite(ci.high))


def compare_ttfs(
    ttfs_control: Sequence[float], ttfs_treatment: Sequence[float], alpha: float = 0.05
) -> TtfsResult:
    """Median time to first success with order-statistic intervals; Mann–Whitney U on the
    per-consumer samples (only the consumers that succeeded: those that never did are counted
    apart, in VariantData.never_succeeded)."""
    control = _samples(ttfs_control, "control ttfs_seconds")
    treatment = _samples(ttfs_treatment, "treatment ttfs_seconds")
    median_c = float(np.median(control)) if control.size else NAN
    median_t = float(np.median(treatment)) if treatment.size else NAN
    p_value = NAN
    if control.size and treatment.size:
        if np.all(control == control[0]) and np.all(treatment == control[0]):
            p_value = 1.0
        else:
            p_value = _finite(stats.mannwhitneyu(treatment, control, alternative="two-sided").pvalue)
    relative = (median_t - median_c) / median_c if median_c > 0 else NAN
    significant = not math.isnan(p_value) and p_value < alpha
    return TtfsResult(
        median_c,
        median_t,
        median_interval(control, alpha),
        median_interval(treatment, alpha),
        p_value,
        significant,
        relative,
    )


def power_and_mde(
    n_control: float,
    n_treatment: float,
    baseline_rate: float,
    alpha: float = 0.05,
    power: float = 0.8,
    planned_mde: float = 0.1,
) -> PowerResult:
    """For a ratio with this many trials per variant: the power to detect the planned relative
    change (`planned_mde`) of `baseline_rate`, and the smallest relative increase detectable
    at `power` (two-sided, alpha). statsmodels NormalIndPower on Cohen's h
    (proportion_effectsize, the arcsine difference). NaN when there is no traffic or the
    baseline is 0% or 100% (no relative change to speak of)."""
    if not (n_control > 0 and n_treatment > 0 and 0 < baseline_rate < 1):
        return PowerResult(NAN, NAN)
    analysis = NormalIndPower()
    ratio = n_treatment / n_control
    target = min(baseline_rate * (1 + planned_mde), 1.0)
    with _quiet():
        effect = proportion_effectsize(target, baseline_rate)
        achieved = analysis.power(effect, nobs1=n_control, alpha=alpha, ratio=ratio, alternative="two-sided")
        h = analysis.solve_power(
            effect_size=None, nobs1=n_control, alpha=alpha, power=power, ratio=ratio, alternative="two-sided"
        )
    h = _finite(np.asarray(h).item())
    if math.isnan(h):
        return PowerResult(_finite(achieved), NAN)
    # Invert h = 2 asin(sqrt(p2)) - 2 asin(sqrt(p1)) for the rate above the baseline.
    angle = math.asin(math.sqrt(baseline_rate)) + abs(h) / 2
    p2 = 1.0 if angle >= math.pi / 2 else math.sin(angle) ** 2
    return PowerResult(_finite(achieved), p2 / baseline_rate - 1)


def monitoring_threshold(alpha: float, fraction: float | None = None) -> float:
    """The two-sided p-value a result must be under to count: `alpha` for a single read at the
    planned end (`fraction` None), else the O'Brien-Fleming boundary for continuous monitoring
    at information fraction `fraction` (0 < t <= 1).

    Under no effect the z statistic on cumulative data is a Brownian motion in t; by the
    reflection principle P(sup_{s<=1} |W(s)| >= c) ~= 4 (1 - Phi(c)), so c = Phi^-1(1 - alpha/4)
    keeps the chance of ever crossing |Z| >= c / sqrt(t), however often one looks, at about
    alpha (O'Brien & Fleming 1979; the Lan & DeMets 1983 spending function of that shape).
    As a p threshold: 2 (1 - Phi(c / sqrt(t))); at t = 1 it is about alpha / 2, stricter than
    a single final read, the price of having looked all along.
    """
    if isinstance(alpha, bool) or not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"monitoring threshold: alpha must be between 0 and 1 (got {alpha!r})")
    if fraction is None:
        return float(alpha)
    if isinstance(fraction, bool) or not (
        isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction <= 1
    ):
        raise ValueError(
            f"monitoring threshold: the information fraction must be in (0, 1] (got {fraction!r})"
        )
    c = stats.norm.isf(alpha / 4)
    return float(2 * stats.norm.sf(c / math.sqrt(fraction)))
