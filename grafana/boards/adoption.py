"""The adoption dashboard: who uses the API, onboarding, feature and endpoint adoption."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import dashboard, heatmap, table
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.dashboard import (
    DataTransformerConfig,
)

from .alert_links import Alerts
from .kit import (
    CONTRACT,
    REPLICAS,
    Board,
    bargauge_panel,
    base,
    custom_variable,
    datasource_variable,
    firing_alerts,
    q,
    query_variable,
    service_variable,
    thresholds,
    timeseries_panel,
)


def adoption(alerts: Alerts) -> dashboard.Dashboard:
    uid = contract.ADOPTION
    b = Board(uid, alerts)
    sel = 'service=~"$service", plan_tier=~"$plan_tier"'
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    b.add(
        timeseries_panel(stack=True),
        2,
        CONTRACT,
        "How many distinct consumers use the API? Consumers with at least one request in the "
        "selected window ($window), per plan tier.",
        "short",
        12,
        8,
        q(
            f'sum by (plan_tier) ({REPLICAS} (api_active_consumers{{{sel}, window="$window"}}))',
            "{{plan_tier}}",
        ),
    )
    b.add(
        timeseries_panel(),
        11,
        "Active consumers by window",
        "Is usage broad or only recent? Distinct active consumers over the last day, 7 days and 30 days.",
        "short",
        12,
        8,
        q(f"sum by (window) ({REPLICAS} (api_active_consumers{{{sel}}}))", "{{window}}"),
    )
    b.add(
        timeseries_panel(bars=True, stack=True),
        3,
        CONTRACT,
        "Who is new? Consumers seen for the first time, per plan tier at their first request.",
        "short",
        8,
        8,
        q(
            f"sum by (plan_tier) ({REPLICAS} (increase(api_new_consumers_total{{{sel}}}[$__rate_interval])))",
            "{{plan_tier}}",
        ),
    )
    b.add(
        timeseries_panel(min_value=0),
        4,
        CONTRACT,
        "How long do new consumers take to get a first 2xx answer? Median and 90th percentile "
        "of the time from a consumer's first request to its first successful one, over all "
        "consumers that succeeded, per plan tier.",
        "s",
        8,
        8,
        *(
            q(
                f"histogram_quantile({p}, sum by (le, plan_tier) "
                f"({REPLICAS} (api_time_to_first_success_seconds_bucket{{{sel}}})))",
                f"p{int(p * 100)} {{{{plan_tier}}}}",
                ref=ref,
            )
            for ref, p in (("A", 0.5), ("B", 0.9))
        ),
    )
    b.add(
        timeseries_panel(),
        9,
        CONTRACT,
        "Who might be leaving? Consumers whose requests in the last 7 days fell below half of "
        "their weekly average over the 4 weeks before, per plan tier.",
        "short",
        8,
        8,
        q(f"sum by (plan_tier) ({REPLICAS} (api_consumers_at_risk{{{sel}}}))", "{{plan_tier}}"),
    )
    b.add(
        bargauge_panel(max_value=1),
        5,
        CONTRACT,
        "Which features do consumers adopt? Share of the active consumers of each plan tier that "
        "used a feature in the window ($window).",
        "percentunit",
        12,
        10,
        q(
            f'{REPLICAS} (api_feature_adoption_ratio{{{sel}, window="$window"}})',
            "{{feature}} ({{plan_tier}})",
        ),
    )
    b.add(
        bargauge_panel(),
        6,
        CONTRACT,
        "Which endpoints are adopted by how many consumers? Distinct consumers per endpoint in "
        "the window ($window), top 20.",
        "short",
        12,
        10,
        q(
            f'topk(20, {REPLICAS} (api_endpoint_consumers{{{svc}, window="$window"}}))',
            "{{method}} {{route}}",
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        7,
        CONTRACT,
        "Which client SDK versions are in use, and how many consumers are still on old ones? "
        "Distinct consumers per client and version in the window ($window), stacked.",
        "short",
        12,
        8,
        q(
            f"sum by (client_name, client_version) "
            f'({REPLICAS} (api_client_version_consumers{{{svc}, window="$window"}}))',
            "{{client_name}} {{client_version}}",
        ),
    )
    b.add(
        timeseries_panel(),
        16,
        "Feature consumers",
        "How many distinct consumers use each feature? Consumers per feature in the window ($window).",
        "short",
        12,
        8,
        q(f'sum by (feature) ({REPLICAS} (api_feature_consumers{{{svc}, window="$window"}}))', "{{feature}}"),
    )
    b.add(
        heatmap.Panel()
        .calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Greens")
            .scale(hm.HeatmapColorScale.LINEAR)
            .steps(32)
            .min(0)
            .max(1)
            .fill("dark-green")
        )
        .y_axis(heatmap.YAxisConfig().unit("none").axis_label("weeks since first request"))
        .cell_values(heatmap.CellValues().unit("percentunit"))
        .show_legend()
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.UNKNOWN).value("retention"))
        .mode(common.TooltipDisplayMode.SINGLE),
        8,
        CONTRACT,
        "Do consumers stay? For each number of weeks since consumers were first seen (y), the "
        "share of them still active, averaged over the weekly cohorts of the last 12 weeks; "
        "the table beside it has one row per cohort.",
        "percentunit",
        12,
        9,
        q(f"avg by (weeks_since) ({REPLICAS} (api_cohort_retention_ratio{{{svc}}}))", "{{weeks_since}}"),
    )
    b.add(
        table.Panel()
        .cell_height(common.TableCellHeight.SM)
        .cell_options(
            common.TableColoredBackgroundCellOptions(
                mode=common.TableCellBackgroundDisplayMode.GRADIENT, apply_to_row=False
            )
        )
        .thresholds(thresholds((None, "red"), (0.3, "orange"), (0.6, "green")))
        .with_transformation(
            DataTransformerConfig(
                id_val="groupingToMatrix",
                options={
                    "columnField": "weeks_since",
                    "rowField": "cohort_week",
                    "valueField": "Value",
                    "emptyValue": "null",
                },
            )
        )
        .with_transformation(
            DataTransformerConfig(
                id_val="sortBy", options={"sort": [{"field": "cohort_week\\weeks_since", "desc": True}]}
            )
        ),
        17,
        "Cohort retention by cohort week",
        "How did each weekly cohort retain? One row per week consumers were first seen "
        "(Monday), one column per week since; each cell is the share of that cohort active "
        "in that week.",
        "percentunit",
        12,
        9,
        q(f"{REPLICAS} (api_cohort_retention_ratio{{{svc}}})", "", instant=True, table_format=True),
    )
    b.add(
        timeseries_panel(),
        10,
        CONTRACT,
        "Where is the consumer base heading? Active consumers in the window ($window) now, and a "
        "linear projection 7 days ahead from the trend of the last day (predict_linear).",
        "short",
        24,
        8,
        q(f'sum({REPLICAS} (api_active_consumers{{{sel}, window="$window"}}))', "active now"),
        q(
            f"sum({REPLICAS} (clamp_min(predict_linear("
            f'api_active_consumers{{{sel}, window="$window"}}[1d], 7 * 86400), 0)))',
            "forecast in 7 days",
            ref="B",
        ),
    )

    variables = [
        datasource_variable(),
        service_variable(),
        query_variable(
            "plan_tier",
            "Plan tier",
            'label_values(api_active_consumers{service=~"$service"}, plan_tier)',
            "The consumer's current plan tier",
        ),
        custom_variable(
            "window", "Window", ["1d", "7d", "30d"], "7d", "Look-back window of the consumer counts"
        ),
    ]
    return base(
        "Who uses the API: active and new consumers, onboarding, feature and endpoint adoption, "
        "client versions, retention, churn risk and a forecast.",
        "now-7d",
        b,
        variables,
    )
