"""Builds the Grafana dashboards in grafana/dashboards/*.json with grafana-foundation-sdk.

    python grafana/build.py          # rewrite the JSON files
    python grafana/build.py --check  # exit 1 if a committed file differs from what this builds

The SDK is pinned (pyproject.toml, `dev` extra) to the Grafana version docker-compose.yml
runs.  The panel contract in grafana/panels.yaml (uids, slugs, titles, panel ids and the
metric each panel plots) is what alert rules link to; the tests hold the dashboards to it.

The alert rules in alert_rules/ are read too: every panel an alert's `dashboard_url`
points at gets a link to that alert's runbook, and each dashboard's "Firing alerts" panel
lists the alerts that point at it.  Regenerate after changing the rules.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from grafana_foundation_sdk.builders import bargauge, dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DataSourceRef,
    DataTransformerConfig,
    GridPos,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableHide,
    VariableOption,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "grafana" / "dashboards"
ALERT_RULES = ROOT / "alert_rules"

# The provisioned Prometheus data source (grafana/provisioning/datasources/datasources.yaml).
PROMETHEUS_UID = "apiusage-prometheus"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["apiusage"]
REFRESH = "30s"

# `max without (instance)`: consumer-state gauges are computed from the shared store and
# are identical on every replica, so they are never summed across replicas.
REPLICAS = "max without (instance)"
# The period the availability SLO is defined over (prometheus/slo.yaml: "over 30 days").
SLO_WINDOW = "30d"


# --------------------------------------------------------------------------- alert rules


@dataclass
class AlertLink:
    alert: str
    runbook_url: str | None


@dataclass
class Alerts:
    by_panel: dict[tuple[str, int], list[AlertLink]] = field(default_factory=lambda: defaultdict(list))
    by_dashboard: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))


_DASHBOARD_URL = re.compile(r"/d/(?P<uid>[^/?#]+)(?:/[^?#]*)?\?(?P<query>.*)")
_VIEW_PANEL = re.compile(r"(?:^|&)viewPanel=(?:panel-)?(?P<id>\d+)")


def parse_dashboard_url(url: str) -> tuple[str, int] | None:
    """(dashboard uid, panel id) of `<grafana>/d/<uid>/<slug>?viewPanel=<id>&...`, else None."""
    m = _DASHBOARD_URL.search(url)
    if not m:
        return None
    p = _VIEW_PANEL.search(m["query"])
    return (m["uid"], int(p["id"])) if p else None


def alert_rule_files(folder: Path = ALERT_RULES) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix in (".yml", ".yaml") and p.is_file())


def alert_rules(folder: Path = ALERT_RULES) -> Iterable[dict]:
    """Every alerting rule of the Prometheus rule files in `folder`."""
    for path in alert_rule_files(folder):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for group in data.get("groups") or []:
            for rule in group.get("rules") or []:
                if "alert" in rule:
                    yield rule


def load_alerts(folder: Path = ALERT_RULES) -> Alerts:
    out = Alerts()
    for rule in alert_rules(folder):
        annotations = rule.get("annotations") or {}
        target = parse_dashboard_url(str(annotations.get("dashboard_url", "")))
        if target is None:
            continue
        runbook = annotations.get("runbook_url")
        runbook = str(runbook) if runbook and "{{" not in str(runbook) else None
        links = out.by_panel[target]
        if all(link.alert != rule["alert"] for link in links):
            links.append(AlertLink(rule["alert"], runbook))
            out.by_dashboard[target[0]].add(rule["alert"])
    return out


# --------------------------------------------------------------------------- helpers


def q(
    expr: str,
    legend: str = "__auto",
    *,
    ref: str = "A",
    instant: bool = False,
    table_format: bool = False,
    heatmap_format: bool = False,
    exemplar: bool = False,
) -> prometheus.Dataquery:
    """A Prometheus target on the dashboard's data source variable."""
    target = (
        prometheus.Dataquery()
        .expr(" ".join(expr.split()))
        .legend_format(legend)
        .ref_id(ref)
        .datasource(DS)
        .exemplar(exemplar)
    )
    target = target.instant() if instant else target.range()
    if table_format:
        target = target.format(PromQueryFormat.TABLE)
    elif heatmap_format:
        target = target.format(PromQueryFormat.HEATMAP)
    return target


# Grafana makes the first threshold step the base (-Infinity) whatever its value, and
# writes it as null; the dashboard JSON schema requires a number, so the base gets this.
BASE = -1e9


def sum_rate(by: str, metric: str, selector: str, window: str = "$__rate_interval") -> str:
    """`sum by (<by>) (rate(<metric>{<selector>}[<window>]))`; `by` may be empty."""
    grouping = f"by ({by}) " if by else ""
    return f"sum {grouping}(rate({metric}{{{selector}}}[{window}]))"


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds; a value of None marks the base step."""
    return (
        dashboard.ThresholdsConfig()
        .mode(ThresholdsMode.ABSOLUTE)
        .steps([Threshold(value=BASE if v is None else v, color=c) for v, c in steps])
    )


def value_map(mapping: dict[str, tuple[str, str]]) -> ValueMap:
    return ValueMap(
        options={
            k: ValueMappingResult(text=t, color=c, index=i) for i, (k, (t, c)) in enumerate(mapping.items())
        }
    )


def legend(
    placement: common.LegendPlacement = common.LegendPlacement.BOTTOM,
    mode: common.LegendDisplayMode = common.LegendDisplayMode.LIST,
    calcs: list[str] | None = None,
) -> common_builders.VizLegendOptions:
    return (
        common_builders.VizLegendOptions()
        .display_mode(mode)
        .placement(placement)
        .show_legend(True)
        .calcs(calcs or [])
    )


def tooltip() -> common_builders.VizTooltipOptions:
    return (
        common_builders.VizTooltipOptions()
        .mode(common.TooltipDisplayMode.MULTI)
        .sort(common.SortOrder.DESCENDING)
    )


def reduce(calc: str = "lastNotNull") -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs([calc]).values(False)


class Layout:
    """Places panels left to right in rows of 24 columns."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0

    def __call__(self, w: int, h: int) -> GridPos:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = GridPos(x=self.x, y=self.y, w=w, h=h)
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def newline(self) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0


class Board:
    """One dashboard: its panels, placed in order, with alert runbook links added."""

    def __init__(self, uid: str, alerts: Alerts) -> None:
        self.uid = uid
        self.alerts = alerts
        self.layout = Layout()
        self.panels: list = []

    def add(
        self,
        panel,
        panel_id: int,
        title: str,
        description: str,
        unit: str,
        w: int,
        h: int,
        *targets: prometheus.Dataquery,
    ):
        panel = (
            panel.id(panel_id)
            .title(title)
            .description(description)
            .unit(unit)
            .datasource(DS)
            .grid_pos(self.layout(w, h))
            .targets(list(targets))
        )
        links = [
            dashboard.DashboardLink(f"Runbook: {link.alert}")
            .url(link.runbook_url)
            .target_blank(True)
            .tooltip(f"What to do when {link.alert} fires")
            for link in self.alerts.by_panel.get((self.uid, panel_id), [])
            if link.runbook_url
        ]
        if links:
            panel = panel.links(links)
        self.panels.append(panel)
        return panel


def timeseries_panel(
    *,
    stack: bool = False,
    bars: bool = False,
    fill: float = 10,
    min_value: float | None = 0,
    max_value: float | None = None,
    calcs: list[str] | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .line_width(1)
        .fill_opacity(fill)
        .legend(legend(calcs=calcs))
        .tooltip(tooltip())
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
    )
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS).fill_opacity(80)
    if stack:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def stat_panel(
    *, color_mode: common.BigValueColorMode = common.BigValueColorMode.VALUE, graph: bool = False
) -> stat.Panel:
    return (
        stat.Panel()
        .reduce_options(reduce())
        .color_mode(color_mode)
        .graph_mode(common.BigValueGraphMode.AREA if graph else common.BigValueGraphMode.NONE)
        .text_mode(common.BigValueTextMode.VALUE_AND_NAME)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .orientation(common.VizOrientation.AUTO)
    )


def bargauge_panel(
    calc: str = "lastNotNull", *, min_value: float | None = 0, max_value: float | None = None
) -> bargauge.Panel:
    panel = (
        bargauge.Panel()
        .reduce_options(reduce(calc))
        .orientation(common.VizOrientation.HORIZONTAL)
        .display_mode(common.BarGaugeDisplayMode.GRADIENT)
        .show_unfilled(True)
        .value_mode(common.BarGaugeValueMode.COLOR)
    )
    if min_value is not None:
        panel = panel.min(min_value)
    if max_value is not None:
        panel = panel.max(max_value)
    return panel


def firing_alerts(board: Board, names: set[str], *, by_service: bool) -> None:
    """Panel 1 of every dashboard: the alerts pointing at this dashboard that fire now."""
    regex = "|".join(sorted(names)) or "^$"
    scope = ', service=~"$service|"' if by_service else ""
    panel = (
        table.Panel()
        .cell_height(common.TableCellHeight.SM)
        .show_header(True)
        .filterable(False)
        .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"]).count_rows(False))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, "Value": True, "__name__": True, "alertstate": True},
                    "indexByName": {"alertname": 0, "severity": 1, "service": 2},
                    "renameByName": {},
                },
            )
        )
        .no_value("No alert of this dashboard is firing")
    )
    board.add(
        panel,
        1,
        "Firing alerts",
        "Is anything on this dashboard alerting right now? The alerts whose dashboard link "
        "points at a panel here and that are firing (Prometheus ALERTS series), with their "
        "labels; open the panel the alert links to, and its runbook from the panel's links.",
        "none",
        24,
        5,
        q(f'ALERTS{{alertstate="firing", alertname=~"{regex}"{scope}}}', instant=True, table_format=True),
    )
    board.layout.newline()


def custom_variable(
    name: str, label: str, values: list[str], default: str, description: str, *, hide: bool = False
) -> dashboard.CustomVariable:
    variable = (
        dashboard.CustomVariable(name)
        .label(label)
        .description(description)
        .values(",".join(values))
        .current(VariableOption(selected=True, text=default, value=default))
        .options([VariableOption(selected=v == default, text=v, value=v) for v in values])
        .multi(False)
        .include_all(False)
    )
    return variable.hide(VariableHide.HIDE_VARIABLE) if hide else variable


def datasource_variable() -> dashboard.DatasourceVariable:
    return (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .type("prometheus")
        .description("Prometheus that scrapes the apiusage processor")
        .current(VariableOption(selected=True, text="Prometheus", value=PROMETHEUS_UID))
    )


def query_variable(name: str, label: str, query: str, description: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DS)
        .query(query)
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


SERVICES = 'label_values({__name__=~"api_requests_total|api_active_consumers"}, service)'


def service_variable() -> dashboard.QueryVariable:
    return query_variable("service", "Service", SERVICES, "service.name of the instrumented services")


def base(
    uid: str, title: str, description: str, time_from: str, board: Board, variables: list
) -> dashboard.Dashboard:
    out = (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .tooltip(DashboardCursorSync.CROSSHAIR)
        .time(time_from, "now")
        .refresh(REFRESH)
        .timezone("browser")
        .week_start("monday")
        .readonly()
        .annotation(
            dashboard.AnnotationQuery()
            .name("Annotations & Alerts")
            .built_in(1)
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .datasource(DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .target(dashboard.AnnotationTarget().limit(100).match_any(False).tags([]).type("dashboard"))
        )
        .link(
            dashboard.DashboardLink("API usage dashboards")
            .type("dashboards")
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(False)
            .keep_time(True)
            .icon("external link")
            .tooltip("")
            .url("")
            .target_blank(False)
        )
    )
    for variable in variables:
        out = out.with_variable(variable)
    for panel in board.panels:
        out = out.with_panel(panel)
    return out


# --------------------------------------------------------------------------- API overview


def error_ratio(by: str, selector: str, window: str = "$__rate_interval", codes: str = "5..") -> str:
    """Share of requests with a matching status code; 0 (not absent) when there are none."""
    total = f"sum by ({by}) (rate(api_requests_total{{{selector}}}[{window}]))"
    errors = f'sum by ({by}) (rate(api_requests_total{{{selector}, status_code=~"{codes}"}}[{window}]))'
    return f"({errors} or {total} * 0) / {total}"


def client_error_ratio(selector: str, status_class: str) -> str:
    by, metric = "client_name, client_version", "api_client_requests_total"
    total = sum_rate(by, metric, selector)
    errors = sum_rate(by, metric, f'{selector}, status_class="{status_class}"')
    return f"({errors} or {total} * 0) / {total}"


def overview(alerts: Alerts) -> dashboard.Dashboard:
    uid = "apiusage-overview"
    b = Board(uid, alerts)
    sel = 'service=~"$service", route=~"$route", plan_tier=~"$plan_tier"'
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    b.add(
        timeseries_panel(),
        2,
        "Requests per second by route",
        "How much traffic does each endpoint get? API requests per second by service, method "
        "and route (weighted by sampling), for the selected services, routes and plan tiers.",
        "reqps",
        12,
        8,
        q(
            f"sum by (service, method, route) (rate(api_requests_total{{{sel}}}[$__rate_interval]))",
            "{{method}} {{route}} ({{service}})",
        ),
    )
    b.add(
        timeseries_panel(max_value=None),
        3,
        "Error ratio (5xx) by route",
        "Which endpoints fail? The share of requests answered with a 5xx status, by service and "
        "route; 0 when there are none.",
        "percentunit",
        12,
        8,
        q(error_ratio("service, method, route", sel), "{{method}} {{route}} ({{service}})"),
    )
    b.add(
        timeseries_panel(),
        4,
        "Latency quantiles by route",
        "How slow is each endpoint? The 50th, 95th and 99th percentile of server-side request "
        "duration by route, from api_request_duration_seconds. Exemplars (dots) link a slow "
        "bucket to a trace in the trace backend.",
        "s",
        12,
        8,
        *(
            q(
                f"histogram_quantile({p}, sum by (le, service, route) "
                f"(rate(api_request_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
                f"p{int(p * 100)} {{{{route}}}} ({{{{service}}}})",
                ref=ref,
                exemplar=True,
            )
            for ref, p in (("A", 0.5), ("B", 0.95), ("C", 0.99))
        ),
    )
    b.add(
        timeseries_panel(),
        12,
        "Latency p95 by plan tier",
        "Do paying customers get the latency they pay for? The 95th percentile of request "
        "duration per plan tier. Exemplars link to traces.",
        "s",
        12,
        8,
        q(
            f"histogram_quantile(0.95, sum by (le, plan_tier) "
            f"(rate(api_request_duration_seconds_bucket{{{sel}}}[$__rate_interval])))",
            "p95 {{plan_tier}}",
            exemplar=True,
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        11,
        "Requests by plan tier",
        "Which plan tiers drive the traffic? Requests per second per plan tier, stacked.",
        "reqps",
        8,
        8,
        q(f"sum by (plan_tier) (rate(api_requests_total{{{sel}}}[$__rate_interval]))", "{{plan_tier}}"),
    )
    b.add(
        timeseries_panel(max_value=None),
        16,
        "Error ratio (5xx) by plan tier",
        "Do server errors hit some plans more than others? The share of requests answered with a "
        "5xx status, per plan tier.",
        "percentunit",
        8,
        8,
        q(error_ratio("plan_tier", sel), "{{plan_tier}}"),
    )
    b.add(
        timeseries_panel(),
        5,
        "Traffic against the same time last week",
        "Is traffic unusually low or high? Total requests per second now, and at the same time "
        "one week earlier.",
        "reqps",
        8,
        8,
        q(f"sum(rate(api_requests_total{{{sel}}}[$__rate_interval]))", "now"),
        q(f"sum(rate(api_requests_total{{{sel}}}[$__rate_interval] offset 1w))", "one week earlier", ref="B"),
    )
    b.add(
        heatmap.Panel()
        .calculate(False)
        .color(
            heatmap.HeatmapColorOptions()
            .mode(hm.HeatmapColorMode.SCHEME)
            .scheme("Oranges")
            .scale(hm.HeatmapColorScale.EXPONENTIAL)
            .exponent(0.5)
            .steps(64)
            .fill("dark-orange")
        )
        .y_axis(heatmap.YAxisConfig().unit("s").axis_placement(common.AxisPlacement.LEFT))
        .cell_values(heatmap.CellValues().unit("reqps"))
        .exemplars_color("rgba(255,0,255,0.7)")
        .show_legend()
        .mode(common.TooltipDisplayMode.SINGLE)
        .show_y_histogram()
        .rows_frame(heatmap.RowsHeatmapOptions().layout(common.HeatmapCellLayout.LE)),
        13,
        "Latency distribution",
        "Where do request durations fall, and did a latency spike hit everyone or a few? The "
        "distribution of request duration over time (requests per second per bucket). Exemplars "
        "link individual slow requests to their traces.",
        "s",
        8,
        8,
        q(
            f"sum by (le) (rate(api_request_duration_seconds_bucket{{{sel}}}[$__rate_interval]))",
            "{{le}}",
            heatmap_format=True,
            exemplar=True,
        ),
    )
    b.add(
        bargauge_panel("mean"),
        14,
        "Top endpoints by traffic",
        "Which endpoints are used most? The ten busiest routes, by mean requests per second over "
        "the time range.",
        "reqps",
        8,
        8,
        q(
            f"topk(10, {sum_rate('service, method, route', 'api_requests_total', sel)})",
            "{{method}} {{route}} ({{service}})",
        ),
    )
    b.add(
        bargauge_panel("mean", max_value=1),
        6,
        "Top endpoints by 4xx ratio",
        "Where do clients struggle? The ten routes with the highest share of 4xx answers "
        "(authentication, validation, not found), mean over the time range: client friction, "
        "documentation or SDK problems.",
        "percentunit",
        8,
        8,
        q(
            f"topk(10, {error_ratio('service, method, route', sel, codes='4..')})",
            "{{method}} {{route}} ({{service}})",
        ),
    )

    # SLO objectives and burn rates come from the recording rules `apiusage rules` generates
    # from prometheus/slo.yaml (alert_rules/slo.rules.yml), so the panels show exactly what
    # the burn-rate alerts evaluate, with each service's own objective.
    objective = f"apiusage_service:slo_availability:objective{{{svc}}}"
    budget_30d = f"{error_ratio('service', svc, window=SLO_WINDOW)} / on (service) (1 - {objective})"

    def burn_lines() -> timeseries.Panel:
        steps = thresholds((None, "green"), (1, "yellow"), (6, "orange"), (14.4, "red"))
        return (
            timeseries_panel()
            .thresholds(steps)
            .thresholds_style(
                common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
            )
        )

    b.add(
        burn_lines(),
        7,
        "Error budget burn rate (5xx)",
        "How fast is the availability error budget being spent? The 5xx ratio divided by the "
        "budget (1 − the service's availability objective in prometheus/slo.yaml), over the "
        "alert windows: 1 spends the 30-day budget exactly in 30 days, 6 in 5 days (ticket), "
        "14.4 in 2 days (page). Per route where the SLO file sets route objectives.",
        "short",
        12,
        8,
        q(f"apiusage_service:slo_errors:burnrate1h{{{svc}}}", "{{service}} 1h"),
        q(f"apiusage_service:slo_errors:burnrate6h{{{svc}}}", "{{service}} 6h", ref="B"),
        q(
            f'apiusage_route:slo_errors:burnrate1h{{{svc}, route=~"$route"}}',
            "{{method}} {{route}} 1h",
            ref="C",
        ),
        q(f"{error_ratio('service', svc)} / on (service) (1 - {objective})", "{{service}} now", ref="D"),
    )
    b.add(
        burn_lines(),
        8,
        "Latency SLO burn rate",
        "How fast is the latency error budget being spent? The share of requests slower than the "
        "service's latency threshold, divided by its budget (1 − latency objective), over the "
        "alert windows; above 1 the latency SLO will be missed.",
        "short",
        12,
        8,
        q(f"apiusage_service:slo_latency:burnrate1h{{{svc}}}", "{{service}} 1h"),
        q(f"apiusage_service:slo_latency:burnrate6h{{{svc}}}", "{{service}} 6h", ref="B"),
        q(
            f'apiusage_route:slo_latency:burnrate1h{{{svc}, route=~"$route"}}',
            "{{method}} {{route}} 1h",
            ref="C",
        ),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("Met", "green"), "0": ("Violated", "red")})])
        .thresholds(thresholds((None, "red"), (1, "green"))),
        15,
        "SLO status",
        "Are the SLOs met? Availability: the share of non-5xx requests over 30 days against the "
        "service's objective. Latency: the latency budget burn rate over 3 days at most 1.",
        "bool",
        12,
        6,
        q(
            f"(1 - {error_ratio('service', svc, window=SLO_WINDOW)}) >= bool on (service) {objective}",
            "{{service}} availability",
        ),
        q(f"apiusage_service:slo_latency:burnrate3d{{{svc}}} <= bool 1", "{{service}} latency", ref="B"),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .thresholds(thresholds((None, "red"), (0.25, "orange"), (0.5, "green")))
        .min(-1)
        .max(1),
        9,
        "Error budget remaining",
        "How much of the availability error budget is left? 1 − (5xx ratio over 30 days ÷ the "
        "budget, 1 − the service's objective). 100 % untouched, 0 % spent, negative overspent.",
        "percentunit",
        12,
        6,
        q(f"1 - {budget_30d}", "{{service}}"),
    )
    b.add(
        timeseries_panel(max_value=None),
        10,
        "Error ratio by client version",
        "Does a client SDK version fail more than others? Share of 4xx and 5xx answers per client "
        "and version (from X-Client-Name/X-Client-Version or the User-Agent).",
        "percentunit",
        24,
        8,
        q(client_error_ratio(svc, "5xx"), "5xx {{client_name}} {{client_version}}"),
        q(client_error_ratio(svc, "4xx"), "4xx {{client_name}} {{client_version}}", ref="B"),
    )

    variables = [
        datasource_variable(),
        service_variable(),
        query_variable(
            "route",
            "Route",
            'label_values(api_requests_total{service=~"$service"}, route)',
            "Route template (http.route)",
        ),
        query_variable(
            "plan_tier",
            "Plan tier",
            'label_values(api_requests_total{service=~"$service"}, plan_tier)',
            "The consumer's plan tier",
        ),
    ]
    return base(
        uid,
        "API overview",
        "Traffic, errors and latency of the API per route and plan tier; SLOs and error budget.",
        "now-6h",
        b,
        variables,
    )


# --------------------------------------------------------------------------- adoption


def adoption(alerts: Alerts) -> dashboard.Dashboard:
    uid = "apiusage-adoption"
    b = Board(uid, alerts)
    sel = 'service=~"$service", plan_tier=~"$plan_tier"'
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    b.add(
        timeseries_panel(stack=True),
        2,
        "Active consumers by plan tier",
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
        "New consumers",
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
        "Time to first success",
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
        "Consumers at risk",
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
        "Feature adoption",
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
        "Endpoint consumers",
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
        "Client version spread",
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
        "Cohort retention",
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
        "Active consumers forecast",
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
        uid,
        "Adoption and consumers",
        "Who uses the API: active and new consumers, onboarding, feature and endpoint adoption, "
        "client versions, retention, churn risk and a forecast.",
        "now-7d",
        b,
        variables,
    )


# --------------------------------------------------------------------------- deprecations


def deprecations(alerts: Alerts) -> dashboard.Dashboard:
    uid = "apiusage-deprecations"
    b = Board(uid, alerts)
    svc = 'service=~"$service"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=True)

    b.add(
        timeseries_panel(),
        2,
        "Consumers on deprecated endpoints",
        "Who still depends on a deprecated endpoint? Distinct consumers of each deprecated "
        "endpoint in the window ($window).",
        "short",
        12,
        8,
        q(
            f'{REPLICAS} (api_deprecated_endpoint_consumers{{{svc}, window="$window"}})',
            "{{method}} {{route}}",
        ),
    )
    b.add(
        timeseries_panel(),
        3,
        "Traffic to deprecated endpoints",
        "How much traffic still goes to deprecated endpoints? Requests per second per deprecated endpoint.",
        "reqps",
        12,
        8,
        q(sum_rate("service, method, route", "api_deprecated_requests_total", svc), "{{method}} {{route}}"),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .decimals(0)
        .thresholds(thresholds((None, "red"), (30, "orange"), (90, "green"))),
        4,
        "Days to sunset",
        "How long until each deprecated endpoint stops working? Days until its sunset date "
        "from the catalog; red within 30 days.",
        "d",
        12,
        6,
        q(
            f"({REPLICAS} (api_endpoint_sunset_timestamp_seconds{{{svc}}}) - time()) / 86400",
            "{{method}} {{route}}",
        ),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .decimals(0)
        .thresholds(thresholds((None, "green"), (1, "orange"))),
        6,
        "Unused catalog endpoints",
        "What could be removed? Endpoints of the catalog with no request in the last 30 days, per service.",
        "short",
        12,
        6,
        q(f"{REPLICAS} (api_unused_endpoints{{{svc}}})", "{{service}}"),
    )
    b.add(
        bargauge_panel(max_value=1).thresholds(thresholds((None, "red"), (0.5, "orange"), (0.9, "green"))),
        5,
        "Migration progress",
        "How far along is the migration to the replacements? Of the consumers of each "
        "deprecated endpoint in the window ($window), the share that also called its catalog "
        "replacement since.",
        "percentunit",
        12,
        8,
        q(
            f'{REPLICAS} (api_migrated_consumers{{{svc}, window="$window"}}) '
            f'/ {REPLICAS} (api_deprecated_endpoint_consumers{{{svc}, window="$window"}} > 0)',
            "{{method}} {{route}}",
        ),
    )
    b.add(
        timeseries_panel(),
        7,
        "Deprecated endpoint consumers by client version",
        "Which client versions still call deprecated endpoints, so which SDK upgrade to push? "
        "Requests per second to deprecated endpoints per client and version.",
        "reqps",
        12,
        8,
        q(
            sum_rate("route, client_name, client_version", "api_deprecated_requests_total", svc),
            "{{route}}: {{client_name}} {{client_version}}",
        ),
    )
    b.add(
        timeseries_panel(max_value=None),
        8,
        "Share of traffic on deprecated endpoints",
        "What share of all requests still goes to deprecated endpoints?",
        "percentunit",
        12,
        8,
        q(
            f'(sum by (service) (rate(api_requests_total{{{svc}, deprecated="true"}}[$__rate_interval])) '
            f"or sum by (service) (rate(api_requests_total{{{svc}}}[$__rate_interval])) * 0) "
            f"/ sum by (service) (rate(api_requests_total{{{svc}}}[$__rate_interval]))",
            "{{service}}",
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        9,
        "Deprecated traffic by plan tier",
        "Which plans would a sunset hurt? Requests per second to deprecated endpoints per plan tier.",
        "reqps",
        12,
        8,
        q(sum_rate("plan_tier", "api_deprecated_requests_total", svc), "{{plan_tier}}"),
    )
    b.add(
        table.Panel()
        .cell_height(common.TableCellHeight.SM)
        .decimals(1)
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True}, "renameByName": {"Value": "days since last call"}},
            )
        ),
        10,
        "Days since the last call",
        "When was each catalog endpoint last called? Days since its last request (endpoints "
        "never called are not listed; the unused count above includes them).",
        "d",
        24,
        7,
        q(
            f"(time() - {REPLICAS} (api_endpoint_last_called_timestamp_seconds{{{svc}}})) / 86400",
            "",
            instant=True,
            table_format=True,
        ),
    )

    variables = [
        datasource_variable(),
        service_variable(),
        custom_variable(
            "window", "Window", ["1d", "7d", "30d"], "30d", "Look-back window of the consumer counts"
        ),
    ]
    return base(
        uid,
        "Deprecations and migrations",
        "Deprecated endpoints: who still calls them, with which clients, how long until sunset, "
        "how far the migration to their replacements has come, and which endpoints nobody uses.",
        "now-7d",
        b,
        variables,
    )


# --------------------------------------------------------------------------- pipeline


def pipeline(alerts: Alerts) -> dashboard.Dashboard:
    uid = "apiusage-pipeline"
    b = Board(uid, alerts)
    sel = 'job=~"$job", instance=~"$instance"'
    firing_alerts(b, alerts.by_dashboard.get(uid, set()), by_service=False)

    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("Up", "green"), "0": ("Down", "red")})])
        .thresholds(thresholds((None, "red"), (1, "green"))),
        2,
        "Processor up",
        "Is every processor replica being scraped? Prometheus's up series for the processor's "
        "scrape job, per instance.",
        "none",
        8,
        5,
        q(f"up{{{sel}}}", "{{instance}}"),
    )
    b.add(
        stat_panel(graph=True).thresholds(thresholds((None, "green"), (300, "red"))),
        13,
        "Consumer metrics age",
        "Are the consumer metrics fresh? Seconds since they were last computed (every "
        "state.refresh_interval; on a replica that does not hold the refresh lease, by the one "
        "that does).",
        "s",
        8,
        5,
        q(f"time() - apiusage_state_report_timestamp_seconds{{{sel}}}", "{{instance}}"),
    )
    b.add(
        stat_panel(graph=True).thresholds(thresholds((None, "green"), (1, "red"))),
        14,
        "Processing errors",
        "Did derivation lose spans to an internal error? Spans lost per second (should be 0; see "
        "the processor's log).",
        "cps",
        8,
        5,
        q(f"sum(rate(apiusage_processing_errors_total{{{sel}}}[$__rate_interval]))", "errors"),
    )
    b.add(
        timeseries_panel(),
        3,
        "Spans received and rejected",
        "Is telemetry arriving, and is any refused? Spans received per transport, and spans "
        "rejected per reason (the exporter was told; queue_full means back-pressure).",
        "cps",
        12,
        8,
        q(
            f"sum by (transport) (rate(apiusage_spans_received_total{{{sel}}}[$__rate_interval]))",
            "received {{transport}}",
        ),
        q(
            f"sum by (reason) (rate(apiusage_spans_rejected_total{{{sel}}}[$__rate_interval]))",
            "rejected {{reason}}",
            ref="B",
        ),
    )
    b.add(
        timeseries_panel(stack=True),
        8,
        "Spans received per service",
        "Which services send API request spans? Requests derived per second, per service.",
        "reqps",
        12,
        8,
        q(f"sum by (service) (rate(api_requests_total{{{sel}}}[$__rate_interval]))", "{{service}}"),
    )
    b.add(
        timeseries_panel(max_value=1),
        4,
        "Queue fill",
        "Is the processor keeping up? Spans waiting for derivation as a share of the queue "
        "capacity, per instance; at 100 % new exports are refused.",
        "percentunit",
        12,
        8,
        q(f"apiusage_queue_spans{{{sel}}} / apiusage_queue_capacity_spans{{{sel}}}", "{{instance}}"),
    )
    b.add(
        timeseries_panel(),
        9,
        "Processing latency",
        "How long does a batch wait and get processed? Median and 99th percentile of the time "
        "from an export's arrival to the end of its derivation.",
        "s",
        12,
        8,
        *(
            q(
                f"histogram_quantile({p}, sum by (le) "
                f"(rate(apiusage_processing_latency_seconds_bucket{{{sel}}}[$__rate_interval])))",
                f"p{int(p * 100)}",
                ref=ref,
            )
            for ref, p in (("A", 0.5), ("B", 0.99))
        ),
    )
    b.add(
        timeseries_panel(),
        5,
        "Data-quality issues by check",
        "Are the services' spans complete and sane? Spans per second with a data-quality "
        "problem, per check (missing route, consumer or status code, clock skew, ...).",
        "cps",
        12,
        8,
        q(sum_rate("check", "apiusage_data_quality_issues_total", sel), "{{check}}"),
    )
    b.add(
        timeseries_panel(),
        6,
        "Label overflow",
        "Did a label hit its cardinality limit? Observations per second folded into __other__, "
        "per metric and label.",
        "cps",
        12,
        8,
        q(
            f"sum by (metric, label) (rate(apiusage_label_overflow_total{{{sel}}}[$__rate_interval]))",
            "{{metric}} {{label}}",
        ),
    )
    b.add(
        timeseries_panel(),
        7,
        "State store flushes",
        "Is consumer state being written? Flushes per second by outcome; any failure keeps rows "
        "in memory until the store accepts them again.",
        "ops",
        12,
        8,
        q(sum_rate("outcome", "apiusage_state_flushes_total", sel), "{{outcome}}"),
    )
    b.add(
        timeseries_panel(),
        15,
        "Pending state rows",
        "How much consumer activity waits for the next flush? Deduplicated rows in memory, per instance.",
        "short",
        12,
        8,
        q(f"apiusage_state_pending_rows{{{sel}}}", "{{instance}}"),
    )
    b.add(
        timeseries_panel(),
        19,
        "Consumer metrics refresh",
        "Does the consumer-metrics refresh keep up? Duration of the last refresh per instance "
        "(the running one while it is longer; a replica without the refresh lease only loads the "
        "published report), against state.refresh_interval.",
        "s",
        12,
        8,
        q(f"apiusage_state_refresh_duration_seconds{{{sel}}}", "{{instance}}"),
        q(f"max(apiusage_state_refresh_interval_seconds{{{sel}}})", "refresh interval", ref="B"),
    )
    b.add(
        stat_panel(color_mode=common.BigValueColorMode.BACKGROUND)
        .mappings([value_map({"1": ("Computes", "green"), "0": ("Serves the published report", "blue")})])
        .thresholds(thresholds((None, "blue"), (1, "green"))),
        20,
        "Consumer metrics computed by",
        "Which replica computes the consumer metrics? 1 on the replica holding the refresh lease "
        "(PostgreSQL: one per shared store; SQLite: every processor), 0 on those serving what it "
        "published. No replica at 1 on a shared store: nobody computes, and the metrics age.",
        "none",
        12,
        8,
        q(f"apiusage_state_refresh_leader{{{sel}}}", "{{instance}}"),
    )
    b.add(
        timeseries_panel(),
        10,
        "Export requests by outcome",
        "What do OTLP exporters get told? Export requests answered per second, by transport and "
        "outcome (success, partial, invalid, queue_full, ...).",
        "ops",
        12,
        8,
        q(
            f"sum by (transport, outcome) (rate(apiusage_export_requests_total{{{sel}}}[$__rate_interval]))",
            "{{transport}} {{outcome}}",
        ),
    )
    b.add(
        timeseries_panel(),
        11,
        "Spans ignored by reason",
        "How many spans are not API requests? Spans per second skipped because they are not "
        "SERVER spans or carry no HTTP method.",
        "cps",
        12,
        8,
        q(f"sum by (reason) (rate(apiusage_spans_ignored_total{{{sel}}}[$__rate_interval]))", "{{reason}}"),
    )
    b.add(
        timeseries_panel(),
        12,
        "Live series per metric",
        "How many series does each request metric hold? Live series per metric family "
        "(bounded by the label limits and the series TTL).",
        "short",
        12,
        8,
        q(f"sum by (metric) (apiusage_series{{{sel}}})", "{{metric}}"),
    )
    b.add(
        timeseries_panel(),
        17,
        "Memory limiter refusals",
        "Is the processor refusing data to protect its memory? Export requests refused per second "
        "by the memory limiter (processors.memory_limiter), per instance; exporters retry them.",
        "ops",
        12,
        8,
        q(
            f"sum by (instance) (rate(apiusage_memory_limiter_refusals_total{{{sel}}}[$__rate_interval]))",
            "{{instance}}",
        ),
    )
    b.add(
        timeseries_panel(),
        18,
        "Resident memory and limit",
        "How close is the processor to its memory ceiling? Resident memory per instance, and the "
        "soft limit above which new data is refused.",
        "bytes",
        12,
        8,
        q(f"process_resident_memory_bytes{{{sel}}}", "RSS {{instance}}"),
        q(f"apiusage_memory_limit_bytes{{{sel}}}", "limit {{instance}}", ref="B"),
    )
    b.add(
        timeseries_panel(),
        16,
        "Traces forwarded to the trace backend",
        "Do traces reach the trace backend, so exemplars open a trace? OTLP requests forwarded "
        "per second by outcome (exporters.otlp), and the forwarding queue.",
        "ops",
        12,
        8,
        q(
            f"sum by (outcome) (rate(apiusage_forwarded_requests_total{{{sel}}}[$__rate_interval]))",
            "{{outcome}}",
        ),
        q(f"sum(apiusage_forward_queue_requests{{{sel}}})", "queued", ref="B"),
    )

    variables = [
        datasource_variable(),
        query_variable(
            "job", "Job", "label_values(apiusage_build_info, job)", "Prometheus scrape job of the processor"
        ),
        query_variable(
            "instance",
            "Instance",
            'label_values(apiusage_build_info{job=~"$job"}, instance)',
            "Processor replica",
        ),
    ]
    return base(
        uid,
        "Pipeline health",
        "The apiusage processor itself: spans in and refused, queue, data quality, label limits, "
        "state store and trace forwarding.",
        "now-1h",
        b,
        variables,
    )


# --------------------------------------------------------------------------- output

BUILDERS = {
    "api-overview.json": overview,
    "adoption-and-consumers.json": adoption,
    "deprecations-and-migrations.json": deprecations,
    "pipeline-health.json": pipeline,
}


def render(alerts: Alerts | None = None) -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    alerts = load_alerts() if alerts is None else alerts
    out = {}
    for name, build in BUILDERS.items():
        model = build(alerts).build()
        out[name] = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def stale(rendered: dict[str, str], folder: Path = OUT) -> list[str]:
    """Names of the files in `folder` that differ from `rendered` (or are missing / extra)."""
    names = {p.name for p in folder.glob("*.json")} | set(rendered)
    return sorted(
        n
        for n in names
        if n not in rendered
        or not (folder / n).exists()
        or (folder / n).read_text(encoding="utf-8") != rendered[n]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the committed JSON is stale")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        bad = stale(rendered)
        if bad:
            print(f"stale dashboards: {', '.join(bad)}; run: python grafana/build.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for extra in set(p.name for p in OUT.glob("*.json")) - set(rendered):
        (OUT / extra).unlink()
    for name, text in rendered.items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(rendered)} dashboards to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
