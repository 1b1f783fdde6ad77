"""The experiments dashboard: per variant of each experiment (experiments.yaml) its traffic, 5xx
and 4xx ratios and p95, the consumers assigned to it, and the checks the processor's state
refresh computes with the code of `apiusage experiments report` (sample ratio, guardrails,
Holm-adjusted p-values, contamination). The verdict itself is the report's, not a panel's."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard
from grafana_foundation_sdk.models import common

from .alert_links import Alerts
from .kit import (
    CONTRACT,
    REPLICAS,
    Board,
    bargauge_panel,
    base,
    datasource_variable,
    deploy_markers,
    firing_alerts,
    merged_table,
    q,
    query_variable,
    ratio_or_zero,
    service_variable,
    sum_rate,
    thresholds,
    timeseries_panel,
    value_map,
    value_table,
)

_BY = "service, experiment, variant"
_REQ = "api_experiment_requests_total"
_DUR = "api_experiment_request_duration_seconds_bucket"
VARIANT = "{{experiment}} {{variant}}"

EXPERIMENTS = 'label_values(api_experiment_requests_total{service=~"$service"}, experiment)'

RUNNING = "running (1 = yes)"
MISMATCH = "sample ratio mismatch (1 = do not read the metrics)"
# The guardrail check is a 0|1 gauge; the mapping turns it into words a reader cannot misread.
GUARDRAIL = value_map({"0": ("holds", "green"), "1": ("FAILED", "red")})


def experiment_variable() -> dashboard.QueryVariable:
    return query_variable(
        "experiment",
        "Experiment",
        EXPERIMENTS,
        "Experiments of experiments.yaml that had exposed requests (api_experiment_requests_total)",
    )


def experiments(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.EXPERIMENTS
    b = Board(uid, alerts)
    sel = 'service=~"$service", experiment=~"$experiment"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    # First what says whether the numbers below can be read at all: who is in which variant,
    # whether that matches the plan, and whether consumers stay in their variant.
    b.add(
        bargauge_panel(),
        6,
        CONTRACT,
        "How many consumers are in each variant? Consumers by the variant they were first "
        "assigned (from the state store; they stay in it, contaminated ones included). Compare "
        "with the planned split in experiments.yaml: the sample ratio check beside it tests that.",
        "short",
        8,
        7,
        q(f"{REPLICAS} (api_experiment_consumers{{{sel}}})", VARIANT),
    )
    # One table, no value mappings: Grafana maps values panel-wide, and a p-value of exactly 1
    # (a perfect split) or 0 would read as a check's word. The column names carry the codes.
    b.add(
        merged_table(
            {"Value #A": RUNNING, "Value #B": "sample ratio p", "Value #C": MISMATCH}, exclude=("job",)
        ),
        7,
        CONTRACT,
        "Were consumers assigned as planned? Per experiment: whether it is running, the p-value "
        "of the chi-square test of the consumers per variant against the planned split, and the "
        "check (a mismatch below p = 0.001). While it shows a mismatch, the assignment (or a "
        "crash, redirect or segment filter that depends on the variant) chose who is where: no "
        "difference below can be read, and the report calls none significant.",
        "none",
        10,
        7,
        q(f"{REPLICAS} (api_experiment_running{{{sel}}})", "", instant=True, table_format=True),
        q(
            f"{REPLICAS} (api_experiment_sample_ratio_p_value{{{sel}}})",
            "",
            ref="B",
            instant=True,
            table_format=True,
        ),
        q(
            f"{REPLICAS} (api_experiment_sample_ratio_mismatch{{{sel}}})",
            "",
            ref="C",
            instant=True,
            table_format=True,
        ),
    )
    b.add(
        timeseries_panel(),
        10,
        CONTRACT,
        "Do consumers stay in their variant? Consumers first assigned to one variant and later "
        "seen in another, per experiment. They still count in their first variant; more than a "
        "few percent of the consumers beside means the flag is not keyed on a stable consumer id "
        "and the variants are diluted into each other.",
        "short",
        6,
        7,
        q(f"{REPLICAS} (api_experiment_contaminated_consumers{{{sel}}})", "{{experiment}}"),
    )
    b.layout.newline()

    total = sum_rate(_BY, _REQ, sel)
    b.add(
        timeseries_panel(),
        2,
        CONTRACT,
        "How much traffic does each variant get? Requests per second exposed to the experiment "
        "(the request evaluated its flag), per variant; sampling-weighted.",
        "reqps",
        12,
        8,
        q(total, VARIANT),
    )
    b.add(
        timeseries_panel(),
        3,
        CONTRACT,
        "Does a variant fail more? Share of its exposed requests answered 5xx, per variant. A gap "
        "here is not a verdict: the report says whether it is more than chance.",
        "percentunit",
        12,
        8,
        q(ratio_or_zero(sum_rate(_BY, _REQ, f'{sel}, status_class="5xx"'), total), VARIANT),
    )
    b.add(
        timeseries_panel(),
        4,
        CONTRACT,
        "Does a variant confuse its callers? Share of its exposed requests answered 4xx, per "
        "variant (a changed contract or validation shows here first).",
        "percentunit",
        12,
        8,
        q(ratio_or_zero(sum_rate(_BY, _REQ, f'{sel}, status_class="4xx"'), total), VARIANT),
    )
    b.add(
        timeseries_panel(),
        5,
        CONTRACT,
        "Is a variant slower? 95th percentile of the server-side duration of its exposed requests "
        "(exporters.prometheus.histogram_buckets; the report reads finer buckets from the store).",
        "s",
        12,
        8,
        q(
            f"histogram_quantile(0.95, sum by ({_BY}, le) (rate({_DUR}{{{sel}}}[$__rate_interval])))",
            VARIANT,
        ),
    )

    b.add(
        # The label cells stay uncoloured (the base step); the check's cell takes its mapping's colour.
        value_table("guardrail")
        .mappings([GUARDRAIL])
        .thresholds(thresholds((None, "transparent")))
        .cell_options(
            common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.BASIC, apply_to_row=False
            )
        ),
        8,
        CONTRACT,
        "Did a treatment make a guardrail worse? Per treatment and guardrail metric: FAILED when "
        "it is significantly worse than the control (Holm-adjusted; while it runs past the "
        "O'Brien-Fleming interim boundary, which allows for the checks' constant looks), else "
        "holds. Nothing fails while the sample ratio check shows a mismatch. Holds is not "
        "proof of no harm: run apiusage experiments report for the interval and the smallest "
        "change the data could show.",
        "none",
        12,
        8,
        q(f"{REPLICAS} (api_experiment_guardrail_failed{{{sel}}})", "", instant=True, table_format=True),
    )
    b.add(
        value_table("p (Holm-adjusted)"),
        9,
        CONTRACT,
        "How likely is each difference by chance alone? Per treatment and metric (primary and "
        "guardrails), the p-value against the control, Holm-adjusted across the treatments. A "
        "p-value under the experiment's alpha is not a verdict while it runs (reading it every day "
        "until it dips is how false positives are made): before planned_days only the interim "
        "boundary counts, as on the Guardrails panel and in apiusage experiments report.",
        "none",
        12,
        8,
        q(f"{REPLICAS} (api_experiment_p_value{{{sel}}})", "", instant=True, table_format=True),
    )

    out = base(
        "Experiments (experiments.yaml): per variant the traffic, 5xx and 4xx ratios and p95, the "
        "consumers assigned, and the checks of the processor's state refresh (sample ratio, "
        "guardrails, p-values, contamination). Read the sample ratio check first; the verdict "
        "is apiusage experiments report's. The orange marks are deploys (a release during an "
        "experiment changes every variant at once); a flag rollout is not a deploy and has none.",
        "now-7d",
        b,
        [datasource_variable(), service_variable(), experiment_variable()],
    )
    return out.annotation(deploy_markers('service=~"$service"'))
