"""The recording rules that do not depend on the SLO file: request rates and ratios per window,
latency quantiles, client friction, API design (validation errors, client libraries per endpoint,
response sizes), releases (per service.version), consumer adoption and pipeline data quality."""

from __future__ import annotations

from .promql import QUANTILES, ROUTE, WINDOWS, group, record

__all__ = [
    "CLIENT_ENDPOINT",
    "RELEASE_LOOKBACK",
    "RELEASE_MIN_REQUESTS",
    "design_rules",
    "recording_groups",
    "release_rules",
]

# The labels of a client library's series on one endpoint (api_client_endpoint_requests_total).
CLIENT_ENDPOINT = "service, client_name, method, route"


def design_rules() -> list[dict]:
    """Validation errors per request, each client library's 4xx ratio per endpoint, mean response
    size: what the API design alerts and the "API design" dashboard share."""
    ce = "apiusage_client_endpoint:api_client_endpoint_requests"
    size = "api_response_body_size_bytes"
    return [
        record(
            "apiusage_route:api_validation_errors:rate1h",
            f"sum by ({ROUTE}) (rate(api_validation_errors_total[1h]))",
        ),
        # Errors per request, not failed requests: one request can carry several (one per field).
        record(
            "apiusage_route:api_validation_errors:ratio_rate1h",
            """
            (apiusage_route:api_validation_errors:rate1h or apiusage_route:api_requests:rate1h * 0)
            / apiusage_route:api_requests:rate1h
        """,
        ),
        record(f"{ce}:rate1h", f"sum by ({CLIENT_ENDPOINT}) (rate(api_client_endpoint_requests_total[1h]))"),
        # 0, not absent, for a client without any 4xx: the other libraries' sum needs every client.
        record(
            f"{ce}_4xx:rate1h",
            f"""
            sum by ({CLIENT_ENDPOINT}) (rate(api_client_endpoint_requests_total{{status_class="4xx"}}[1h]))
            or {ce}:rate1h * 0
        """,
        ),
        record(f"{ce}_4xx:ratio_rate1h", f"{ce}_4xx:rate1h / {ce}:rate1h"),
        record(
            f"apiusage_route:{size}:mean_rate1d",
            f"sum by ({ROUTE}) (rate({size}_sum[1d])) / sum by ({ROUTE}) (rate({size}_count[1d]))",
        ),
    ]


# A release's error ratio and p95 are recorded only over an hour with at least this many requests
# (on the route; on the service for the p95): fewer make a ratio that one request moves by points.
RELEASE_MIN_REQUESTS = 100
# How far back the previous release's last recorded figures are looked for: it may get no
# traffic any more once the new one has taken over (runbooks/ApiReleaseRegression.md).
RELEASE_LOOKBACK = "7d"
RELEASE_ROUTE = "service, version, method, route"


def release_rules() -> list[dict]:
    """Per release (service.version): request rate, 5xx ratio and p95 over the last hour (guarded by
    traffic), its rank from the state store, and the previous release's last recorded figures."""
    rr = "apiusage_release_route:api_release_requests"
    p95 = "apiusage_release:api_release_request_duration_seconds:p95_rate1h"
    guard = f"{rr}:rate1h * 3600 >= {RELEASE_MIN_REQUESTS}"
    rank = "apiusage_release:api_release_rank"

    def previous(expr: str, by: str) -> str:
        # The rank-1 release's value, its version moved to `previous_version` so that it joins the
        # newest release's series on the other labels.
        return f"""
            max by ({by}, previous_version) (
              label_replace(
                {expr} and on (service, version) ({rank} == 1),
                "previous_version", "$1", "version", "(.*)"
              )
            )
        """

    def total(selector: str) -> str:
        # The counters' increase over the lookback: the previous release's whole recent traffic
        # (its restarts included), not its last hour, which drains once the new one takes over.
        return f"sum by ({RELEASE_ROUTE}) (increase({selector}[{RELEASE_LOOKBACK}]))"

    requests = total("api_release_requests_total")
    errors = total('api_release_requests_total{status_class="5xx"}')
    return [
        record(f"{rr}:rate1h", f"sum by ({RELEASE_ROUTE}) (rate(api_release_requests_total[1h]))"),
        record(
            f"{rr}_5xx:rate1h",
            f'sum by ({RELEASE_ROUTE}) (rate(api_release_requests_total{{status_class="5xx"}}[1h]))',
        ),
        record(f"{rr}_5xx:ratio_rate1h", f"({rr}_5xx:rate1h or {rr}:rate1h * 0) / {rr}:rate1h and {guard}"),
        # The requests behind it, for the test against the previous release.
        record(f"{rr}:increase1h", f"{rr}:rate1h * 3600 and {guard}"),
        record(
            p95,
            f"""
            histogram_quantile(0.95,
              sum by (service, version, le) (rate(api_release_request_duration_seconds_bucket[1h])))
            and on (service, version)
            sum by (service, version) (rate(api_release_request_duration_seconds_count[1h])) * 3600
              >= {RELEASE_MIN_REQUESTS}
        """,
        ),
        # From the state store, the same on every replica: max, not sum.
        record(rank, "max by (service, version) (api_release_rank)"),
        # The previous release on each route: its requests and 5xx over its last RELEASE_LOOKBACK,
        # and their ratio when they pass the same guard.
        record(f"{rr}:increase_previous", previous(requests, ROUTE)),
        record(f"{rr}_5xx:increase_previous", previous(f"({errors} or {requests} * 0)", ROUTE)),
        record(
            f"{rr}_5xx:ratio_previous",
            f"{rr}_5xx:increase_previous / {rr}:increase_previous "
            f"and {rr}:increase_previous >= {RELEASE_MIN_REQUESTS}",
        ),
        *_two_proportion_z(rr),
        record(
            "apiusage_release:api_release_request_duration_seconds:p95_previous",
            previous(f"last_over_time({p95}[{RELEASE_LOOKBACK}])", "service"),
        ),
    ]


def _two_proportion_z(rr: str) -> list[dict]:
    """The pooled two-proportion z of the newest hour's 5xx ratio against the previous release's
    ratio over its lookback, per route: (p1 - p0) / sqrt(p (1 - p) (1/n1 + 1/n0)), p pooled.
    Without it the factor-and-floor rule alone fires on one equal release in five at a few
    hundred requests an hour (runbooks/ApiReleaseRegression.md)."""
    p1, n1 = f"{rr}_5xx:ratio_rate1h", f"{rr}:increase1h"
    p0, n0 = f"{rr}_5xx:ratio_previous", f"{rr}:increase_previous"
    pooled = f"{rr}_5xx:ratio_pooled_previous"
    join = f"on ({ROUTE}) group_left (previous_version)"
    return [
        record(pooled, f"(({p1} * {n1}) + {join} ({p0} * {n0})) / ({n1} + {join} {n0})"),
        record(
            f"{rr}_5xx:z_previous",
            f"({p1} - {join} {p0}) / sqrt({pooled} * (1 - {pooled}) * (1 / {n1} + {join} (1 / {n0})))",
        ),
    ]


def recording_groups() -> list[dict]:
    rates: list[dict] = []
    for w in WINDOWS:
        rates += [
            record(
                f"apiusage_route:api_requests:rate{w}", f"sum by ({ROUTE}) (rate(api_requests_total[{w}]))"
            ),
            record(
                f"apiusage_route:api_requests_5xx:rate{w}",
                f'sum by ({ROUTE}) (rate(api_requests_total{{status_code=~"5.."}}[{w}]))',
            ),
            record(
                f"apiusage_route:api_requests_5xx:ratio_rate{w}",
                f"""
                (apiusage_route:api_requests_5xx:rate{w} or apiusage_route:api_requests:rate{w} * 0)
                / apiusage_route:api_requests:rate{w}
            """,
            ),
            record(
                f"apiusage_service:api_requests:rate{w}",
                f"sum by (service) (apiusage_route:api_requests:rate{w})",
            ),
            record(
                f"apiusage_service:api_requests_5xx:ratio_rate{w}",
                f"""
                (sum by (service) (apiusage_route:api_requests_5xx:rate{w})
                  or apiusage_service:api_requests:rate{w} * 0)
                / apiusage_service:api_requests:rate{w}
            """,
            ),
        ]
    latency: list[dict] = []
    for q in QUANTILES:
        latency += [
            record(
                "apiusage_route:api_request_duration_seconds:quantile_rate5m",
                f"""
                histogram_quantile({q},
                  sum by ({ROUTE}, le) (rate(api_request_duration_seconds_bucket[5m])))
            """,
                {"quantile": q},
            ),
            record(
                "apiusage_service:api_request_duration_seconds:quantile_rate5m",
                f"""
                histogram_quantile({q},
                  sum by (service, le) (rate(api_request_duration_seconds_bucket[5m])))
            """,
                {"quantile": q},
            ),
        ]
    friction = [
        record(
            "apiusage_route:api_requests_4xx:ratio_rate1h",
            f"""
            (sum by ({ROUTE}) (rate(api_requests_total{{status_code=~"4.."}}[1h]))
              or apiusage_route:api_requests:rate1h * 0)
            / apiusage_route:api_requests:rate1h
        """,
        ),
        record(
            "apiusage_client_version:api_client_requests:rate1h",
            "sum by (service, client_name, client_version) (rate(api_client_requests_total[1h]))",
        ),
        record(
            "apiusage_client_version:api_client_requests_errors:ratio_rate1h",
            """
            (sum by (service, client_name, client_version) (
                rate(api_client_requests_total{status_class=~"4xx|5xx"}[1h]))
              or apiusage_client_version:api_client_requests:rate1h * 0)
            / apiusage_client_version:api_client_requests:rate1h
        """,
        ),
    ]
    design = design_rules()
    consumers = [
        record(
            "apiusage_plan:api_time_to_first_success_seconds:p50_7d",
            """
            histogram_quantile(0.5, sum by (service, plan_tier, le) (
              max without (instance) (increase(api_time_to_first_success_seconds_bucket[7d]))))
        """,
        ),
        record(
            "apiusage_plan:api_first_successes:increase7d",
            """
            sum by (service, plan_tier) (
              max without (instance) (increase(api_time_to_first_success_seconds_count[7d])))
        """,
        ),
    ]
    pipeline = [
        record(
            "apiusage_check:apiusage_data_quality_issues:ratio_rate1h",
            """
            sum by (check) (rate(apiusage_data_quality_issues_total[1h]))
            / ignoring (check) group_left ()
            sum (rate(apiusage_spans_processed_total[1h]))
        """,
        ),
    ]
    return [
        group("apiusage-request-rates", "1m", rates),
        group("apiusage-latency-quantiles", "1m", latency),
        group("apiusage-client-friction", "1m", friction),
        group("apiusage-api-design", "1m", design),
        group("apiusage-releases", "1m", release_rules()),
        group("apiusage-consumers", "2m", consumers),  # < the 5m lookback of readers
        group("apiusage-pipeline", "1m", pipeline),
    ]
