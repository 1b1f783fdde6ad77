"""An Analysis as markdown (release notes, a review document) or as plain text for the terminal:
the per-variant table, the comparisons, then the verdict lines."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from . import formatting as fmt
from .verdict import NAMES, Analysis, MetricResult, VariantSummary, interim_look

__all__ = ["render_markdown", "render_text"]

# "<" only where it could open an HTML tag or an autolink ("p < 0.001" stays as it reads).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~]|<(?=[A-Za-z/!?]))")
#: Per-variant columns always shown; adoption and TTFS only when the protocol measures them.
_OPTIONAL = ("adoption", "time_to_first_success")


def _escape(text: str) -> str:
    """Text from the protocol or the data, made inert in markdown (no links, tables or HTML)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def _with_ci(metric: str, value: float, ci: tuple[float, float]) -> str:
    if not math.isfinite(value):
        return fmt.DASH
    bounds = fmt.interval(metric, ci)
    return (
        fmt.metric_value(metric, value)
        if bounds == fmt.DASH
        else f"{fmt.metric_value(metric, value)} ({bounds})"
    )


def _measured(analysis: Analysis) -> set[str]:
    return {r.metric for r in analysis.results}


def _variant_table(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    measured = _measured(analysis)
    header = ["Variant", "Consumers", "Contaminated", "Requests", "Error ratio", "4xx", "p95 latency"]
    if "adoption" in measured:
        header.append("Adoption")
    if "time_to_first_success" in measured:
        header += ["Median TTFS", "Never succeeded"]
    rows = []
    for v in analysis.variants:
        marked = v.variant == analysis.control and v.variant != "control"
        name = v.variant + (" (control)" if marked else "")
        row = [
            name,
            fmt.count(v.consumers),
            fmt.count(v.contaminated),
            _requests(v),
            _with_ci("error_ratio", v.error_ratio, v.error_ratio_ci),
            _with_ci("client_error_ratio", v.client_error_ratio, v.client_error_ratio_ci),
            _with_ci("latency_p95", v.latency_p95, v.latency_p95_ci),
        ]
        if "adoption" in measured:
            row.append(_with_ci("adoption", v.adoption, v.adoption_ci))
        if "time_to_first_success" in measured:
            row += [_with_ci("time_to_first_success", v.ttfs_median, v.ttfs_median_ci), _never(v)]
        rows.append(row)
    return header, rows


def _requests(v: VariantSummary) -> str:
    """The spans received; with sampling, the estimated total first and the spans in brackets."""
    if v.estimated_requests is None:
        return fmt.count(v.requests)
    return f"{fmt.count(v.estimated_requests)} ({fmt.count(v.requests)} sampled)"


def _never(v: VariantSummary) -> str:
    return fmt.count(v.never_succeeded)


def _change(r: MetricResult) -> str:
    if not math.isfinite(r.relative_change):
        return fmt.DASH
    sign = "+" if r.relative_change >= 0 else "-"
    text = f"{sign}{fmt.relative(r.relative_change)}"
    low, high = r.difference_ci
    if math.isfinite(low) and math.isfinite(high):
        # The interval of the absolute difference, in percentage points.
        text += f" ({low * 100:+.2f} to {high * 100:+.2f} pp)"
    return text


def _outcome(r: MetricResult, analysis: Analysis) -> str:
    if analysis.blocked and math.isfinite(r.p_value):
        return "not read (sample ratio mismatch)"
    if not r.tested:
        return "not enough data"
    if not r.significant:
        return "not significant yet" if analysis.fraction is not None else "not significant"
    if r.role == "guardrail":
        return "guardrail failed" if r.guardrail_failed else "significant, better"
    return "significant, worse" if r.worse else "significant, better"


def _comparison_table(analysis: Analysis) -> tuple[list[str], list[list[str]]]:
    header = ["Treatment", "Metric", "Control", "Treatment value", "Change", "p", "MDE", "Result"]
    if analysis.correction == "holm":
        header[5] = "p (Holm)"
    rows = []
    for r in analysis.results:
        p = fmt.p_value(r.p_adjusted).removeprefix("p = ").removeprefix("p ")
        control, treatment = fmt.distinct(r.metric, r.control_value, r.treatment_value)
        rows.append(
            [
                r.treatment,
                f"{NAMES[r.metric]} ({r.role})",
                control,
                treatment,
                _change(r),
                fmt.DASH if p == "n/a" else p,
                fmt.relative(r.minimum_detectable_effect),
                _outcome(r, analysis),
            ]
        )
    return header, rows


def _header_lines(analysis: Analysis) -> list[str]:
    settings = f"control: {analysis.control}; alpha {analysis.alpha:g}; power {analysis.power:g}"
    if analysis.correction == "holm":
        settings += f"; p-values Holm-corrected over {len(analysis.treatments)} treatments"
    return [settings]


#: Columns aligned right (the counts of the variant table, the values of the comparisons).
_RIGHT = {
    "Consumers",
    "Contaminated",
    "Requests",
    "Never succeeded",
    "Control",
    "Treatment value",
    "p",
    "p (Holm)",
}


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(_escape(c) for c in cells) + " |"

    align = ["---:" if h in _RIGHT else "---" for h in header]
    return [line(header), "|" + "|".join(align) + "|", *(line(r) for r in rows)]


def _notes(analysis: Analysis) -> list[str]:
    """The analysis' notes, and on an interim look why its bar is higher than alpha."""
    if analysis.fraction is None:
        return list(analysis.notes)
    why = (
        f"interim look: before the planned end a result counts only past "
        f"{interim_look(analysis.fraction, analysis.planned_days, analysis.threshold)} "
        f"(O'Brien-Fleming), not p < {analysis.alpha:g}: the data is read again and again as it "
        f"grows, and this bar keeps the chance of a false alarm over the whole experiment at "
        f"alpha {analysis.alpha:g}; the read after the planned end is against alpha"
    )
    return [*analysis.notes, why]


def render_markdown(analysis: Analysis) -> str:
    """The analysis as a markdown section (heading level 2)."""
    out = [f"## Experiment {_escape(analysis.experiment)} ({_escape(analysis.service)})", ""]
    out += [_escape(line) for line in _header_lines(analysis)] + [""]
    out += _markdown_table(*_variant_table(analysis)) + [""]
    if analysis.results:
        out += ["### Comparisons", ""] + _markdown_table(*_comparison_table(analysis)) + [""]
    out += ["### Verdict", ""]
    out += [f"- {_escape(line)}" for line in analysis.verdict]
    notes = _notes(analysis)
    if notes:
        out += ["", "Notes:", ""] + [f"- {_escape(n)}" for n in notes]
    return "\n".join(out) + "\n"


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if h in _RIGHT else c.ljust(w) for h, c, w in zip(header, cells, widths, strict=True)
        ]
        return "  ".join(parts).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def render_text(analysis: Analysis) -> str:
    """The analysis for a terminal: aligned columns, then the verdict lines."""
    title = f"Experiment {analysis.experiment} ({analysis.service})"
    out = [title, "=" * len(title), *_header_lines(analysis), ""]
    out += _text_table(*_variant_table(analysis)) + [""]
    if analysis.results:
        out += _text_table(*_comparison_table(analysis)) + [""]
    out += ["Verdict:"] + [f"  {line}" for line in analysis.verdict]
    notes = _notes(analysis)
    if notes:
        out += ["", "Notes:"] + [f"  {n}" for n in notes]
    return "\n".join(out) + "\n"
