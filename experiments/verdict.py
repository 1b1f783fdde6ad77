"""The verdict of an experiment: every treatment against the control on every metric of the
protocol, with intervals, p-values and one plain-language sentence each.

Order of reading: the sample-ratio check first (a mismatch blocks the verdict: no metric is
called significant), then contamination, then the primary metric and the guardrails. With more
than one treatment the p-values of one metric are Holm-corrected over the treatments
(statsmodels multipletests), which keeps the chance of any false "significant" at alpha; the
metrics are not corrected against each other (each guardrail is its own decision, and a
correction would make a harm harder to see). Intervals are not adjusted.

Sample sizes are the spans received (VariantData.requests...), not the sampling-weighted
estimates: with 10% head sampling a span stands for ten requests, but it is one observation.
A ratio with fewer than MIN_EXPECTED expected events (or non-events) in a variant is "not
enough data", not a p-value (statistics.enough_for_normal).

Looking before the end: `analyse(..., fraction=t)` is an interim look at information fraction t
(the share of the planned duration behind the data). A result then counts only past the
O'Brien-Fleming boundary (statistics.monitoring_threshold), so that reading the growing data
every day (or every 5 minutes, as the experiment checks do) keeps the chance of a false
"significant" over the whole experiment at about alpha. `fraction=None` is the single read at
the planned end: the p-value against alpha.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from apiusage.conventions.experiments import Experiment
from statsmodels.stats.multitest import multipletests  # type: ignore[import-untyped]

from . import formatting as fmt
from .data import VariantData
from .statistics import (
    BUCKETS,
    MIN_EXPECTED,
    SrmResult,
    compare_latency,
    compare_proportions,
    compare_ttfs,
    enough_for_normal,
    median_interval,
    monitoring_threshold,
    p95_interval,
    power_and_mde,
    proportion_interval,
    quantile_from_histogram,
    sample_ratio_mismatch,
)

__all__ = [
    "CONTAMINATION_WARNING",
    "NAMES",
    "Analysis",
    "MetricResult",
    "VariantSummary",
    "analyse",
    "interim_look",
]

NAN = float("nan")
#: The metric as the verdict names it.
NAMES = {
    "error_ratio": "error ratio",
    "client_error_ratio": "4xx",
    "latency_p95": "p95 latency",
    "adoption": "adoption",
    "time_to_first_success": "median time to first success",
}
#: Metrics where a higher treatment value is worse (adoption: lower is worse).
_HIGHER_IS_WORSE = ("error_ratio", "client_error_ratio", "latency_p95", "time_to_first_success")
#: Above this share of contaminated consumers the verdict warns that effects are diluted.
CONTAMINATION_WARNING = 0.05


@dataclass(frozen=True)
class VariantSummary:
    """One variant's numbers, each with its own interval (1 - alpha)."""

    variant: str
    consumers: int
    contaminated: int
    requests: float
    error_ratio: float
    error_ratio_ci: tuple[float, float]
    client_error_ratio: float
    client_error_ratio_ci: tuple[float, float]
    latency_p95: float
    latency_p95_ci: tuple[float, float]
    adoption: float
    adoption_ci: tuple[float, float]
    ttfs_median: float
    ttfs_median_ci: tuple[float, float]
    succeeded: int  # consumers in the time-to-first-success sample
    never_succeeded: int
    #: the sampling-weighted request total when traffic was sampled (`requests` are the spans)
    estimated_requests: float | None = None

    def value(self, metric: str) -> tuple[float, tuple[float, float]]:
        if metric == "time_to_first_success":
            return self.ttfs_median, self.ttfs_median_ci
        value: float = getattr(self, metric)
        ci: tuple[float, float] = getattr(self, f"{metric}_ci")
        return value, ci


@dataclass(frozen=True)
class MetricResult:
    """One treatment against the control on one metric."""

    metric: str
    role: str  # "primary" or "guardrail"
    treatment: str
    control_value: float
    treatment_value: float
    control_ci: tuple[float, float]
    treatment_ci: tuple[float, float]
    #: treatment - control with its interval (ratios only; NaN for latency and TTFS)
    difference_ci: tuple[float, float]
    relative_change: float
    p_value: float  # as tested
    p_adjusted: float  # Holm over the treatments (= p_value with one treatment)
    tested: bool  # False when the SRM check blocked the verdict or there is no data to compare
    significant: bool
    worse: bool  # significantly worse for the treatment
    guardrail_failed: bool
    minimum_detectable_effect: float  # relative, at the protocol's alpha and power; NaN if unknown
    achieved_power: float  # for the protocol's minimum_detectable_effect (ratios only)
    sentence: str
    #: the p a result had to be under to count: alpha, or the interim boundary (Analysis.fraction)
    threshold: float


@dataclass(frozen=True)
class Analysis:
    experiment: str
    service: str
    control: str
    treatments: tuple[str, ...]
    alpha: float
    power: float
    correction: str  # "holm" with more than one treatment, else "none"
    srm: SrmResult
    blocked: bool
    contaminated: int
    contaminated_share: float
    variants: tuple[VariantSummary, ...]
    results: tuple[MetricResult, ...]
    #: the plain-language lines, in reading order: SRM, contamination, metrics, per-treatment summary
    verdict: tuple[str, ...]
    notes: tuple[str, ...] = ()
    #: the information fraction of an interim look (None: the read at the planned end)
    fraction: float | None = None
    #: the p a result had to be under: alpha, or the O'Brien-Fleming boundary at `fraction`
    threshold: float = NAN
    #: the protocol's planned duration in days (for "day 5 of 14")
    planned_days: int | None = None

    def result(self, treatment: str, metric: str) -> MetricResult:
        for r in self.results:
            if r.treatment == treatment and r.metric == metric:
                return r
        raise KeyError((treatment, metric))

    @property
    def guardrails_failed(self) -> tuple[MetricResult, ...]:
        return tuple(r for r in self.results if r.guardrail_failed)


def _empty(variant: str) -> VariantData:
    return VariantData(variant, 0.0, 0.0, 0.0, 0, 0, (0.0,) * BUCKETS, 0, (), 0)


def _latency(data: VariantData) -> tuple[float, ...]:
    # No requests yet: the store may hand an empty histogram rather than 52 zeros.
    return tuple(data.latency_counts) or (0.0,) * BUCKETS


_COUNTS = ("requests", "errors", "client_errors", "consumers", "contaminated", "adopters", "never_succeeded")
_ESTIMATES = ("estimated_requests", "estimated_errors", "estimated_client_errors")
#: What a ratio's events are called in "not enough data" (its trials are `_Comparison.what`).
_EVENTS = {"error_ratio": "errors", "client_error_ratio": "4xx", "adoption": "adopters"}


def _check(data: VariantData) -> None:
    """Counts that cannot be (more errors than requests...), refused naming the variant and field."""
    estimates = [f for f in _ESTIMATES if getattr(data, f) is not None]
    for field in (*_COUNTS, *estimates):
        value = getattr(data, field)
        if (
            isinstance(value, bool)
            or not isinstance(value, numbers.Real)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(
                f"variant {data.variant!r}: {field} must be a non-negative number (got {value!r})"
            )
    for part, whole in (("errors", "requests"), ("client_errors", "requests"), ("adopters", "consumers")):
        if getattr(data, part) > getattr(data, whole):
            excess = f"{part} ({getattr(data, part):g}) exceed {whole} ({getattr(data, whole):g})"
            raise ValueError(f"variant {data.variant!r}: {excess}")
    if data.contaminated > data.consumers:
        excess = f"contaminated ({data.contaminated}) exceed consumers ({data.consumers})"
        raise ValueError(f"variant {data.variant!r}: {excess}")
    counts = np.asarray(data.latency_counts, dtype=float)
    if counts.size not in (0, BUCKETS):
        raise ValueError(
            f"variant {data.variant!r}: latency_counts: expected {BUCKETS} bucket counts, got {counts.size}"
        )
    if not (np.all(np.isfinite(counts)) and np.all(counts >= 0)):
        raise ValueError(f"variant {data.variant!r}: latency_counts must be non-negative numbers")
    ttfs = np.asarray(data.ttfs_seconds, dtype=float)
    if not (np.all(np.isfinite(ttfs)) and np.all(ttfs >= 0)):
        raise ValueError(f"variant {data.variant!r}: ttfs_seconds must be non-negative numbers of seconds")


def _summary(data: VariantData, alpha: float) -> VariantSummary:
    counts = _latency(data)

    def ratio(x: float, n: float) -> float:
        return x / n if n > 0 else NAN

    return VariantSummary(
        variant=data.variant,
        consumers=data.consumers,
        contaminated=data.contaminated,
        requests=data.requests,
        error_ratio=ratio(data.errors, data.requests),
        error_ratio_ci=proportion_interval(data.errors, data.requests, alpha),
        client_error_ratio=ratio(data.client_errors, data.requests),
        client_error_ratio_ci=proportion_interval(data.client_errors, data.requests, alpha),
        latency_p95=quantile_from_histogram(counts, 0.95),
        latency_p95_ci=p95_interval(counts, alpha),
        adoption=ratio(data.adopters, data.consumers),
        adoption_ci=proportion_interval(data.adopters, data.consumers, alpha),
        ttfs_median=float(np.median(data.ttfs_seconds)) if data.ttfs_seconds else NAN,
        ttfs_median_ci=median_interval(data.ttfs_seconds, alpha),
        succeeded=len(data.ttfs_seconds),
        never_succeeded=data.never_succeeded,
        estimated_requests=data.estimated_requests,
    )


@dataclass
class _Comparison:
    """A metric's raw comparison before the correction and the sentence."""

    metric: str
    treatment: str
    control_value: float
    treatment_value: float
    difference_ci: tuple[float, float]
    relative_change: float
    p_value: float
    mde: float
    power: float
    enough: bool
    what: str  # the unit counted, for "not enough data" ("requests", "consumers")
    n_control: float
    n_treatment: float
    #: which way the test says the treatment leans (1 up, -1 down, 0: the test has no direction)
    shift: int = 0
    #: why there is not enough data, when it is not the absence of trials
    why: str = ""

    @property
    def against(self) -> bool:
        """The value moved against the way the test says the distribution shifted."""
        return self.shift * (self.treatment_value - self.control_value) < 0


def _compare(metric: str, c: VariantData, t: VariantData, experiment: Experiment) -> _Comparison:
    alpha, power, planned = experiment.alpha, experiment.power, experiment.minimum_detectable_effect
    if metric in ("error_ratio", "client_error_ratio", "adoption"):
        field, trials, what = {
            "error_ratio": ("errors", "requests", "requests"),
            "client_error_ratio": ("client_errors", "requests", "requests"),
            "adoption": ("adopters", "consumers", "consumers"),
        }[metric]
        xc, nc = getattr(c, field), getattr(c, trials)
        xt, nt = getattr(t, field), getattr(t, trials)
        r = compare_proportions(xc, nc, xt, nt, alpha)
        achieved, mde = power_and_mde(nc, nt, r.p_control, alpha, power, planned)
        enough, why, p_value = nc > 0 and nt > 0, "", r.p_value
        if enough and not enough_for_normal(xc, nc, xt, nt):
            # Too few events (or non-events) for the normal approximation: no p-value at all.
            events = _EVENTS[metric]
            enough, p_value = False, NAN
            why = (
                f"{fmt.count(xc + xt)} {events} in {fmt.count(nc)} vs {fmt.count(nt)} {what}; the test "
                f"needs at least {MIN_EXPECTED:g} expected {events} and {MIN_EXPECTED:g} expected others "
                "in each variant"
            )
        return _Comparison(
            metric, t.variant, r.p_control, r.p_treatment, (r.ci_low, r.ci_high), r.relative_change,
            p_value, mde, achieved, enough, what, nc, nt, why=why,
        )  # fmt: skip
    if metric == "latency_p95":
        lat = compare_latency(_latency(c), _latency(t), alpha, power=power)
        timed_c, timed_t = sum(_latency(c)), sum(_latency(t))
        return _Comparison(
            metric, t.variant, lat.p95_control, lat.p95_treatment, (NAN, NAN), lat.relative_change,
            lat.p_value, lat.minimum_detectable_effect, NAN,
            timed_c > 0 and timed_t > 0, "timed requests", timed_c, timed_t, lat.shift,
        )  # fmt: skip
    if metric == "time_to_first_success":
        tt = compare_ttfs(c.ttfs_seconds, t.ttfs_seconds, alpha)
        return _Comparison(
            metric, t.variant, tt.median_control, tt.median_treatment, (NAN, NAN), tt.relative_change,
            tt.p_value, NAN, NAN, bool(c.ttfs_seconds) and bool(t.ttfs_seconds),
            "consumers that succeeded", len(c.ttfs_seconds), len(t.ttfs_seconds),
        )  # fmt: skip
    raise ValueError(f"experiment {experiment.name}: unknown metric {metric!r}")


def _srm_sentence(srm: SrmResult, experiment: Experiment, consumers: Mapping[str, int]) -> str:
    counts = " vs ".join(fmt.count(consumers[v]) for v in experiment.variants)
    planned = fmt.split(experiment.split, experiment.variants)
    where = f"{counts} consumers against a planned {planned} ({fmt.p_value(srm.p_value)})"
    if not srm.ok:
        return f"sample ratio mismatch: {where}; fix the assignment before reading results"
    return f"sample ratio as planned: {where}"


def _contamination_sentence(contaminated: int, total: int, share: float) -> str:
    if total == 0:
        return "no consumer has been assigned yet"
    if contaminated == 0:
        return f"contamination: none of {fmt.count(total)} consumers was seen in more than one variant"
    line = (
        f"contamination: {fmt.count(contaminated)} of {fmt.count(total)} consumers ({fmt.percent(share)}) "
        "were seen in more than one variant"
    )
    if share > CONTAMINATION_WARNING:
        line += "; effects are diluted toward no change: check that the flag is keyed on a stable consumer id"
    return line


def _sentence(
    comparison: _Comparison,
    role: str,
    p: float,
    significant: bool,
    worse: bool,
    blocked: bool,
    prefix: str,
    adjusted: str,
    against: bool = False,
    interim: str = "",
) -> str:
    m = comparison.metric
    name = NAMES[m]
    c, t = fmt.distinct(m, comparison.control_value, comparison.treatment_value)
    if not comparison.enough and comparison.why:
        return f"{prefix}{name}: not enough data yet ({comparison.why})"
    if not comparison.enough:
        return (
            f"{prefix}{name}: not enough data yet ({fmt.count(comparison.n_control)} vs "
            f"{fmt.count(comparison.n_treatment)} {comparison.what})"
        )
    if blocked:
        return f"{prefix}{name}: {c} vs {t} (not read: sample ratio mismatch)"
    p_text = fmt.p_value(p) + adjusted
    if interim:
        p_text += f", {'past' if significant else 'not past'} {interim}"
    if against:
        way = "slower" if comparison.shift > 0 else "faster"
        return (
            f"{prefix}no significant change in {name} ({c} vs {t}): the treatment's requests are "
            f"{way} overall ({p_text}), against the way {name} moved"
        )
    if not significant:
        mde = comparison.mde
        detect = ""
        if math.isfinite(mde):
            detect = f"; with this traffic the smallest detectable change is {fmt.relative(mde)}"
        yet = " yet" if interim else ""
        return f"{prefix}no significant change in {name}{yet} ({c} vs {t}, {p_text}{detect})"
    if comparison.treatment_value == comparison.control_value:
        return (
            f"{comparison.treatment} shifts the distribution behind {name} ({p_text}) but not its value ({c})"
        )
    verb = "raises" if comparison.treatment_value > comparison.control_value else "lowers"
    if role == "guardrail":
        outcome = "guardrail failed" if worse else "guardrail held"
    else:
        outcome = "primary metric worse" if worse else "primary metric improved"
    return f"{comparison.treatment} {verb} {name} from {c} to {t} ({p_text}): {outcome}"


def _summary_line(
    experiment: Experiment, treatment: str, results: list[MetricResult], blocked: bool, interim: bool = False
) -> str:
    if blocked:
        return f"{treatment}: no verdict until the sample ratio matches the plan"
    failed = [NAMES[r.metric] for r in results if r.guardrail_failed]
    primary = next(r for r in results if r.role == "primary")
    name = NAMES[primary.metric]
    if not primary.tested:
        head = f"{treatment}: not enough data on the primary metric ({name}) yet"
    elif primary.significant:
        head = f"{treatment}: primary metric ({name}) {'worse' if primary.worse else 'improved'}"
    else:
        head = f"{treatment}: no significant change in the primary metric ({name})"
    if failed:
        return f"{head}; guardrail failed: {', '.join(failed)}"
    guardrails = [r for r in results if r.role == "guardrail"]
    tested = [r for r in guardrails if r.tested]
    if not tested:
        return head
    if len(tested) == len(guardrails):
        return f"{head}; guardrails held so far" if interim else f"{head}; guardrails held"
    return f"{head}; no guardrail failed so far (some lack data)"


def interim_look(fraction: float, planned_days: int | None, threshold: float) -> str:
    """'the interim boundary p < 0.0015 at day 7 of 14' (the look's bar, for sentences and notes)."""
    if planned_days is not None:
        when = f"day {fmt.days(fraction * planned_days)} of {planned_days}"
    else:
        when = f"{fmt.percent(fraction)} of the planned duration"
    return f"the interim boundary {fmt.boundary(threshold)} at {when}"


def analyse(
    experiment: Experiment, data: Mapping[str, VariantData], fraction: float | None = None
) -> Analysis:
    """Every treatment against the control of `experiment`, on its metrics (primary first).

    A variant missing from `data` has no traffic yet; data for a variant the protocol does not
    list is left out and named in `notes`. `fraction`: an interim look at that share of the
    planned duration (0 < t <= 1): a result counts only past the O'Brien-Fleming boundary
    (statistics.monitoring_threshold); None (the read at or after the planned end): against alpha.
    """
    notes = []
    unknown = sorted(set(data) - set(experiment.variants))
    if unknown:
        notes.append(f"left out data for variants not in the protocol: {', '.join(map(repr, unknown))}")
    by_variant = {v: data.get(v) or _empty(v) for v in experiment.variants}
    for v, d in by_variant.items():
        if d.variant != v:
            raise ValueError(f"experiment {experiment.name}: data under {v!r} is for variant {d.variant!r}")
        try:
            _check(d)
        except ValueError as exc:
            raise ValueError(f"experiment {experiment.name}: {exc}") from None
    sampled = [v for v, d in by_variant.items() if any(getattr(d, f) is not None for f in _ESTIMATES)]
    if sampled:
        notes.append(
            "traffic was sampled: requests show the estimated total (from the sampling weights) and, "
            "in brackets, the spans received; the ratios, intervals and tests use the spans, the real "
            "sample sizes"
        )
    alpha = experiment.alpha
    try:
        threshold = monitoring_threshold(alpha, fraction)
    except ValueError as exc:
        raise ValueError(f"experiment {experiment.name}: {exc}") from None
    interim = interim_look(fraction, experiment.planned_days, threshold) if fraction is not None else ""
    consumers = {v: by_variant[v].consumers for v in experiment.variants}
    srm = sample_ratio_mismatch(consumers, experiment.split)
    blocked = not srm.ok
    total = sum(consumers.values())
    contaminated = sum(d.contaminated for d in by_variant.values())
    share = contaminated / total if total else NAN
    try:
        summaries = tuple(_summary(by_variant[v], alpha) for v in experiment.variants)
    except ValueError as exc:
        raise ValueError(f"experiment {experiment.name}: {exc}") from None

    control = by_variant[experiment.control]
    treatments = experiment.treatments
    correction = "holm" if len(treatments) > 1 else "none"
    adjusted_note = " after Holm correction" if correction == "holm" else ""
    prefix = "" if len(treatments) == 1 else "{t}: "
    by_treatment: dict[str, list[MetricResult]] = {t: [] for t in treatments}
    for metric in experiment.metrics:
        role = "primary" if metric == experiment.primary else "guardrail"
        try:
            comparisons = [_compare(metric, control, by_variant[t], experiment) for t in treatments]
        except ValueError as exc:
            raise ValueError(f"experiment {experiment.name}: {exc}") from None
        adjusted = _holm([c.p_value for c in comparisons], alpha, correction)
        for comparison, p in zip(comparisons, adjusted, strict=True):
            tested = comparison.enough and not blocked and math.isfinite(p)
            # Holm-adjusted p under the bar = Holm's step-down at that level.
            significant = tested and p < threshold and not comparison.against
            higher = comparison.treatment_value > comparison.control_value
            lower = comparison.treatment_value < comparison.control_value
            worse = significant and (higher if metric in _HIGHER_IS_WORSE else lower)
            summary_c = summaries[experiment.variants.index(experiment.control)]
            summary_t = summaries[experiment.variants.index(comparison.treatment)]
            by_treatment[comparison.treatment].append(
                MetricResult(
                    metric=metric,
                    role=role,
                    treatment=comparison.treatment,
                    control_value=comparison.control_value,
                    treatment_value=comparison.treatment_value,
                    control_ci=summary_c.value(metric)[1],
                    treatment_ci=summary_t.value(metric)[1],
                    difference_ci=comparison.difference_ci,
                    relative_change=comparison.relative_change,
                    p_value=comparison.p_value,
                    p_adjusted=p,
                    tested=tested,
                    significant=significant,
                    worse=worse,
                    guardrail_failed=worse and role == "guardrail",
                    minimum_detectable_effect=comparison.mde,
                    achieved_power=comparison.power,
                    sentence=_sentence(
                        comparison,
                        role,
                        p,
                        significant,
                        worse,
                        blocked,
                        prefix.format(t=comparison.treatment),
                        adjusted_note,
                        tested and p < threshold and comparison.against,
                        interim,
                    ),
                    threshold=threshold,
                )
            )
    results = tuple(r for t in treatments for r in by_treatment[t])
    lines = [_srm_sentence(srm, experiment, consumers), _contamination_sentence(contaminated, total, share)]
    lines += [r.sentence for r in results]
    lines += [
        _summary_line(experiment, t, by_treatment[t], blocked, fraction is not None) for t in treatments
    ]
    return Analysis(
        experiment=experiment.name,
        service=experiment.service,
        control=experiment.control,
        treatments=treatments,
        alpha=alpha,
        power=experiment.power,
        correction=correction,
        srm=srm,
        blocked=blocked,
        contaminated=contaminated,
        contaminated_share=share,
        variants=summaries,
        results=results,
        verdict=tuple(lines),
        notes=tuple(notes),
        fraction=fraction,
        threshold=threshold,
        planned_days=experiment.planned_days,
    )


def _holm(p_values: list[float], alpha: float, correction: str) -> list[float]:
    """Holm-adjusted p-values over the treatments; untestable (NaN) ones stay out of the family."""
    if correction != "holm":
        return list(p_values)
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = list(p_values)
    if finite:
        _, corrected, _, _ = multipletests([p_values[i] for i in finite], alpha=alpha, method="holm")
        for i, p in zip(finite, corrected, strict=True):
            adjusted[i] = float(p)
    return adjusted
