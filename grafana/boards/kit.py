"""What every dashboard builder shares: queries, panel kinds, layout, variables, the frame."""

from __future__ import annotations

from apiusage.conventions import panels as contract
from grafana_foundation_sdk.builders import bargauge, dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.models import common
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

from .alert_links import Alerts

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

# The title of a panel of the panel contract (apiusage.conventions.panels) is written there
# only: a builder passes this instead of the title.
CONTRACT = "<title from the panel contract>"


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
        """Place `panel` with its id, title, description, unit, size and queries, and the
        runbook links of the alerts pointing at it; `title` is CONTRACT for a contract panel."""
        title = self._title(panel_id, title)
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

    def _title(self, panel_id: int, title: str) -> str:
        """The contract's title for a contract panel; a title of its own for any other."""
        listed = contract.panel(self.uid, panel_id)
        if listed is None and title is CONTRACT:
            raise ValueError(f"{self.uid} panel {panel_id} is not in the panel contract: give it a title")
        if listed is not None and title is not CONTRACT:
            raise ValueError(
                f"{self.uid} panel {panel_id} is in the panel contract: pass CONTRACT, not {title!r}"
            )
        return listed.title if listed is not None else title


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


def value_table(value: str) -> table.Panel:
    """An instant-query table whose one value column is named `value` (the Time column hidden)."""
    return (
        table.Panel()
        .cell_height(common.TableCellHeight.SM)
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={"excludeByName": {"Time": True}, "renameByName": {"Value": value}},
            )
        )
    )


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


def base(description: str, time_from: str, board: Board, variables: list) -> dashboard.Dashboard:
    """The dashboard of `board`, with the uid and title of the panel contract."""
    uid = board.uid
    out = (
        dashboard.Dashboard(contract.dashboard(uid).title)
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


def ratio_or_zero(part: str, whole: str) -> str:
    """`part / whole`, 0 (not absent) where `whole` has traffic and `part` none."""
    return f"({part} or {whole} * 0) / {whole}"


def merged_table(rename: dict[str, str], exclude: tuple[str, ...] = ()) -> table.Panel:
    """A table of instant queries joined on their common labels, value columns renamed."""
    return (
        table.Panel()
        .cell_height(common.TableCellHeight.SM)
        .show_header(True)
        .with_transformation(DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True, **{name: True for name in exclude}},
                    "renameByName": rename,
                },
            )
        )
    )


# How long after a release's first sight its deploy mark spans: the gauge appears at the first
# consumer-metrics refresh after the first request (state.refresh_interval), so the mark is a
# short region from then on rather than an instant (the schema has no time-from-value option).
MARK_SECONDS = 900


def deploy_markers(selector: str) -> dashboard.AnnotationQuery:
    """A Prometheus annotation over the minutes after each release's first sight."""
    return (
        dashboard.AnnotationQuery()
        .name("Deploys (first sight of a service.version)")
        .datasource(DS)
        .enable(True)
        .hide(False)
        .icon_color("rgba(255, 152, 48, 1)")
        .expr(
            f"{REPLICAS} (api_release_first_seen_timestamp_seconds{{{selector}}}) > time() - {MARK_SECONDS}"
        )
    )
