"""The report's Experiments section: per experiment in the period, its variants and the processor's checks.

From Prometheus only: the per-variant families (estimated, i.e. sampling-weighted, requests; 5xx
and 4xx ratios; p95 from the histogram), the state gauges (consumers by the variant first
assigned, contaminated consumers) and the checks the processor's state refresh computes with
`apiusage experiments report`'s verdict code (running, sample ratio, guardrails, Holm-adjusted
p-values). Confidence intervals and power need the per-request data of the state store: the
section points to `apiusage experiments report` for them.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from apiusage.experiments.formatting import p_value

from .charts import line_chart
from .page import Section, count, milliseconds
from .release_notes import MAX_ROWS, OTHER, _percent, _visible

if TYPE_CHECKING:
    from .build import _Report

__all__ = ["MAX_EXPERIMENTS", "experiments_section", "status_line"]

MAX_EXPERIMENTS = 10  # experiments with a block of their own, by estimated requests
MAX_P_VALUES = 10  # per experiment, in its p-value line

Key = tuple[str, str]  # service, experiment


@dataclass
class _Variant:
    requests: float = 0.0
    errors: float = 0.0
    client_errors: float = 0.0
    p95: float | None = None
    consumers: float | None = None


@dataclass
class _Checks:
    running: float | None = None
    srm_p: float | None = None
    srm_mismatch: float | None = None
    guardrail_failed: dict[tuple[str, str], float] = field(default_factory=dict)  # (variant, metric)
    p_values: dict[tuple[str, str], float] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return (
            self.running is None
            and self.srm_p is None
            and self.srm_mismatch is None
            and not self.guardrail_failed
            and not self.p_values
        )


def _ratio(part: float, whole: float) -> str:
    return _percent(part / whole) if whole > 0 else "-"


def _p(value: float | None) -> str:
    return "" if value is None else f" ({p_value(value)})"


def status_line(checks: _Checks) -> str:
    """The checks in words: 'running; sample ratio OK (p = 0.41); guardrail client_error_ratio
    failed for treatment (p = 0.003).' ('' when there are none)."""
    parts = []
    if checks.running is not None:
        parts.append("running" if checks.running >= 1 else "not running (outside its planned dates)")
    if checks.srm_mismatch is not None and checks.srm_mismatch >= 1:
        parts.append(f"sample ratio mismatch{_p(checks.srm_p)}: the verdict is blocked")
    elif checks.srm_mismatch is not None or checks.srm_p is not None:
        parts.append(f"sample ratio OK{_p(checks.srm_p)}")
    failed = sorted(k for k, v in checks.guardrail_failed.items() if v >= 1)
    for variant, metric in failed[:MAX_P_VALUES]:
        p = _p(checks.p_values.get((variant, metric)))
        parts.append(f"guardrail {_visible(metric)} failed for {_visible(variant)}{p}")
    if len(failed) > MAX_P_VALUES:
        parts.append(f"and {len(failed) - MAX_P_VALUES} more guardrails failed")
    if checks.guardrail_failed and not failed:
        parts.append("guardrails OK")
    return "; ".join(parts) + "." if parts else ""


def experiments_section(report: _Report) -> Section:
    s = Section(
        "Experiments",
        "Which experiments ran in the period, how did each variant do, and do the processor's checks "
        "(sample ratio, guardrails) pass?",
    )
    s.chart(
        "Estimated requests per second by experiment and variant",
        line_chart(
            report.series(
                "sum by (service, experiment, variant) "
                f"(rate(api_experiment_requests_total{report.f()}[{report.rate}]))",
                "experiment",
                "variant",
            )
        ),
    )

    def query(expr: str) -> list[tuple[dict, float]]:
        return report.client.query(expr, report.now)

    def key(m: dict) -> Key:
        return m.get("service", ""), m.get("experiment", "")

    w, f = report.window, report.f()
    variants: dict[Key, dict[str, _Variant]] = {}
    for m, v in query(
        "sum by (service, experiment, variant, status_class) "
        f"(increase(api_experiment_requests_total{f}[{w}]))"
    ):
        figures = variants.setdefault(key(m), {}).setdefault(m.get("variant", ""), _Variant())
        figures.requests += v
        if m.get("status_class") == "5xx":
            figures.errors += v
        elif m.get("status_class") == "4xx":
            figures.client_errors += v
    for m, v in query(
        "histogram_quantile(0.95, sum by (service, experiment, variant, le) "
        f"(increase(api_experiment_request_duration_seconds_bucket{f}[{w}])))"
    ):
        if m.get("variant", "") in variants.get(key(m), {}) and math.isfinite(v):
            variants[key(m)][m["variant"]].p95 = v
    # State gauges (the leader's refresh; `max` across replicas): the last value in the period.
    consumers = query(
        f"max by (service, experiment, variant) (last_over_time(api_experiment_consumers{f}[{w}]))"
    )
    contaminated = {
        key(m): v
        for m, v in query(
            f"max by (service, experiment) (last_over_time(api_experiment_contaminated_consumers{f}[{w}]))"
        )
    }
    checks: dict[Key, _Checks] = {}
    for family, attr in (
        ("api_experiment_running", "running"),
        ("api_experiment_sample_ratio_p_value", "srm_p"),
        ("api_experiment_sample_ratio_mismatch", "srm_mismatch"),
    ):
        for m, v in query(f"max by (service, experiment) (last_over_time({family}{f}[{w}]))"):
            setattr(checks.setdefault(key(m), _Checks()), attr, v)
    for family, attr in (
        ("api_experiment_guardrail_failed", "guardrail_failed"),
        ("api_experiment_p_value", "p_values"),
    ):
        for m, v in query(
            f"max by (service, experiment, variant, metric) (last_over_time({family}{f}[{w}]))"
        ):
            by = getattr(checks.setdefault(key(m), _Checks()), attr)
            by[(m.get("variant", ""), m.get("metric", ""))] = v

    # In the period: requests in it, or running by the processor's last check.
    ran = {k for k, by in variants.items() if sum(x.requests for x in by.values()) > 0}
    ran |= {k for k, c in checks.items() if c.running is not None and c.running >= 1}
    for m, v in consumers:
        if key(m) in ran:
            variants.setdefault(key(m), {}).setdefault(m.get("variant", ""), _Variant()).consumers = v
    ordered = sorted(ran, key=lambda k: (-sum(x.requests for x in variants.get(k, {}).values()), k))
    if not ordered:
        s.note(
            "No experiment had requests in the period (experiments are declared in the processor's "
            "experiments file; requests count when they carry the experiment's flag evaluation)."
        )
        return s
    s.note(
        "Requests are estimated: the sampling-weighted count of the spans the processor received. "
        "Consumers are counted in the variant they were first assigned."
    )
    for k in ordered[:MAX_EXPERIMENTS]:
        _experiment(s, k, variants.get(k, {}), contaminated.get(k), checks.get(k, _Checks()))
    if len(ordered) > MAX_EXPERIMENTS:
        s.note(
            f"And {len(ordered) - MAX_EXPERIMENTS} more experiments in the period: apiusage experiments "
            "report lists every one."
        )
    return s


def _experiment(
    s: Section, key: Key, by_variant: dict[str, _Variant], contaminated: float | None, checks: _Checks
) -> None:
    service, experiment = key
    s.heading(f"{_visible(experiment)} ({_visible(service)})")
    names = sorted(by_variant, key=lambda v: (v == OTHER, v))
    rows = [
        [
            _visible(name),
            count(x.requests),
            _ratio(x.errors, x.requests),
            _ratio(x.client_errors, x.requests),
            milliseconds(x.p95),
            "-" if x.consumers is None else count(x.consumers),
        ]
        for name in names[:MAX_ROWS]
        for x in (by_variant[name],)
    ]
    s.table(
        ["Variant", "Estimated requests", "5xx ratio", "4xx ratio", "p95 latency", "Consumers (assigned)"],
        rows,
        "No requests in the period.",
    )
    if len(names) > MAX_ROWS:
        s.note(f"And {len(names) - MAX_ROWS} more variants.")
    if contaminated is not None:
        s.note(
            f"{count(contaminated)} consumers were later seen in another variant than the one first "
            "assigned (contaminated)."
            if round(contaminated)
            else "No consumer was seen in two variants."
        )
    if checks.empty:
        s.note(
            "The processor exports no checks for this experiment: the sample ratio and guardrail checks "
            "need the statistics on the processor (pip install 'apiusage[processor,experiments]') and the "
            "experiment in its experiments file."
        )
    else:
        s.note(f"Checks: {status_line(checks)}")
        ordered = sorted(checks.p_values.items(), key=lambda x: (x[1], x[0]))
        if ordered:
            shown = ", ".join(
                f"{_visible(variant)} {_visible(metric)} {p_value(p)}"
                for (variant, metric), p in ordered[:MAX_P_VALUES]
            )
            more = f" and {len(ordered) - MAX_P_VALUES} more" if len(ordered) > MAX_P_VALUES else ""
            s.note(f"Holm-adjusted p-values, smallest first: {shown}{more}.")
    if experiment != OTHER:
        command = f"apiusage experiments report --experiment {shlex.quote(experiment)}"
        s.note(f"Confidence intervals, power and the verdict per metric: {_visible(command)}")
