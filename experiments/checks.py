"""The experiment checks of the processor's state refresh: is each experiment running, does its
sample ratio match the plan, has a guardrail failed (the `api_experiment_*` check gauges).

The figures are those of `apiusage experiments report`, from the same code: the store read by
`read_experiment()` over the experiment's days, judged by `analyse()` (verdict.py), so the
alert and the report cannot disagree. The window is the report's: from the experiment's
`start` (without one: every stored day) to now while it runs; an experiment that has ended is
read up to its planned end (`apiusage experiments report --until <start + planned_days>`), so
it keeps its last values, and is read again at most once an hour (late data).

"Running": start <= today < start + planned_days, in UTC days; without `start`, from the first
day the store holds an exposure; without `planned_days`, until it leaves the file.

While it runs, each check is an interim look: `analyse(..., fraction=information_fraction(...))`,
so a guardrail fails only past the O'Brien-Fleming boundary (docs/experiments.md, "Looking
before the end"): the checks look every 5 minutes, and against alpha at every look an A/A
experiment failed a guardrail for an hour in about 19% of runs. `apiusage experiments report`
computes its fraction with the same function.

The leader's refresh calls an `ExperimentChecker` (processor/app.py wires it when the config
names an experiments file and the `experiments` extra is installed); it fills the report's
experiment fields and answers what it counted (success / failure per experiment). It runs the
checks at most every `state.experiment_checks_interval` (5 minutes): about a second per running
experiment of 100,000 consumers is a large part of a 15-second refresh. In between, each
refresh's report carries the last checks.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from apiusage.conventions.experiments import Experiment
from apiusage.processor.config import LimitsConfig
from apiusage.processor.derive.series import sanitize_label_value
from apiusage.processor.state.report import ConsumerReport
from apiusage.processor.state.store import DAY_MS, Store, StoreError

from .readout import read_experiment
from .verdict import Analysis, analyse

__all__ = [
    "ENDED_EVERY",
    "ExperimentCheck",
    "ExperimentChecker",
    "ExperimentChecks",
    "check_experiment",
    "experiment_checks",
    "experiment_window",
    "first_exposure_day",
    "information_fraction",
]

log = logging.getLogger("apiusage.experiments.checks")
_EPOCH = _dt.date(1970, 1, 1)
#: Seconds between two reads of an experiment that has ended (its window no longer grows).
ENDED_EVERY = 3600.0


@dataclass(frozen=True)
class ExperimentCheck:
    """One experiment's check: `analysis` is None before it starts (nothing to read yet)."""

    service: str
    experiment: str
    running: bool
    analysis: Analysis | None


@dataclass
class ExperimentChecks:
    """The checks of every experiment, keyed as the report's fields (processor/state/report.py)."""

    running: dict[tuple, int] = field(default_factory=dict)
    srm_p_value: dict[tuple, float] = field(default_factory=dict)
    srm_mismatch: dict[tuple, int] = field(default_factory=dict)
    guardrail_failed: dict[tuple, int] = field(default_factory=dict)
    p_value: dict[tuple, float] = field(default_factory=dict)
    #: outcome ("success", "failure") -> experiments
    outcomes: dict[str, int] = field(default_factory=lambda: {"success": 0, "failure": 0})
    #: experiment -> why its check failed (the statistics refused the data, the store failed)
    failures: dict[str, str] = field(default_factory=dict)
    #: (metric, label) -> (label values dropped past their limit, series dropped), as report.folded
    dropped: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)

    def fill(self, report: ConsumerReport) -> None:
        """Put the checks into `report` (and what the label limits dropped into its `folded`)."""
        report.experiment_running = self.running
        report.experiment_srm_p_value = self.srm_p_value
        report.experiment_srm_mismatch = self.srm_mismatch
        report.experiment_guardrail_failed = self.guardrail_failed
        report.experiment_p_value = self.p_value
        report.folded.update(self.dropped)


def _day(date: _dt.date) -> int:
    return (date - _EPOCH).days


def first_exposure_day(store: Store, experiment: Experiment) -> int | None:
    """The first UTC day the store holds an exposure of `experiment` (every exposure is tallied
    in experiment_days, anonymous ones included)."""
    rows = store.query(
        "SELECT MIN(day) FROM experiment_days WHERE service = ? AND experiment = ?",
        (experiment.service, experiment.name),
    )
    return int(rows[0][0]) if rows and rows[0][0] is not None else None


def information_fraction(experiment: Experiment, until_ms: int, first_day: int | None = None) -> float | None:
    """The share of the planned duration behind a window ending at `until_ms`: (until - start) /
    planned_days, clamped to (0, 1); None (the read at the planned end, against alpha) at or
    after the planned end, or without planned_days or any start.

    The start is `experiment.start`, else `first_day` (the first day with an exposure, as the
    checks' window). Time-based: under steady traffic the information grows with time."""
    start = _day(experiment.start) if experiment.start is not None else first_day
    if start is None or experiment.planned_days is None:
        return None
    elapsed = until_ms - start * DAY_MS
    planned = experiment.planned_days * DAY_MS
    if elapsed >= planned:
        return None
    # A window ending before the start has no data; the smallest look (1 ms) then lets nothing count.
    return max(elapsed, 1) / planned


def experiment_window(
    experiment: Experiment, now_ms: int, first_day: int | None
) -> tuple[bool, int | None, int | None] | None:
    """(running, since_ms, until_ms) of `experiment` at `now_ms`, or None before it starts.

    `first_day`: the first day with an exposure (used when the experiment has no `start`);
    since_ms None reads every stored day, as the report does without `start`."""
    start = _day(experiment.start) if experiment.start is not None else first_day
    if start is None:
        return None
    today = now_ms // DAY_MS
    if today < start:
        return None
    end = start + experiment.planned_days if experiment.planned_days is not None else None
    running = end is None or today < end
    since = start * DAY_MS if experiment.start is not None else None
    until = now_ms if running or end is None else min(now_ms, end * DAY_MS)
    return running, since, until


def check_experiment(store: Store, experiment: Experiment, now_ms: int) -> ExperimentCheck:
    """One experiment's check at `now_ms`; raises ValueError (data the statistics refuse) and
    StoreError."""
    first = first_exposure_day(store, experiment) if experiment.start is None else None
    return _checked(store, experiment, experiment_window(experiment, now_ms, first), first)


def _checked(
    store: Store,
    experiment: Experiment,
    window: tuple[bool, int | None, int | None] | None,
    first_day: int | None,
) -> ExperimentCheck:
    if window is None:
        return ExperimentCheck(experiment.service, experiment.name, False, None)
    running, since, until = window
    data = read_experiment(store, experiment, since, until)
    # As the report: only the declared variants are counted by the processor and analysed.
    declared = {v: data[v] for v in experiment.variants if v in data}
    # An ended experiment's window stops at its planned end: the fraction is None (against alpha).
    fraction = information_fraction(experiment, until, first_day) if until is not None else None
    analysis = analyse(experiment, declared, fraction)
    return ExperimentCheck(experiment.service, experiment.name, running, analysis)


class _Labels:
    """Label values made printable and bounded, and the `limits` on experiment, service and
    variant: experiments past a limit (in file order) are dropped and counted, not folded (a
    p-value of `__other__` would mean nothing)."""

    def __init__(self, limits: LimitsConfig | None) -> None:
        self.max_length = limits.max_label_length if limits is not None else 128
        self._limit = (
            {label: limits.label_limit(label) for label in ("service", "experiment", "variant")}
            if limits is not None
            else {}
        )
        self._seen: dict[str, set[str]] = {"service": set(), "experiment": set(), "variant": set()}
        self._dropped: dict[tuple[str, str], set[str]] = {}
        self._series: dict[tuple[str, str], int] = {}

    def value(self, text: str) -> str:
        return sanitize_label_value(text, self.max_length)

    def admit(self, label: str, value: str) -> bool:
        seen = self._seen[label]
        if value in seen:
            return True
        if label in self._limit and len(seen) >= self._limit[label]:
            return False
        seen.add(value)
        return True

    def drop(self, metric: str, label: str, value: str, series: int) -> None:
        self._dropped.setdefault((metric, label), set()).add(value)
        self._series[metric, label] = self._series.get((metric, label), 0) + series

    def dropped(self) -> dict[tuple[str, str], tuple[int, int]]:
        return {key: (len(values), self._series[key]) for key, values in self._dropped.items()}


def _put_flag(values: dict[tuple, int], key: tuple, flag: int) -> None:
    # Two names that sanitize alike: the more alarming reading wins (1 over 0, the smaller p).
    values[key] = max(values.get(key, 0), flag)


def _put_p(values: dict[tuple, float], key: tuple, p: float) -> None:
    values[key] = min(values.get(key, p), p)


def _series(experiment: Experiment) -> int:
    """The check series an experiment has at most: running, the two SRM ones, and per treatment
    a guardrail flag per guardrail and a p-value per metric."""
    treatments = len(experiment.treatments)
    guardrails = sum(1 for m in experiment.metrics if m != experiment.primary)
    return 3 + treatments * (guardrails + len(experiment.metrics))


def _collect(checks: Iterable[ExperimentCheck], out: ExperimentChecks, labels: _Labels) -> None:
    """Add `checks` to `out` under sanitized label values."""
    for check in checks:
        key = (labels.value(check.service), labels.value(check.experiment))
        _put_flag(out.running, key, int(check.running))
        a = check.analysis
        if a is None:
            continue
        _put_p(out.srm_p_value, key, a.srm.p_value)
        _put_flag(out.srm_mismatch, key, int(not a.srm.ok))
        for r in a.results:
            variant = labels.value(r.treatment)
            tested = r.tested and math.isfinite(r.p_adjusted)
            if not labels.admit("variant", variant):
                if r.role == "guardrail":
                    labels.drop("api_experiment_guardrail_failed", "variant", variant, 1)
                if tested:
                    labels.drop("api_experiment_p_value", "variant", variant, 1)
                continue
            series = (*key, variant, r.metric)
            if r.role == "guardrail":
                _put_flag(out.guardrail_failed, series, int(r.guardrail_failed))
            if tested:
                _put_p(out.p_value, series, r.p_adjusted)


def experiment_checks(
    store: Store,
    experiments: Iterable[Experiment],
    now_ms: int,
    limits: LimitsConfig | None = None,
) -> ExperimentChecks:
    """Every experiment's check at `now_ms`; one that raises (ValueError from the statistics, a
    StoreError) is counted as a failure and named in `failures`, and the others go on."""
    return ExperimentChecker(experiments, limits, ended_every=0.0).checks(store, now_ms)


class ExperimentChecker:
    """The refresh hook (StateService's `experiment_checks`): called with the refresher's store,
    the refresh's clock and the report being built, it fills the report's experiment fields and
    answers the outcomes it counted. Logs a failing experiment once until it succeeds again."""

    def __init__(
        self,
        experiments: Iterable[Experiment],
        limits: LimitsConfig | None = None,
        ended_every: float = ENDED_EVERY,
        every: float = 0.0,
    ) -> None:
        self.experiments = tuple(experiments)
        self.limits = limits
        self.ended_every = ended_every
        # Seconds between two runs (state.experiment_checks_interval); in between, a refresh's
        # report gets the last checks again.
        self.every = every
        self._last: tuple[float, ExperimentChecks] | None = None
        # experiment -> (monotonic time it was read, its window, its check): the ended ones
        self._ended: dict[str, tuple[float, tuple, ExperimentCheck]] = {}
        self._failing: set[str] = set()

    def checks(self, store: Store, now_ms: int) -> ExperimentChecks:
        out = ExperimentChecks()
        labels = _Labels(self.limits)
        done: list[ExperimentCheck] = []
        for experiment in self.experiments:
            if store.interrupted:  # shutdown: the experiments left are not failures
                raise StoreError(f"read of {store.description} interrupted: shutting down")
            service, name = labels.value(experiment.service), labels.value(experiment.name)
            if not labels.admit("service", service):
                labels.drop("api_experiment_running", "service", service, _series(experiment))
                continue
            if not labels.admit("experiment", name):
                labels.drop("api_experiment_running", "experiment", name, _series(experiment))
                continue
            check = self._check(store, experiment, now_ms, out)
            if check is not None:
                done.append(check)
        _collect(done, out, labels)
        out.dropped = labels.dropped()
        return out

    def _check(
        self, store: Store, experiment: Experiment, now_ms: int, out: ExperimentChecks
    ) -> ExperimentCheck | None:
        try:
            first = first_exposure_day(store, experiment) if experiment.start is None else None
            window = experiment_window(experiment, now_ms, first)
            cached = self._ended.get(experiment.name)
            if (
                window is not None
                and not window[0]
                and cached is not None
                and cached[1] == window
                and time.monotonic() - cached[0] < self.ended_every
            ):
                check = cached[2]
            else:
                check = _checked(store, experiment, window, first)
        except Exception as exc:  # noqa: BLE001 - one experiment's trouble must not stop the others'
            if isinstance(exc, StoreError) and store.interrupted:
                raise  # shutdown, not this experiment's trouble
            out.outcomes["failure"] += 1
            why = str(exc) or type(exc).__name__
            if not why.startswith(f"experiment {experiment.name}:"):  # analyse() names it, a store error not
                why = f"experiment {experiment.name}: {why}"
            out.failures[experiment.name] = why
            if experiment.name not in self._failing:
                self._failing.add(experiment.name)
                log.error("%s; its checks (api_experiment_*) are not exported", why)
            self._ended.pop(experiment.name, None)
            return None
        out.outcomes["success"] += 1
        if experiment.name in self._failing:
            self._failing.discard(experiment.name)
            log.info("experiment %s: its checks are exported again", experiment.name)
        if window is not None and not window[0]:
            if cached is None or cached[2] is not check:
                self._ended[experiment.name] = (time.monotonic(), window, check)
        else:
            self._ended.pop(experiment.name, None)
        return check

    def __call__(self, store: Store, now_ms: int, report: ConsumerReport) -> Mapping[str, int]:
        """Fill `report` with the checks, run again when `every` has passed since the last run;
        the outcomes counted (none when the last run's checks are reused)."""
        last = self._last
        if last is not None and time.monotonic() - last[0] < self.every:
            last[1].fill(report)
            return {}
        started = time.monotonic()
        checks = self.checks(store, now_ms)
        self._last = (started, checks)
        checks.fill(report)
        return checks.outcomes
