"""Build the usage report: query Prometheus, turn the answers into sections with charts.

The same questions as the dashboards (traffic, reliability, adoption,
onboarding, deprecations, firing alerts), answered for one time range, in one
HTML file that needs nothing else to open: charts are SVG images inlined as
data URIs, styles are inline, there is no JavaScript.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

from .charts import as_img, bar_chart, line_chart

__all__ = ["PrometheusClient", "PrometheusError", "Section", "build_report", "render_html",
           "SECTIONS"]

_5XX = 'status_code=~"5.."'
_4XX = 'status_code=~"4.."'
_W7 = 'window="7d"'
_W30 = 'window="30d"'

SECTIONS = ("Traffic", "Reliability", "Adoption", "Onboarding", "Deprecations", "Firing alerts")


class PrometheusError(Exception):
    """Prometheus cannot be reached or refused a query; the message says which and why."""


class PrometheusClient:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, str]) -> object:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                detail = json.load(exc).get("error", exc.reason)
            except ValueError:
                detail = exc.reason
            raise PrometheusError(f"Prometheus at {self.base_url} refused {params.get('query', path)!r}: "
                                  f"{detail}") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"cannot reach Prometheus at {self.base_url}: {reason}") from None
        if body.get("status") != "success":
            raise PrometheusError(f"Prometheus at {self.base_url}: {body.get('error', body)}")
        return body["data"]

    def check(self) -> None:
        self._get("/api/v1/status/buildinfo", {})

    def query(self, expr: str, at: float) -> list[tuple[dict, float]]:
        data = self._get("/api/v1/query", {"query": expr, "time": f"{at:.3f}"})
        return [(r["metric"], float(r["value"][1])) for r in data["result"]]  # type: ignore[index]

    def query_range(self, expr: str, start: float, end: float,
                    step: float) -> list[tuple[dict, list[tuple[float, float]]]]:
        data = self._get("/api/v1/query_range", {"query": expr, "start": f"{start:.3f}",
                                                  "end": f"{end:.3f}", "step": f"{step:.0f}"})
        return [(r["metric"], [(float(t), float(v)) for t, v in r["values"]])
                for r in data["result"]]  # type: ignore[index]

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts", {})["alerts"]  # type: ignore[index]


@dataclass
class Section:
    title: str
    question: str
    blocks: list[str] = field(default_factory=list)

    def chart(self, caption: str, svg: str) -> None:
        self.blocks.append(f"<figure>{as_img(svg, caption)}<figcaption>{html.escape(caption)}"
                           "</figcaption></figure>")

    def table(self, headers: list[str], rows: list[list[str]], empty: str) -> None:
        if not rows:
            self.blocks.append(f'<p class="empty">{html.escape(empty)}</p>')
            return
        head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                       for row in rows)
        self.blocks.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def note(self, text: str) -> None:
        self.blocks.append(f'<p class="note">{html.escape(text)}</p>')


def _label(metric: dict, *names: str) -> str:
    return " ".join(str(metric.get(n, "")) for n in names).strip() or "(all)"


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.3g}"


class _Report:
    def __init__(self, client: PrometheusClient, range_seconds: int, now: float,
                 service: str | None) -> None:
        self.client = client
        self.range = range_seconds
        self.now = now
        self.start = now - range_seconds
        self.step = max(60, range_seconds // 120)
        self.sel = f'service="{service}"' if service else ""
        self.window = f"{max(1, range_seconds // 60)}m"
        self.rate = f"{max(5, self.step // 60 * 4)}m"

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

    def traffic(self) -> Section:
        s = Section("Traffic", "How much is the API used, where, and by which plan tiers?")
        s.chart("Requests per second by service",
                line_chart(self.series(f"sum by (service) (rate(api_requests_total{self.f()}[{self.rate}]))",
                                       "service")))
        top = self.bars(f"topk(10, sum by (service, method, route) "
                        f"(increase(api_requests_total{self.f()}[{self.window}])))",
                        "method", "route")
        s.chart("Top endpoints by requests in the period", bar_chart(top))
        tiers = self.bars(f"sum by (plan_tier) (increase(api_requests_total{self.f()}[{self.window}]))",
                          "plan_tier")
        s.table(["Plan tier", "Requests in the period"], [[t, _num(v)] for t, v in tiers],
                "No requests in the period.")
        return s

    def reliability(self) -> Section:
        s = Section("Reliability", "Do requests succeed, and how fast?")
        total = f"sum by (service) (rate(api_requests_total{self.f()}[{self.rate}]))"
        errors = f'sum by (service) (rate(api_requests_total{self.f(_5XX)}[{self.rate}]))'
        s.chart("Error ratio (5xx) by service",
                line_chart(self.series(f"({errors} or {total} * 0) / {total}", "service"),
                           unit="percent"))
        p95 = (f"histogram_quantile(0.95, sum by (service, le) "
               f"(rate(api_request_duration_seconds_bucket{self.f()}[{self.rate}])))")
        s.chart("95th percentile latency by service", line_chart(self.series(p95, "service"),
                                                                 unit="seconds"))
        friction = self.bars(
            f'topk(10, sum by (service, method, route) (increase(api_requests_total'
            f'{self.f(_4XX)}[{self.window}])))', "method", "route")
        s.chart("Endpoints with the most 4xx answers (client friction)", bar_chart(friction))
        return s

    def adoption(self) -> Section:
        s = Section("Adoption", "How many consumers, on which plans, features and client versions?")
        active = self.bars(f"max by (plan_tier, window) (api_active_consumers{self.f()})",
                           "window", "plan_tier")
        s.table(["Window / plan tier", "Active consumers"], [[k, _num(v)] for k, v in active],
                "No consumer state yet (is the state store on?).")
        s.chart("Active consumers over the last 7 days, by plan tier",
                line_chart(self.series(f'max by (plan_tier) (api_active_consumers{self.f(_W7)})',
                                       "plan_tier")))
        new = self.bars(f"sum by (plan_tier) (increase(api_new_consumers_total{self.f()}[{self.window}]))",
                        "plan_tier")
        s.table(["Plan tier", "New consumers in the period"], [[k, _num(v)] for k, v in new],
                "No new consumers in the period.")
        features = self.bars(f'max by (feature) (api_feature_consumers{self.f(_W30)})',
                             "feature")
        s.chart("Consumers per feature (30 days)", bar_chart(features))
        clients = self.bars(
            f'max by (client_name, client_version) (api_client_version_consumers{self.f(_W30)})',
            "client_name", "client_version")
        s.chart("Consumers per client version (30 days)", bar_chart(clients))
        return s

    def onboarding(self) -> Section:
        s = Section("Onboarding", "How long until new consumers succeed, and who is leaving?")
        median = self.bars(f"histogram_quantile(0.5, max by (plan_tier, le) "
                           f"(api_time_to_first_success_seconds_bucket{self.f()}))", "plan_tier")
        s.chart("Median time from first call to first success, by plan tier",
                bar_chart([(k, v) for k, v in median if v == v], unit="seconds"))
        risk = self.bars(f"max by (plan_tier) (api_consumers_at_risk{self.f()})", "plan_tier")
        s.table(["Plan tier", "Consumers at risk"], [[k, _num(v)] for k, v in risk],
                "No consumers at risk.")
        return s

    def deprecations(self) -> Section:
        s = Section("Deprecations", "Who still depends on deprecated endpoints, and how close is "
                                    "the sunset?")
        consumers = self.client.query(
            f'max by (service, method, route) (api_deprecated_endpoint_consumers{self.f(_W30)})',
            self.now)
        sunset = {(_label(m, "service", "method", "route")): v for m, v in self.client.query(
            f"max by (service, method, route) (api_endpoint_sunset_timestamp_seconds{self.f()})",
            self.now)}
        migrated = {(_label(m, "service", "method", "route")): v for m, v in self.client.query(
            f'max by (service, method, route) (api_migrated_consumers{self.f(_W30)})',
            self.now)}
        rows = []
        for metric, n in sorted(consumers, key=lambda x: -x[1]):
            key = _label(metric, "service", "method", "route")
            days = (sunset[key] - self.now) / 86400 if key in sunset else None
            rows.append([f"{metric.get('method', '')} {metric.get('route', '')}",
                         metric.get("service", ""), _num(n), _num(migrated.get(key, 0)),
                         f"{days:.0f}" if days is not None else "-"])
        s.table(["Endpoint", "Service", "Consumers (30 days)", "Migrated", "Days to sunset"], rows,
                "No deprecated endpoints are called.")
        traffic = self.bars(f"sum by (method, route) (increase(api_deprecated_requests_total"
                            f"{self.f()}[{self.window}]))", "method", "route")
        s.chart("Requests to deprecated endpoints in the period", bar_chart(traffic))
        return s

    def firing(self) -> Section:
        s = Section("Firing alerts", "What needs attention now?")
        alerts = [a for a in self.client.alerts() if a.get("state") == "firing"]
        rows = [[a["labels"].get("alertname", ""), a["labels"].get("severity", ""),
                 a["labels"].get("service", ""), a.get("annotations", {}).get("summary", ""),
                 a.get("annotations", {}).get("runbook_url", "")] for a in alerts]
        rows.sort(key=lambda r: ({"critical": 0, "warning": 1}.get(r[1], 2), r[0]))
        s.table(["Alert", "Severity", "Service", "Summary", "Runbook"], rows, "No alerts firing.")
        return s


def build_report(client: PrometheusClient, range_seconds: int, now: float,
                 service: str | None = None) -> list[Section]:
    """Every section; a section whose queries fail says so instead of failing the report."""
    report = _Report(client, range_seconds, now, service)
    sections = []
    for title, make in zip(SECTIONS, (report.traffic, report.reliability, report.adoption,
                                      report.onboarding, report.deprecations, report.firing),
                           strict=True):
        try:
            sections.append(make())
        except PrometheusError as exc:
            failed = Section(title, "")
            failed.note(f"This section could not be built: {exc}")
            sections.append(failed)
    return sections


_CSS = """
body{font-family:-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:800px;color:#222}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}section{margin:2.5rem 0}
h2{border-bottom:1px solid #ddd;padding-bottom:.3rem}.question{color:#555;font-style:italic}
figure{margin:1rem 0}figcaption{color:#555;font-size:.9rem}img.chart{max-width:100%;border:1px solid #eee}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #eee}.empty,.note{color:#777}nav a{margin-right:.8rem}
"""


def render_html(sections: list[Section], prometheus_url: str, range_seconds: int, now: float,
                service: str | None = None) -> str:
    when = dt.datetime.fromtimestamp(now, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    days = range_seconds / 86400
    span = f"{days:g} days" if days >= 1 else f"{range_seconds / 3600:g} hours"
    scope = f" for {html.escape(service)}" if service else ""
    nav = "".join(f'<a href="#{s.title.lower().replace(" ", "-")}">{html.escape(s.title)}</a>'
                  for s in sections)
    body = "".join(
        f'<section id="{s.title.lower().replace(" ", "-")}"><h2>{html.escape(s.title)}</h2>'
        + (f'<p class="question">{html.escape(s.question)}</p>' if s.question else "")
        + "".join(s.blocks) + "</section>" for s in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>API usage report{scope}</title><style>{_CSS}</style></head><body>"
            f"<h1>API usage report{scope}</h1>"
            f'<p class="meta">The last {span} up to {when}, from {html.escape(prometheus_url)}</p>'
            f"<nav>{nav}</nav>{body}</body></html>\n")
