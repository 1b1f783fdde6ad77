"""Build the usage report: query Prometheus, turn the answers into sections with charts.

The same questions as the dashboards (traffic, reliability, adoption, onboarding,
deprecations, API design, releases, experiments, firing alerts), answered for one time range,
in one HTML file that needs nothing else to open: charts are SVG images inlined as data URIs,
styles are inline, there is no JavaScript.
"""

from __future__ import annotations

import datetime as dt
import html

from apiusage.rules.catalog import LIBRARY_FACTOR, LIBRARY_FLOOR, MIN_REQUESTS_1H

from .charts import bar_chart, heatmap, line_chart
from .page import Section
from .page import count as _count
from .page import duration_text as _duration_text
from .page import milliseconds as _milliseconds
from .prometheus import PrometheusClient, PrometheusError, string
from .sections_experiments import experiments_section
from .sections_releases import releases_section
from .text import visible

__all__ = [
    "PrometheusClient",
    "PrometheusError",
    "Report",
    "Section",
    "build_report",
    "render_html",
    "SECTIONS",
]

_5XX = 'status_code=~"5.."'
_4XX = 'status_code=~"4.."'
_W7 = 'window="7d"'
_W30 = 'window="30d"'
_SCORES = ("1", "2", "3", "4", "5")

SECTIONS = (
    "Traffic",
    "Reliability",
    "Adoption",
    "Onboarding",
    "Deprecations",
    "Design",
    "Releases",
    "Experiments",
    "Firing alerts",
)


class Report(list):
    """The sections, plus what the page says about them: key figures and data coverage."""

    def __init__(
        self, sections: list[Section], glance: list[tuple[str, str]] | None = None, coverage: str = ""
    ) -> None:
        super().__init__(sections)
        self.glance = glance or []
        self.coverage = coverage


def _label(metric: dict, *names: str) -> str:
    return " ".join(str(metric.get(n, "")) for n in names).strip() or "(all)"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


def _seconds(text: str) -> int:
    """A Prometheus duration such as 15s, 1m or 1m30s, in whole seconds (0 when unreadable)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    total, number = 0.0, ""
    i = 0
    while i < len(text):
        c = text[i]
        if c.isdigit():
            number += c
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else c
        if not number or unit not in units:
            return 0
        total += int(number) * units[unit]
        number = ""
        i += len(unit)
    return 0 if number else int(total)


def _bytes(value: float | None) -> str:
    """A payload size in B, KiB or MiB; "-" when there is none (no observations: NaN)."""
    if value is None or value != value:
        return "-"
    for unit, size in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def _per_100(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}" if whole else "-"


def _share(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _field(metric: dict) -> str:
    return f"{metric.get('location', '')}.{metric.get('field', '')}"


def _endpoint(metric: dict) -> str:
    return f"{metric.get('method', '')} {metric.get('route', '')}".strip()


class _Report:
    def __init__(self, client: PrometheusClient, range_seconds: int, now: float, service: str | None) -> None:
        self.client = client
        self.range = range_seconds
        self.now = now
        self.sel = f"service={string(service)}" if service else ""
        self.window = f"{max(1, range_seconds // 60)}m"
        self.data_start: float | None = None
        self.scrape = self._scrape_interval()
        self._span(now - range_seconds)

    def _span(self, start: float) -> None:
        """Charts from `start` to now: about 120 points, at most one per 5 seconds; rates over
        Grafana's $__rate_interval for that step, max(step + scrape interval, 4 scrape intervals)."""
        self.start = start
        self.step = max(5, int(self.now - start) // 120)
        self.rate = f"{max(self.step + self.scrape, 4 * self.scrape)}s"

    def _scrape_interval(self) -> int:
        """The longest scrape interval of Prometheus's targets (60 s when it does not say)."""
        try:
            targets = self.client.targets()
        except PrometheusError:
            return 60
        seconds = [_seconds(t.get("scrapeInterval", "")) for t in targets]
        return max((s for s in seconds if s), default=60)

    def fit_to_data(self) -> None:
        """A Prometheus younger than the period (a demo, a new install) has nothing to draw before
        its first sample: start the charts there instead of leaving most of them empty."""

        def first_seen(period: int, resolution: int, at: float) -> float | None:
            # timestamp() of an aggregate is the evaluation time: the first step with data.
            rows = self.client.query(
                f"min_over_time(timestamp(count(api_requests_total{self.f()}))[{period}s:{resolution}s])", at
            )
            return rows[0][1] if rows else None

        coarse = max(15, self.range // 2000)
        first = first_seen(self.range, coarse, self.now)
        if first is None:  # data younger than one coarse step, or none at all
            first = first_seen(coarse, 5, self.now)
            if first is None:
                return
        elif first <= self.start + 2 * coarse or self._older_than(first, coarse):
            return
        elif coarse > 5:  # refine within the coarse step that first had data
            first = first_seen(coarse, 5, first) or first
        self.data_start = max(first - 5, self.start)
        self._span(self.data_start)

    def _older_than(self, first: float, coarse: int) -> bool:
        """Whether Prometheus has samples from before `first` (back to a period before the start):
        sparse ones, such as a backfilled history read every few hours, which the steps of
        `first_seen` miss, so Prometheus is not younger than the period."""
        window = int(first - coarse - (self.start - self.range))
        rows = self.client.query(
            f"count(last_over_time(api_requests_total{self.f()}[{window}s]))", first - coarse
        )
        return bool(rows)

    def f(self, extra: str = "") -> str:
        """A label matcher with the service filter (and extra matchers)."""
        inner = ",".join(x for x in (self.sel, extra) if x)
        return "{" + inner + "}"

    def series(self, expr: str, *labels: str) -> list[tuple[str, list[tuple[float, float]]]]:
        rows = self.client.query_range(expr, self.start, self.now, self.step)
        return sorted(((_label(m, *labels), v) for m, v in rows), key=lambda x: x[0])

    def bars(self, expr: str, *labels: str) -> list[tuple[str, float]]:
        rows = self.client.query(expr, self.now)
        return sorted(((_label(m, *labels), v) for m, v in rows), key=lambda x: (-x[1], x[0]))

    def counts(self, expr: str, *labels: str) -> list[tuple[str, float]]:
        """Bars of whole counts: increase() extrapolates to fractions, and zero bars say nothing."""
        return [(k, float(round(v))) for k, v in self.bars(expr, *labels) if round(v) > 0]

    def traffic(self) -> Section:
        s = Section("Traffic", "How much is the API used, where, and by which plan tiers?")
        s.chart(
            "Requests per second by service",
            line_chart(
                self.series(f"sum by (service) (rate(api_requests_total{self.f()}[{self.rate}]))", "service")
            ),
        )
        top = self.counts(
            f"topk(10, sum by (service, method, route) "
            f"(increase(api_requests_total{self.f()}[{self.window}])))",
            "method",
            "route",
        )
        s.chart("Top endpoints by requests in the period", bar_chart(top))
        tiers = self.bars(
            f"sum by (plan_tier) (increase(api_requests_total{self.f()}[{self.window}]))", "plan_tier"
        )
        s.table(
            ["Plan tier", "Requests in the period"],
            [[t, _count(v)] for t, v in tiers],
            "No requests in the period.",
        )
        return s

    def reliability(self) -> Section:
        s = Section("Reliability", "Do requests succeed, and how fast?")
        total = f"sum by (service) (rate(api_requests_total{self.f()}[{self.rate}]))"
        errors = f"sum by (service) (rate(api_requests_total{self.f(_5XX)}[{self.rate}]))"
        s.chart(
            "Error ratio (5xx) by service",
            line_chart(self.series(f"({errors} or {total} * 0) / {total}", "service"), unit="percent"),
        )
        p95 = (
            f"histogram_quantile(0.95, sum by (service, le) "
            f"(rate(api_request_duration_seconds_bucket{self.f()}[{self.rate}])))"
        )
        s.chart("95th percentile latency by service", line_chart(self.series(p95, "service"), unit="seconds"))
        friction = self.counts(
            f"topk(10, sum by (service, method, route) (increase(api_requests_total"
            f"{self.f(_4XX)}[{self.window}])))",
            "method",
            "route",
        )
        s.chart("Endpoints with the most 4xx answers (client friction)", bar_chart(friction))
        return s

    def adoption(self) -> Section:
        s = Section("Adoption", "How many consumers, on which plans, features and client versions?")
        active: dict[str, dict[str, float]] = {}
        for metric, value in self.client.query(
            f"max by (plan_tier, window) (api_active_consumers{self.f()})", self.now
        ):
            active.setdefault(metric.get("plan_tier", ""), {})[metric.get("window", "")] = value
        windows = ["1d", "7d", "30d"]
        s.table(
            ["Plan tier", *(f"Active consumers, last {w}" for w in windows)],
            [
                [tier, *(_count(by[w]) if w in by else "-" for w in windows)]
                for tier, by in sorted(active.items(), key=lambda x: -x[1].get("30d", 0))
            ],
            "No consumer state yet (is the state store on?).",
        )
        s.chart(
            "Active consumers over the last 7 days, by plan tier",
            line_chart(self.series(f"max by (plan_tier) (api_active_consumers{self.f(_W7)})", "plan_tier")),
        )
        new = self.bars(
            f"sum by (plan_tier) (increase(api_new_consumers_total{self.f()}[{self.window}]))", "plan_tier"
        )
        s.table(
            ["Plan tier", "New consumers in the period"],
            [[k, _count(v)] for k, v in new],
            "No new consumers in the period.",
        )
        features = self.bars(f"max by (feature) (api_feature_consumers{self.f(_W30)})", "feature")
        s.chart("Consumers per feature (30 days)", bar_chart(features))
        clients = self.bars(
            f"max by (client_name, client_version) (api_client_version_consumers{self.f(_W30)})",
            "client_name",
            "client_version",
        )
        s.chart("Consumers per client version (30 days)", bar_chart(clients))
        cohorts = self.client.query(
            f"max by (cohort_week, weeks_since) (api_cohort_retention_ratio{self.f()})", self.now
        )
        weeks = sorted({m.get("cohort_week", "") for m, _ in cohorts})
        since = sorted({m.get("weeks_since", "") for m, _ in cohorts}, key=lambda w: int(w or 0))
        s.chart(
            "Cohort retention: share of the consumers first seen in a week (rows) still active "
            "N weeks later (columns)",
            heatmap(
                weeks,
                since,
                {(m.get("cohort_week", ""), m.get("weeks_since", "")): v for m, v in cohorts},
                row_title="first seen (week of)",
                column_title="weeks later",
            ),
        )
        return s

    def onboarding(self) -> Section:
        s = Section("Onboarding", "How long until new consumers succeed, and who is leaving?")
        median = self.bars(
            f"histogram_quantile(0.5, max by (plan_tier, le) "
            f"(api_time_to_first_success_seconds_bucket{self.f()}))",
            "plan_tier",
        )
        s.chart(
            "Median time from first call to first success, by plan tier",
            bar_chart([(k, v) for k, v in median if v == v], unit="seconds"),
        )
        risk = self.bars(f"max by (plan_tier) (api_consumers_at_risk{self.f()})", "plan_tier")
        s.table(
            ["Plan tier", "Consumers at risk"], [[k, _count(v)] for k, v in risk], "No consumers at risk."
        )
        return s

    def deprecations(self) -> Section:
        s = Section("Deprecations", "Who still depends on deprecated endpoints, and how close is the sunset?")
        consumers = self.client.query(
            f"max by (service, method, route) (api_deprecated_endpoint_consumers{self.f(_W30)})", self.now
        )
        sunset = {
            (_label(m, "service", "method", "route")): v
            for m, v in self.client.query(
                f"max by (service, method, route) (api_endpoint_sunset_timestamp_seconds{self.f()})", self.now
            )
        }
        migrated = {
            (_label(m, "service", "method", "route")): v
            for m, v in self.client.query(
                f"max by (service, method, route) (api_migrated_consumers{self.f(_W30)})", self.now
            )
        }
        rows = []
        for metric, n in sorted(consumers, key=lambda x: -x[1]):
            key = _label(metric, "service", "method", "route")
            days = (sunset[key] - self.now) / 86400 if key in sunset else None
            rows.append(
                [
                    f"{metric.get('method', '')} {metric.get('route', '')}",
                    metric.get("service", ""),
                    _count(n),
                    _count(migrated.get(key, 0)),
                    f"{days:.0f}" if days is not None else "-",
                ]
            )
        s.table(
            ["Endpoint", "Service", "Consumers (30 days)", "Migrated", "Days to sunset"],
            rows,
            "No deprecated endpoints are called.",
        )
        traffic = self.counts(
            f"sum by (method, route) (increase(api_deprecated_requests_total{self.f()}[{self.window}]))",
            "method",
            "route",
        )
        s.chart("Requests to deprecated endpoints in the period", bar_chart(traffic))
        return s

    def design(self) -> Section:
        s = Section(
            "Design",
            "Which parameters do clients send, how big are the payloads, which fields do they get "
            "wrong, does one client library misuse an endpoint, where are the consumers, and what "
            "do developers say?",
        )
        w = self.window
        route = ("service", "method", "route")
        requests = {
            tuple(m.get(k, "") for k in route): v
            for m, v in self.client.query(
                f"sum by (service, method, route) (increase(api_requests_total{self.f()}[{w}]))", self.now
            )
        }
        # Parameters in use, and the declared ones nobody sends.
        param = (*route, "location", "parameter")
        consumers = {
            tuple(m.get(k, "") for k in param): v
            for m, v in self.client.query(
                f"max by ({', '.join(param)}) (api_parameter_consumers{self.f(_W30)})", self.now
            )
        }
        top = self.client.query(
            f"topk(10, sum by ({', '.join(param)}) (increase(api_parameter_requests_total{self.f()}[{w}])))",
            self.now,
        )
        s.note("Parameters in use: the query parameters and JSON body fields requests carried (names only).")
        rows = []
        for m, n in sorted(top, key=lambda x: (-x[1], _endpoint(x[0]), x[0].get("parameter", ""))):
            key = tuple(m.get(k, "") for k in param)
            rows.append(
                [
                    _endpoint(m),
                    f"{m.get('location', '')}.{m.get('parameter', '')}",
                    _count(n),
                    _share(n, requests.get(key[:3], 0)),
                    _count(consumers[key]) if key in consumers else "-",
                ]
            )
        s.table(
            [
                "Endpoint",
                "Parameter",
                "Requests in the period",
                "Share of the endpoint's requests",
                "Consumers (30 days)",
            ],
            rows,
            "No parameter use recorded in the period.",
        )
        s.note("Declared but unused: parameters of the OpenAPI catalog that no request carried.")
        unused = self.client.query(
            f"max by (service, method, route) (api_unused_parameters{self.f()}) > 0", self.now
        )
        s.table(
            ["Endpoint", "Service", "Declared parameters nobody sent in 30 days"],
            [
                [_endpoint(m), m.get("service", ""), _count(v)]
                for m, v in sorted(unused, key=lambda x: (-x[1], _endpoint(x[0])))
            ],
            "Every declared parameter was sent in the last 30 days (or no catalog declares any).",
        )
        s.note("Payload sizes per endpoint, from the body size histograms.")
        sizes: dict[tuple[str, ...], dict[str, float]] = {}
        for which in ("request", "response"):
            for q in ("0.5", "0.9"):
                for m, v in self.client.query(
                    f"histogram_quantile({q}, sum by (service, method, route, le) "
                    f"(increase(api_{which}_body_size_bytes_bucket{self.f()}[{w}])))",
                    self.now,
                ):
                    sizes.setdefault(tuple(m.get(k, "") for k in route), {})[f"{which} {q}"] = v
        s.table(
            ["Endpoint", "Service", "Request p50", "Request p90", "Response p50", "Response p90"],
            [
                [
                    f"{key[1]} {key[2]}",
                    key[0],
                    *(
                        _bytes(by.get(f"{which} {q}"))
                        for which in ("request", "response")
                        for q in ("0.5", "0.9")
                    ),
                ]
                for key, by in sorted(sizes.items(), key=lambda x: (x[0][2], x[0][1], x[0][0]))
            ],
            "No body sizes recorded in the period.",
        )
        # Validation errors by field and type.
        field = (*route, "location", "field", "error_type")
        errors = self.client.query(
            f"topk(10, sum by ({', '.join(field)}) (increase(api_validation_errors_total{self.f()}[{w}])))",
            self.now,
        )
        errors = sorted(
            ((m, v) for m, v in errors if round(v) > 0),
            key=lambda x: (-x[1], _endpoint(x[0]), x[0].get("field", "")),
        )
        s.chart(
            "Request validation errors by endpoint, field and type in the period",
            bar_chart(
                [
                    (
                        f"{_endpoint(m)} {_field(m)} {m.get('error_type', '')}",
                        float(round(v)),
                    )
                    for m, v in errors
                ]
            ),
        )
        s.table(
            ["Endpoint", "Field", "Error type", "Errors in the period", "Per 100 requests"],
            [
                [
                    _endpoint(m),
                    _field(m),
                    m.get("error_type", ""),
                    _count(v),
                    _per_100(v, requests.get(tuple(m.get(x, "") for x in route), 0.0)),
                ]
                for m, v in errors
            ],
            "No request validation errors in the period.",
        )
        s.note(
            f"Client libraries whose 4xx share on an endpoint is over {LIBRARY_FLOOR:.0%} and more than "
            f"{LIBRARY_FACTOR} times the other clients' (at least {MIN_REQUESTS_1H} requests each)."
        )
        s.table(
            [
                "Client library",
                "Endpoint",
                "Service",
                "4xx share",
                "Other clients' 4xx share",
                "Requests in the period",
            ],
            self._library_outliers(),
            "No client library's 4xx share stands out on any endpoint.",
        )
        self._regions(s)
        self._feedback(s, requests)
        return s

    def _library_outliers(self) -> list[list[str]]:
        """Client libraries whose 4xx share on an endpoint over the period is more than
        LIBRARY_FACTOR times the other clients' (the ApiClientLibraryErrorOutlier rule, with its
        floor and its guard of MIN_REQUESTS_1H requests on each side, over the whole period)."""
        totals: dict[tuple[str, str, str], dict[str, list[float]]] = {}
        for m, v in self.client.query(
            "sum by (service, client_name, method, route, status_class) "
            f"(increase(api_client_endpoint_requests_total{self.f()}[{self.window}]))",
            self.now,
        ):
            by_client = totals.setdefault((m.get("service", ""), m.get("method", ""), m.get("route", "")), {})
            counts = by_client.setdefault(m.get("client_name", ""), [0.0, 0.0])
            counts[0] += v
            if m.get("status_class") == "4xx":
                counts[1] += v
        rows = []
        for (service, method, route), by_client in sorted(totals.items()):
            all_n = sum(n for n, _ in by_client.values())
            all_bad = sum(b for _, b in by_client.values())
            for client, (n, bad) in sorted(by_client.items()):
                others_n, others_bad = all_n - n, all_bad - bad
                if client in ("unknown", "__other__") or n < MIN_REQUESTS_1H or others_n < MIN_REQUESTS_1H:
                    continue
                mine, theirs = bad / n, others_bad / others_n
                if mine > LIBRARY_FLOOR and mine > LIBRARY_FACTOR * theirs:
                    rows.append(
                        [
                            client,
                            f"{method} {route}",
                            service,
                            _share(bad, n),
                            _share(others_bad, others_n),
                            _count(n),
                        ]
                    )
        return sorted(rows, key=lambda r: (-float(r[3].rstrip("%")), r[0], r[1]))

    def _regions(self, s: Section) -> None:
        w = self.window
        by_region: dict[str, dict] = {}
        for m, v in self.client.query(
            "sum by (client_region, server_region, status_class) "
            f"(increase(api_region_requests_total{self.f()}[{w}]))",
            self.now,
        ):
            row = by_region.setdefault(m.get("client_region", ""), {"n": 0.0, "bad": 0.0, "servers": {}})
            row["n"] += v
            if m.get("status_class") in ("4xx", "5xx"):
                row["bad"] += v
            server = m.get("server_region", "")
            row["servers"][server] = row["servers"].get(server, 0.0) + v
        p90 = {
            m.get("client_region", ""): v
            for m, v in self.client.query(
                "histogram_quantile(0.9, sum by (client_region, le) "
                f"(increase(api_region_request_duration_seconds_bucket{self.f()}[{w}])))",
                self.now,
            )
        }
        ordered = sorted(by_region.items(), key=lambda x: (-x[1]["n"], x[0]))
        s.chart(
            "Requests by client region in the period",
            bar_chart([(region, float(round(row["n"]))) for region, row in ordered if round(row["n"]) > 0]),
        )
        s.table(
            [
                "Client region",
                "Requests in the period",
                "Error share (4xx and 5xx)",
                "p90 latency",
                "Served from",
            ],
            [
                [
                    region,
                    _count(row["n"]),
                    _share(row["bad"], row["n"]),
                    _milliseconds(p90.get(region)),
                    ", ".join(sorted(row["servers"], key=lambda k: (-row["servers"][k], k))),
                ]
                for region, row in ordered
            ],
            "No client regions recorded in the period (is APIUSAGE_REGION_HEADERS set?).",
        )

    def _feedback(self, s: Section, requests: dict[tuple[str, ...], float]) -> None:
        by_route: dict[tuple[str, str], dict[str, float]] = {}
        for m, v in self.client.query(
            f"sum by (service, route, score) (increase(api_feedback_total{self.f()}[{self.window}]))",
            self.now,
        ):
            scores = by_route.setdefault((m.get("service", ""), m.get("route", "")), {})
            scores[m.get("score", "")] = scores.get(m.get("score", ""), 0.0) + v
        per_route: dict[tuple[str, str], float] = {}
        for (service, _, route), n in requests.items():
            per_route[(service, route)] = per_route.get((service, route), 0.0) + n
        scores_all: dict[str, float] = {}
        rows = []
        for (service, route), scores in sorted(by_route.items(), key=lambda x: (-sum(x[1].values()), x[0])):
            n = sum(scores.values())
            if round(n) <= 0:
                continue
            for k, v in scores.items():
                scores_all[k] = scores_all.get(k, 0.0) + v
            # A score folded into __other__ by the label limit counts as feedback, not in the mean.
            scored = sum(v for k, v in scores.items() if k in _SCORES)
            mean = (
                f"{sum(int(k) * v for k, v in scores.items() if k in _SCORES) / scored:.1f}"
                if scored
                else "-"
            )
            low = sum(v for k, v in scores.items() if k in ("1", "2"))
            rows.append(
                [
                    route or "(the whole API)",
                    service,
                    _count(n),
                    mean,
                    _share(low, n),
                    _count(per_route[(service, route)]) if (service, route) in per_route else "-",
                ]
            )
        s.chart(
            "Developer feedback by score (1 = bad, 5 = good) in the period",
            bar_chart(
                [(f"score {k}", float(round(v))) for k, v in sorted(scores_all.items()) if round(v) > 0]
            ),
        )
        s.table(
            [
                "Route",
                "Service",
                "Feedback in the period",
                "Mean score",
                "Scores 1-2",
                "Requests in the period",
            ],
            rows,
            "No developer feedback in the period.",
        )
        givers = self.client.query(f"sum(max by (service) (api_feedback_consumers{self.f(_W30)}))", self.now)
        if givers:
            s.note(f"{_count(givers[0][1])} consumers gave feedback in the last 30 days.")

    def glance(self) -> list[tuple[str, str]]:
        """Headline numbers for the top of the page; a figure that cannot be read is left out."""
        figures = [
            ("Requests in the period", f"sum(increase(api_requests_total{self.f()}[{self.window}]))"),
            (
                "Active consumers, last 7 days",
                f"sum(max by (service, plan_tier) (api_active_consumers{self.f(_W7)}))",
            ),
            (
                "Consumers on deprecated endpoints (30 days)",
                f"sum(max by (service, method, route) (api_deprecated_endpoint_consumers{self.f(_W30)}))",
            ),
            ("Consumers at risk", f"sum(max by (service, plan_tier) (api_consumers_at_risk{self.f()}))"),
            (
                "Share of requests answered 5xx",
                f"sum(increase(api_requests_total{self.f(_5XX)}[{self.window}])) or vector(0)",
            ),
        ]
        out = []
        total = None
        for title, expr in figures:
            try:
                rows = self.client.query(expr, self.now)
            except PrometheusError:
                continue
            if not rows:
                continue
            value = rows[0][1]
            if title.startswith("Requests"):
                total = value
                out.append((title, _count(value)))
            elif title.startswith("Share"):
                if total:
                    out.append((title, f"{100 * value / total:.2f}%"))
            else:
                out.append((title, _count(value)))
        try:
            firing = sum(1 for a in self.client.alerts() if a.get("state") == "firing")
            out.append(("Alerts firing now", str(firing)))
        except PrometheusError:
            pass
        return out

    def firing(self) -> Section:
        s = Section("Firing alerts", "What needs attention now?")
        alerts = [a for a in self.client.alerts() if a.get("state") == "firing"]
        rows = [
            [
                a["labels"].get("alertname", ""),
                a["labels"].get("severity", ""),
                a["labels"].get("service", ""),
                a.get("annotations", {}).get("summary", ""),
                a.get("annotations", {}).get("runbook_url", ""),
            ]
            for a in alerts
        ]
        rows.sort(key=lambda r: ({"critical": 0, "warning": 1}.get(r[1], 2), r[0]))
        s.table(["Alert", "Severity", "Service", "Summary", "Runbook"], rows, "No alerts firing.")
        return s


def build_report(
    client: PrometheusClient, range_seconds: int, now: float, service: str | None = None
) -> Report:
    """Every section; a section whose queries fail says so instead of failing the report."""
    report = _Report(client, range_seconds, now, service)
    coverage = ""
    try:
        report.fit_to_data()
    except PrometheusError:
        pass  # the sections say what fails
    if report.data_start is not None:
        when = dt.datetime.fromtimestamp(report.data_start, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        coverage = (
            f"Prometheus holds API metrics only since {when}, so the charts start there; "
            "totals cover what it holds."
        )
    sections = []
    for title, make in zip(
        SECTIONS,
        (
            report.traffic,
            report.reliability,
            report.adoption,
            report.onboarding,
            report.deprecations,
            report.design,
            lambda: releases_section(report),
            lambda: experiments_section(report),
            report.firing,
        ),
        strict=True,
    ):
        try:
            sections.append(make())
        except PrometheusError as exc:
            failed = Section(title, "")
            failed.note(f"This section could not be built: {exc}")
            sections.append(failed)
    return Report(sections, report.glance(), coverage)


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:800px;color:#222}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}section{margin:2.5rem 0}
h2{border-bottom:1px solid #ddd;padding-bottom:.3rem}.question{color:#555;font-style:italic}
figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}img.chart{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #eee}.empty,.note{color:#777}nav a{margin-right:.8rem}td a{word-break:break-all}
.glance{display:flex;flex-wrap:wrap;gap:.8rem;margin:1.5rem 0}.figure{flex:1 1 140px;border:1px solid #e5e5e5;
padding:.6rem .8rem;border-radius:4px}.figure .value{font-size:1.5rem;font-weight:600}
.figure .what{color:#555;font-size:.85rem}
"""


def render_html(
    sections: list[Section], prometheus_url: str, range_seconds: int, now: float, service: str | None = None
) -> str:
    when = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    span = _duration_text(range_seconds)
    scope = f" for {html.escape(visible(service))}" if service else ""
    glance = getattr(sections, "glance", None) or []
    coverage = getattr(sections, "coverage", "")
    figures = "".join(
        f'<div class="figure"><div class="value">{html.escape(v)}</div>'
        f'<div class="what">{html.escape(k)}</div></div>'
        for k, v in glance
    )
    top = (f'<div class="glance">{figures}</div>' if figures else "") + (
        f'<p class="note">{html.escape(coverage)}</p>' if coverage else ""
    )
    nav = "".join(
        f'<a href="#{s.title.lower().replace(" ", "-")}">{html.escape(s.title)}</a>' for s in sections
    )
    body = "".join(
        f'<section id="{s.title.lower().replace(" ", "-")}"><h2>{html.escape(s.title)}</h2>'
        + (f'<p class="question">{html.escape(s.question)}</p>' if s.question else "")
        + "".join(s.blocks)
        + "</section>"
        for s in sections
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>API usage report{scope}</title><style>{_CSS}</style></head><body>"
        f"<h1>API usage report{scope}</h1>"
        f'<p class="meta">The last {span} up to {when}, from {html.escape(prometheus_url)}</p>'
        f"<nav>{nav}</nav>{top}{body}</body></html>\n"
    )
