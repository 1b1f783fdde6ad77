"""experiments/render.py: the analysis as terminal text and as markdown that renders as written."""

from __future__ import annotations

import html.parser

from apiusage.experiments.render import render_markdown, render_text
from apiusage.experiments.verdict import Analysis, analyse
from experiment_scenarios import experiment, fixed
from markdown_it import MarkdownIt

TEXT_LINES = [
    "Experiment checkout-v2 (orders-api)",
    "===================================",
    "control: control; alpha 0.05; power 0.8",
    "",
    "Variant    Consumers  Contaminated  Requests  Error ratio            4xx                  p95 latency",
    "---------  ---------  ------------  --------  ---------------------"
    "  -------------------  ----------------------",
    "control        1,000             0    20,000  0.8% (0.69% to 0.93%)"
    "  1.2% (1.1% to 1.4%)  86 ms (86 ms to 86 ms)",
    "treatment      1,000             0    20,000  0.8% (0.69% to 0.93%)"
    "  2.0% (1.8% to 2.2%)  86 ms (86 ms to 86 ms)",
    "",
    "Treatment  Metric                 Control  Treatment value  Change  "
    "                           p  MDE  Result",
    "---------  ---------------------  -------  ---------------"
    "  ------------------------  ----------  ---  ----------------",
    "treatment  error ratio (primary)     0.8%             0.8%"
    "  +0% (-0.18 to +0.18 pp)            1  34%  not significant",
    "treatment  4xx (guardrail)           1.2%             2.0%"
    "  +67% (+0.55 to +1.05 pp)  < 0.000001  27%  guardrail failed",
    "",
    "Verdict:",
    "  sample ratio as planned: 1,000 vs 1,000 consumers against a planned 50/50 (p = 1)",
    "  contamination: none of 2,000 consumers was seen in more than one variant",
    "  no significant change in error ratio (0.8% vs 0.8%, p = 1; with this traffic"
    " the smallest detectable change is 34%)",
    "  treatment raises 4xx from 1.2% to 2.0% (p < 0.000001): guardrail failed",
    "  treatment: no significant change in the primary metric (error ratio); guardrail failed: 4xx",
]


def _guardrail_failed(**overrides: object) -> Analysis:
    return analyse(
        experiment(**overrides),
        {"control": fixed("control", client_errors=240), "treatment": fixed("treatment", client_errors=400)},
    )


def test_the_terminal_text_for_a_failed_guardrail() -> None:
    assert render_text(_guardrail_failed()).split("\n") == [*TEXT_LINES, ""]


def _tables(markdown: str) -> list[list[list[str]]]:
    """Every table of the rendered markdown as rows of cell texts (header row first)."""

    class Cells(html.parser.HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: list[list[list[str]]] = []
            self.tags: list[str] = []

        def handle_starttag(self, tag: str, attrs: object) -> None:
            self.tags.append(tag)
            if tag == "table":
                self.tables.append([])
            elif tag == "tr":
                self.tables[-1].append([])
            elif tag in ("td", "th"):
                self.tables[-1][-1].append("")

        def handle_data(self, data: str) -> None:
            if self.tags and self.tags[-1] in ("td", "th"):
                self.tables[-1][-1][-1] += data

        def handle_endtag(self, tag: str) -> None:
            self.tags.pop()

    parser = Cells()
    parser.feed(MarkdownIt("commonmark").enable("table").render(markdown))
    return parser.tables


def test_the_markdown_renders_both_tables_cell_for_cell() -> None:
    variants, comparisons = _tables(render_markdown(_guardrail_failed()))
    assert variants == [
        ["Variant", "Consumers", "Contaminated", "Requests", "Error ratio", "4xx", "p95 latency"],
        [
            "control",
            "1,000",
            "0",
            "20,000",
            "0.8% (0.69% to 0.93%)",
            "1.2% (1.1% to 1.4%)",
            "86 ms (86 ms to 86 ms)",
        ],
        [
            "treatment",
            "1,000",
            "0",
            "20,000",
            "0.8% (0.69% to 0.93%)",
            "2.0% (1.8% to 2.2%)",
            "86 ms (86 ms to 86 ms)",
        ],
    ]
    assert comparisons[2] == [
        "treatment",
        "4xx (guardrail)",
        "1.2%",
        "2.0%",
        "+67% (+0.55 to +1.05 pp)",
        "< 0.000001",
        "27%",
        "guardrail failed",
    ]


def test_the_markdown_lists_the_verdict_lines_in_order() -> None:
    analysis = _guardrail_failed()
    markdown = render_markdown(analysis)
    assert markdown.startswith("## Experiment checkout-v2 (orders-api)\n")
    bullets = markdown.split("### Verdict\n\n", 1)[1].splitlines()
    assert bullets == [f"- {line}" for line in analysis.verdict]


def test_names_from_the_protocol_and_the_data_cannot_inject_markdown_or_html() -> None:
    hostile = "orders|api <img src=x onerror=alert(1)> [link](http://x) *b* `c`"
    data = {
        "control": fixed("control"),
        "treatment": fixed("treatment"),
        "x<script>|": fixed("x<script>|"),
    }
    markdown = render_markdown(analyse(experiment(service=hostile), data))
    rendered = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown)
    for tag in ("<img", "<script", "<a ", "<em>", "<code>"):
        assert tag not in rendered, tag
    assert "orders|api &lt;img src=x onerror=alert(1)&gt; [link](http://x) *b* `c`" in rendered
    # The table still has its seven columns: the pipe in a name does not split a cell.
    assert all(len(row) == 7 for row in _tables(markdown)[0])
    assert "- left out data for variants not in the protocol: 'x\\<script>\\|'" in markdown


def test_a_blocked_verdict_shows_why_in_the_table_and_the_text() -> None:
    analysis = analyse(
        experiment(),
        {
            "control": fixed("control", consumers=5_210, client_errors=240),
            "treatment": fixed("treatment", consumers=4_790, client_errors=400),
        },
    )
    comparisons = _tables(render_markdown(analysis))[1]
    assert [row[-1] for row in comparisons[1:]] == ["not read (sample ratio mismatch)"] * 2
    text = render_text(analysis)
    assert (
        "  sample ratio mismatch: 5,210 vs 4,790 consumers against a planned 50/50 (p = 0.000027); "
        "fix the assignment before reading results\n"
    ) in text


def test_holm_and_the_optional_columns_are_shown_when_they_apply() -> None:
    exp = experiment(
        variants=["control", "a", "b"], guardrails=["adoption", "time_to_first_success"], feature="orders"
    )
    data = {
        "control": fixed("control", ttfs=[float(s) for s in range(1, 11)], never_succeeded=4),
        "a": fixed("a", adopters=200, ttfs=[2.0] * 5),
        "b": fixed("b"),
    }
    analysis = analyse(exp, data)
    markdown = render_markdown(analysis)
    assert "control: control; alpha 0.05; power 0.8; p-values Holm-corrected over 2 treatments" in markdown
    variants, comparisons = _tables(markdown)
    assert variants[0][-3:] == ["Adoption", "Median TTFS", "Never succeeded"]
    assert variants[1][-2:] == ["5.50 s (2.00 s to 9.00 s)", "4"]
    assert variants[3][-2:] == ["–", "0"]
    assert comparisons[0][5] == "p (Holm)"
    assert [row[:2] for row in comparisons[1:]] == [
        [t, m]
        for t in ("a", "b")
        for m in ("error ratio (primary)", "adoption (guardrail)", "median time to first success (guardrail)")
    ]
    assert comparisons[-1][-1] == "not enough data"
    text = render_text(analysis)
    header = text.splitlines()[4]
    assert header.split("  ")[0] == "Variant" and header.endswith("Never succeeded")
