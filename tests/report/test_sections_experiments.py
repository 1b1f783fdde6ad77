"""The report's Experiments section against a real Prometheus holding three hours of known
experiment series (backfilled like release_history.py's), and in headless Chromium.

The per-variant families and state gauges are the processor's (api_experiment_requests_total,
_request_duration_seconds, _consumers, _contaminated_consumers, two replicas); the five check
gauges (api_experiment_running, _sample_ratio_p_value, _sample_ratio_mismatch,
_guardrail_failed, _p_value) are written here with the contract's names and labels: a
stand-in until the processor's refresh that exports them is merged.
"""

from __future__ import annotations

import html
import time

import pytest
from apiusage.report.build import PrometheusClient, _Report, build_report, render_html
from apiusage.report.sections_experiments import MAX_EXPERIMENTS, _Checks, experiments_section, status_line
from release_history import (
    END,
    FAST,
    HOUR,
    SLOW,
    Counter,
    Gauge,
    backfilled_prometheus,
    counter,
    histogram,
)
from report_support import check_renders, check_structure, has_data, parse_report

pytestmark = pytest.mark.slow

START = END - 3 * HOUR
# The control character comes first, so that it is inside the chart legend's 26 characters too.
HOSTILE = "\x1b[31m<script>alert(1)</script>"
CHECKOUT = {"service": "orders-api", "experiment": "checkout-v2"}
PRICING = {"service": "orders-api", "experiment": "pricing-page"}
SEARCH = {"service": "search-api", "experiment": "ranking"}


def _variant(labels: dict, variant: str, by_class: dict[str, float], mix, since: float = START) -> list:
    """A variant's request counters (per status class, per second) and its latency histogram."""
    v = {**labels, "variant": variant}
    out: list = [
        counter("api_experiment_requests_total", {**v, "status_class": c}, (since, END, rate))
        for c, rate in by_class.items()
    ]
    out += histogram("api_experiment_request_duration_seconds", v, (since, END, sum(by_class.values()), mix))
    return out


def _state(labels: dict, variant: str, consumers: float) -> list[Gauge]:
    # Two replicas export the state gauges; the leader's is the larger (the report takes max).
    return [
        Gauge("api_experiment_consumers", {**labels, "variant": variant, "instance": i}, n, START)
        for i, n in (("a:9464", consumers), ("b:9464", consumers - 1))
    ]


def series() -> list[Counter | Gauge]:
    out: list[Counter | Gauge] = []
    # checkout-v2: control 1/s, 1 % 5xx, 4 % 4xx; treatment 1/s, 1 % 5xx, 7 % 4xx and slower.
    out += _variant(CHECKOUT, "control", {"2xx": 0.95, "4xx": 0.04, "5xx": 0.01}, FAST)
    out += _variant(CHECKOUT, "treatment", {"2xx": 0.92, "4xx": 0.07, "5xx": 0.01}, SLOW)
    out += _state(CHECKOUT, "control", 120) + _state(CHECKOUT, "treatment", 118)
    out.append(Gauge("api_experiment_contaminated_consumers", CHECKOUT, 3, START))
    out += [
        Gauge("api_experiment_running", CHECKOUT, 1, START),
        Gauge("api_experiment_sample_ratio_p_value", CHECKOUT, 0.41, START),
        Gauge("api_experiment_sample_ratio_mismatch", CHECKOUT, 0, START),
    ]
    for metric, failed, p in (
        ("client_error_ratio", 1, 0.003),
        ("error_ratio", 0, 0.87),
        ("latency_p95", 0, 0.2),
    ):
        labels = {**CHECKOUT, "variant": "treatment", "metric": metric}
        if metric != "latency_p95":  # the primary metric: a p-value, no guardrail
            out.append(Gauge("api_experiment_guardrail_failed", labels, failed, START))
        out.append(Gauge("api_experiment_p_value", labels, p, START))
    # pricing-page: 0.3/s against 0.1/s for a 50/50 split: the sample ratio check fails.
    out += _variant(PRICING, "control", {"2xx": 0.3}, FAST)
    out += _variant(PRICING, "treatment", {"2xx": 0.1}, FAST)
    out += [
        Gauge("api_experiment_running", PRICING, 1, START),
        Gauge("api_experiment_sample_ratio_p_value", PRICING, 0.00001, START),
        Gauge("api_experiment_sample_ratio_mismatch", PRICING, 1, START),
        Gauge(
            "api_experiment_guardrail_failed",
            {**PRICING, "variant": "treatment", "metric": "error_ratio"},
            0,
            START,
        ),
    ]
    # ranking: no checks (the processor has no statistics); a variant named like markup.
    out += _variant(SEARCH, "a", {"2xx": 0.5}, FAST)
    out += _variant(SEARCH, HOSTILE, {"2xx": 0.25, "5xx": 0.25}, FAST)
    # old-banner stopped before the period: its counters stay, they no longer grow.
    old = {"service": "orders-api", "experiment": "old-banner"}
    out.append(
        counter(
            "api_experiment_requests_total",
            {**old, "variant": "a", "status_class": "2xx"},
            (START, START + HOUR, 1.0),
        )
    )
    out += _state(old, "a", 50)
    out.append(Gauge("api_experiment_running", old, 0, START))
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[str, object]:
    tmp = tmp_path_factory.mktemp("reportsec-experiments")
    with backfilled_prometheus(tmp, series()) as url:
        sections = build_report(PrometheusClient(url), HOUR, END)
        page = render_html(sections, url, HOUR, END)
    path = tmp / "experiments-report.html"
    path.write_text(page, encoding="utf-8")
    return page, path


def _block(page: str, heading: str) -> str:
    section = page.split('<section id="experiments">')[1].split("</section>")[0]
    start = section.index(f"<h3>{heading}</h3>")
    end = section.find("<h3>", start + 1)
    return section[start : end if end > 0 else len(section)]


def _rows(block: str) -> list[list[str]]:
    return parse_report(f'<section id="x">{block}</section>').tables["x"]


def _notes(block: str) -> list[str]:
    return [html.unescape(n.split("</p>")[0]) for n in block.split('<p class="note">')[1:]]


def test_per_variant_figures_and_the_checks_in_words(report):
    page, _ = report
    block = _block(page, "checkout-v2 (orders-api)")
    # 3,600 requests an hour each; p95 as in release_history.py: 175 ms (FAST), 458 ms (SLOW).
    assert _rows(block) == [
        ["Variant", "Estimated requests", "5xx ratio", "4xx ratio", "p95 latency", "Consumers (assigned)"],
        ["control", "3,600", "1.00%", "4.00%", "175 ms", "120"],
        ["treatment", "3,600", "1.00%", "7.00%", "458 ms", "118"],
    ]
    assert _notes(block) == [
        "3 consumers were later seen in another variant than the one first assigned (contaminated).",
        "Checks: running; sample ratio OK (p = 0.41); guardrail client_error_ratio failed for treatment "
        "(p = 0.003).",
        "Holm-adjusted p-values, smallest first: treatment client_error_ratio p = 0.003, treatment "
        "latency_p95 p = 0.2, treatment error_ratio p = 0.87.",
        "Confidence intervals, power and the verdict per metric: apiusage experiments report "
        "--experiment checkout-v2",
    ]


def test_a_sample_ratio_mismatch_blocks_the_verdict(report):
    page, _ = report
    block = _block(page, "pricing-page (orders-api)")
    assert _rows(block)[1:] == [
        ["control", "1,080", "0.00%", "0.00%", "175 ms", "-"],
        ["treatment", "360", "0.00%", "0.00%", "175 ms", "-"],
    ]
    assert _notes(block)[0] == (
        "Checks: running; sample ratio mismatch (p = 0.00001): the verdict is blocked; guardrails OK."
    )


def test_without_the_checks_the_section_says_so_and_markup_stays_text(report):
    page, _ = report
    block = _block(page, "ranking (search-api)")
    assert _rows(block)[1:] == [
        ["\\x1b[31m<script>alert(1)</script>", "1,800", "50.00%", "0.00%", "175 ms", "-"],
        ["a", "1,800", "0.00%", "0.00%", "175 ms", "-"],
    ]
    assert _notes(block)[0] == (
        "The processor exports no checks for this experiment: the sample ratio and guardrail checks need "
        "the statistics on the processor (pip install 'apiusage[processor,experiments]') and the "
        "experiment in its experiments file."
    )
    assert "<script>" not in page and "\x1b" not in page


def test_only_the_experiments_of_the_period_by_traffic(report):
    page, _ = report
    section = page.split('<section id="experiments">')[1].split("</section>")[0]
    headings = [html.unescape(h.split("</h3>")[0]) for h in section.split("<h3>")[1:]]
    # old-banner had its requests two hours before the period and is not running.
    assert headings == ["checkout-v2 (orders-api)", "ranking (search-api)", "pricing-page (orders-api)"]
    charts = check_structure(page).sections["experiments"]
    assert len(charts) == 1 and has_data(charts[0]) and "checkout-v2 treatment" in charts[0]
    # The legend shows the variant's control character, which XML (so SVG) cannot hold.
    assert "ranking \\x1b[31m&lt;script&gt;" in charts[0]


@pytest.mark.live
def test_the_report_with_experiments_renders_in_chromium(report, tmp_path):
    _, path = report
    check_renders(path, tmp_path)


@pytest.mark.parametrize(
    ("checks", "line"),
    [
        (
            _Checks(running=0, srm_p=0.5, srm_mismatch=0),
            "not running (outside its planned dates); sample ratio OK (p = 0.5).",
        ),
        (_Checks(srm_p=0.2), "sample ratio OK (p = 0.2)."),
        (
            _Checks(
                guardrail_failed={("b", "latency_p95"): 1, ("a", "error_ratio"): 1},
                p_values={("a", "error_ratio"): 0.01},
            ),
            "guardrail error_ratio failed for a (p = 0.01); guardrail latency_p95 failed for b.",
        ),
        (_Checks(), ""),
    ],
)
def test_status_line(checks, line):
    assert status_line(checks) == line


class _Crowd(PrometheusClient):
    """100,000 experiments of 20 variants each... in the answers, with markup in every name."""

    N = 100_000

    def __init__(self) -> None:
        super().__init__("http://prometheus.invalid")

    def targets(self) -> list[dict]:
        return []

    def query_range(self, expr, start, end, step):
        return [({"experiment": f"e{i}", "variant": "a"}, [(start, 1.0), (end, 2.0)]) for i in range(self.N)]

    def query(self, expr: str, at: float) -> list[tuple[dict, float]]:
        rows = [{"service": "s", "experiment": f"<e{i}>\n"} for i in range(self.N)]
        if "api_experiment_requests_total" in expr:
            return [
                ({**m, "variant": f"v{j}", "status_class": "2xx"}, float(i))
                for i, m in enumerate(rows)
                for j in (1, 2)
            ]
        if "by (service, experiment, variant, metric)" in expr:
            return [({**m, "variant": "v2", "metric": f"m{j}"}, 1.0) for m in rows for j in range(3)]
        if "by (service, experiment, variant)" in expr:
            return [({**m, "variant": f"v{j}"}, 0.1) for m in rows[-1000:] for j in range(100)]
        return [(m, 0.5) for m in rows]


def test_100000_experiments_make_a_bounded_section():
    started = time.monotonic()
    section = experiments_section(_Report(_Crowd(), HOUR, END, None))
    assert time.monotonic() - started < 60
    text = "".join(section.blocks)
    assert text.count("<h3>") == MAX_EXPERIMENTS
    assert len(text) < 200_000, len(text)
    # e0 had no requests: 99,999 experiments ran.
    assert f"And {99_999 - MAX_EXPERIMENTS} more experiments in the period" in text
    # The ten shown have variants v0 to v99: 20 rows each.
    assert text.count("And 80 more variants.") == MAX_EXPERIMENTS
    assert "<e99999>" not in text and "&lt;e99999&gt;\\x0a" in text  # the most requests first
    assert "\n" not in text.split("</figure>", 1)[1]
