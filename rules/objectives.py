"""SLO resolution (defaults, services, routes) and the burn-rate rules the SLO file asks for."""

from __future__ import annotations

from apiusage.processor.exporters.le import le_label

from .promql import ROUTE, SECONDS, WINDOWS, dedent, num, record, regex_alternatives, selector
from .slo import Latency, Objectives, SloFile

__all__ = ["PAGE", "TICKET", "burn_expr", "resolve", "scopes", "slo_recording"]

# Multi-window multi-burn-rate pairs (Google SRE workbook, 30-day budget):
# (long window, short window, burn-rate factor).
PAGE = (("1h", "5m", 14.4), ("6h", "30m", 6.0))
TICKET = (("1d", "2h", 3.0), ("3d", "6h", 1.0))


def resolve(slo: SloFile, service: str | None, route=None) -> Objectives:
    d = slo.defaults
    svc = slo.services.get(service) if service else None

    def pick(*values):
        return next((v for v in values if v is not None), None)

    if route is not None:  # only the objectives the route sets; missing latency keys inherit
        lat = route.latency
        base = (svc.latency if svc and svc.latency else None) or Latency()
        return Objectives(
            None if route.availability is None else route.availability / 100,
            None if lat is None else pick(lat.threshold, base.threshold, d.latency.threshold),
            None if lat is None else pick(lat.target, base.target, d.latency.target) / 100,
        )
    lat = (svc.latency if svc else None) or Latency()
    return Objectives(
        pick(svc.availability if svc else None, d.availability) / 100,
        pick(lat.threshold, d.latency.threshold),
        pick(lat.target, d.latency.target) / 100,
    )


def scopes(slo: SloFile) -> list[tuple[str, str, dict[str, str], Objectives]]:
    """(level, by-clause, selector labels, objectives) for every SLO: each configured service,
    the default for every other service, and each configured route."""
    names = list(slo.services)
    out = [("service", "service", {"service": n}, resolve(slo, n)) for n in names]
    default = {"service__ne_re": regex_alternatives(names)} if names else {}
    out.append(("service", "service", default, resolve(slo, None)))
    for n in names:
        for r in slo.services[n].routes:
            out.append(
                ("route", ROUTE, {"service": n, "method": r.method, "route": r.route}, resolve(slo, n, r))
            )
    return out


def slo_recording(slo: SloFile) -> tuple[list[dict], list[dict]]:
    """One rule per recorded name; the scopes (services, the default, routes) joined by `or`
    (one rule per name keeps `promtool check rules --lint=all` free of duplicates)."""
    burn: dict[str, list[str]] = {}
    budget: dict[str, list[str]] = {}

    def add(into: dict[str, list[str]], name: str, expr: str) -> None:
        into.setdefault(name, []).append(dedent(expr) if "\n" in expr else expr)

    for level, by, labels, obj in scopes(slo):
        sel = selector(**labels)
        comma = sel + "," if sel else ""
        if obj.availability is not None:
            allowed = num(1 - obj.availability)
            add(
                burn,
                f"apiusage_{level}:slo_availability:objective",
                f"apiusage_{level}:api_requests:rate1h{{{sel}}} * 0 + {num(obj.availability)}",
            )
            for w in WINDOWS:
                add(
                    burn,
                    f"apiusage_{level}:slo_errors:burnrate{w}",
                    f"apiusage_{level}:api_requests_5xx:ratio_rate{w}{{{sel}}} / {allowed}",
                )
            if level == "service":
                add(
                    budget,
                    "apiusage_service:slo_errors:burnrate30d",
                    f"""
                    (
                      (sum by (service) (rate(api_requests_total{{{comma}status_code=~"5.."}}[30d]))
                        or sum by (service) (rate(api_requests_total{{{sel}}}[30d])) * 0)
                      / sum by (service) (rate(api_requests_total{{{sel}}}[30d]))
                    ) / {allowed}
                """,
                )
        # resolve() sets both or neither (a route without latency, or defaults that need both).
        if obj.latency_threshold is not None and obj.latency_target is not None:
            allowed = num(1 - obj.latency_target)
            le = selector(**labels, le=le_label(obj.latency_threshold))
            add(
                burn,
                f"apiusage_{level}:slo_latency:objective",
                f"apiusage_{level}:api_requests:rate1h{{{sel}}} * 0 + {num(obj.latency_target)}",
            )
            add(
                burn,
                f"apiusage_{level}:slo_latency:threshold_seconds",
                f"apiusage_{level}:api_requests:rate1h{{{sel}}} * 0 + {num(obj.latency_threshold)}",
            )
            for w in ("30d",) if level == "service" else ():
                add(
                    budget,
                    f"apiusage_service:slo_latency:burnrate{w}",
                    f"""
                    (
                      1 - sum by (service) (rate(api_request_duration_seconds_bucket{{{le}}}[{w}]))
                      / sum by (service) (rate(api_request_duration_seconds_count{{{sel}}}[{w}]))
                    ) / {allowed}
                """,
                )
            for w in WINDOWS:
                add(
                    burn,
                    f"apiusage_{level}:slo_latency:burnrate{w}",
                    f"""
                    (
                      1 - sum by ({by}) (rate(api_request_duration_seconds_bucket{{{le}}}[{w}]))
                      / sum by ({by}) (rate(api_request_duration_seconds_count{{{sel}}}[{w}]))
                    ) / {allowed}
                """,
                )
    add(
        budget,
        "apiusage_service:slo_errors:budget_remaining30d",
        "1 - apiusage_service:slo_errors:burnrate30d",
    )
    add(
        budget,
        "apiusage_service:slo_latency:budget_remaining30d",
        "1 - apiusage_service:slo_latency:burnrate30d",
    )

    def rules(into: dict[str, list[str]]) -> list[dict]:
        return [
            record(name, "\nor\n".join(exprs) if len(exprs) > 1 else exprs[0]) for name, exprs in into.items()
        ]

    return rules(burn), rules(budget)


def burn_expr(slo: SloFile, slo_kind: str, pairs) -> str:
    """Both levels in one expression: service-level burn rates exist for every service,
    route-level ones only for the routes the SLO file lists."""
    levels = ["service"]
    if any(
        r.availability is not None if slo_kind == "errors" else r.latency is not None
        for s in slo.services.values()
        for r in s.routes
    ):
        levels.append("route")
    n = slo.defaults.min_requests
    parts = []
    for level in levels:
        for long, short, factor in pairs:
            f = num(factor)
            parts.append(
                f"(\n"
                f"  apiusage_{level}:slo_{slo_kind}:burnrate{long} > {f}\n"
                f"  and apiusage_{level}:slo_{slo_kind}:burnrate{short} > {f}\n"
                f"  and apiusage_{level}:api_requests:rate{long} * {SECONDS[long]} >= {n}\n"
                f")"
            )
    return "\nor\n".join(parts)
