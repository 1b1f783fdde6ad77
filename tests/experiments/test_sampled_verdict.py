"""experiments/verdict.py and render.py on sampled data and on tiny counts: the tests use the
spans received (VariantData.requests...), the report shows the estimated totals beside them,
and a ratio with too few expected events is "not enough data", never a p-value."""

from __future__ import annotations

import dataclasses
import math

import pytest
from apiusage.experiments.render import render_markdown, render_text
from apiusage.experiments.statistics import (
    MIN_EXPECTED,
    compare_proportions,
    enough_for_normal,
    proportion_interval,
)
from apiusage.experiments.verdict import analyse
from experiment_scenarios import experiment, fixed

NOTE = (
    "traffic was sampled: requests show the estimated total (from the sampling weights) and, in "
    "brackets, the spans received; the ratios, intervals and tests use the spans, the real sample sizes"
)


def _sampled() -> dict:
    """2,000 spans per variant at 10% sampling: the 4xx rise of test_verdict on a tenth of it."""
    return {
        "control": dataclasses.replace(
            fixed("control", requests=2_000, errors=16, client_errors=24),
            estimated_requests=20_000.0, estimated_errors=160.0, estimated_client_errors=240.0,
        ),
        "treatment": dataclasses.replace(
            fixed("treatment", requests=2_000, errors=16, client_errors=40),
            estimated_requests=20_000.0, estimated_errors=160.0, estimated_client_errors=400.0,
        ),
    }  # fmt: skip


def test_sampled_data_is_tested_on_the_spans_not_on_the_estimated_totals() -> None:
    analysis = analyse(experiment(), _sampled())
    result = analysis.result("treatment", "client_error_ratio")
    assert result.p_value == compare_proportions(24, 2_000, 40, 2_000).p_value
    assert round(result.p_value, 4) == 0.0469  # on the weighted counts it would be < 0.000001
    assert compare_proportions(240, 20_000, 400, 20_000).p_value < 1e-6
    assert analysis.verdict[3] == "treatment raises 4xx from 1.2% to 2.0% (p = 0.047): guardrail failed"
    assert analysis.variants[0].requests == 2_000 and analysis.variants[0].estimated_requests == 20_000
    assert analysis.notes == (NOTE,)


def test_the_report_shows_the_estimated_totals_beside_the_sampled_spans() -> None:
    text = render_text(analyse(experiment(), _sampled())).split("\n")
    assert text[4:8] == [
        "Variant    Consumers  Contaminated                Requests  Error ratio           4xx"
        "                   p95 latency",
        "---------  ---------  ------------  ----------------------  --------------------"
        "  --------------------  ----------------------",
        "control        1,000             0  20,000 (2,000 sampled)  0.8% (0.49% to 1.3%)"
        "  1.2% (0.81% to 1.8%)  86 ms (86 ms to 86 ms)",
        "treatment      1,000             0  20,000 (2,000 sampled)  0.8% (0.49% to 1.3%)"
        "  2.0% (1.5% to 2.7%)   86 ms (86 ms to 86 ms)",
    ]
    assert text[-3:] == ["Notes:", f"  {NOTE}", ""]
    markdown = render_markdown(analyse(experiment(), _sampled()))
    assert "| control | 1,000 | 0 | 20,000 (2,000 sampled) | 0.8% (0.49% to 1.3%) |" in markdown
    assert markdown.endswith(f"Notes:\n\n- {NOTE}\n")


def test_unsampled_data_has_no_estimates_and_no_note() -> None:
    analysis = analyse(experiment(), {"control": fixed("control"), "treatment": fixed("treatment")})
    assert analysis.notes == () and analysis.variants[0].estimated_requests is None
    assert "sampled" not in render_text(analysis)


@pytest.mark.parametrize(
    ("errors", "enough"),
    [
        ((4, 5), False),  # 9 errors in 2,000 requests: 4.5 expected per variant
        ((5, 5), True),  # exactly 5 expected per variant
        ((0, 0), False),  # no event at all
        ((995, 995), True),  # 5 expected successes per variant
        ((996, 995), False),  # 4.5 expected successes
    ],
)
def test_the_normal_approximation_needs_5_expected_counts_in_every_cell(errors, enough: bool) -> None:
    assert MIN_EXPECTED == 5
    assert enough_for_normal(errors[0], 1_000, errors[1], 1_000) is enough
    analysis = analyse(
        experiment(guardrails=[]),
        {
            "control": fixed("control", requests=1_000, errors=errors[0]),
            "treatment": fixed("treatment", requests=1_000, errors=errors[1]),
        },
    )
    result = analysis.result("treatment", "error_ratio")
    assert result.tested is enough and math.isnan(result.p_value) is not enough


def test_a_handful_of_errors_is_not_enough_data_and_has_no_p_value() -> None:
    # 1 vs 6 errors in 1,000 requests: Agresti–Caffo said p = 0.095 (from 7 events) before the rule.
    analysis = analyse(
        experiment(),
        {
            "control": fixed("control", requests=1_000, errors=1, client_errors=30),
            "treatment": fixed("treatment", requests=1_000, errors=6, client_errors=40),
        },
    )
    assert analysis.verdict[2:] == (
        "error ratio: not enough data yet (7 errors in 1,000 vs 1,000 requests; the test needs at "
        "least 5 expected errors and 5 expected others in each variant)",
        "no significant change in 4xx (3.0% vs 4.0%, p = 0.23; with this traffic the smallest "
        "detectable change is 83%)",
        "treatment: not enough data on the primary metric (error ratio) yet; guardrails held",
    )
    result = analysis.result("treatment", "error_ratio")
    assert (result.tested, result.significant, math.isnan(result.p_value), math.isnan(result.p_adjusted)) == (
        False,
        False,
        True,
        True,
    )
    assert (result.control_value, result.treatment_value) == (0.001, 0.006)  # the values stay
    row = next(line for line in render_text(analysis).split("\n") if "error ratio (primary)" in line)
    assert row.split()[-5:] == ["–", "786%", "not", "enough", "data"]  # no p-value in the table either


def test_too_few_adopters_is_not_enough_data_named_in_adopters() -> None:
    analysis = analyse(
        experiment(primary="adoption", guardrails=[], feature="checkout"),
        {
            "control": fixed("control", consumers=1_000, adopters=2),
            "treatment": fixed("treatment", consumers=1_000, adopters=3),
        },
    )
    assert analysis.verdict[2] == (
        "adoption: not enough data yet (5 adopters in 1,000 vs 1,000 consumers; the test needs at "
        "least 5 expected adopters and 5 expected others in each variant)"
    )


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_a_bad_estimate_is_refused_naming_the_variant_and_field(bad: float) -> None:
    data = _sampled()
    data["treatment"] = dataclasses.replace(data["treatment"], estimated_errors=bad)
    with pytest.raises(
        ValueError, match=r"experiment checkout-v2: variant 'treatment': estimated_errors must"
    ):
        analyse(experiment(), data)


def test_a_ratio_without_events_has_an_interval_from_exactly_0() -> None:
    # statsmodels' Wilson bound at 0 events is 6.9e-18, which read "0.00000000000000069%".
    assert proportion_interval(0, 38, 0.05)[0] == 0.0
    assert proportion_interval(38, 38, 0.05)[1] == 1.0
    analysis = analyse(experiment(), {"control": fixed("control", requests=38, errors=0, client_errors=3)})
    row = render_text(analysis).split("\n")[6]
    assert row.startswith("control") and "  0% (0% to 9.2%)  7.9% (2.7% to 20.8%)  " in row
