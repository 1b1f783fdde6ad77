"""The experiments dashboard's queries give the right numbers per variant, not only some.

A real `apiusage serve` with an experiments file receives, over OTLP/gRPC, real OpenTelemetry SDK
server spans in which the real OpenFeature SDK evaluated the experiment's flag with its
OpenTelemetry `TracingHook` (the `feature_flag.evaluation` span events); a real Prometheus scrapes
it every second. Each panel query of the dashboard, with its variables at their defaults, is then
evaluated at the end of a known window and compared with what the spans sent in it mean.

The traffic comes in two phases. The warm-up makes every series exist (a 2xx, a 4xx and a 5xx per
variant, every consumer once, one consumer contaminated); the measured phase is the window. The
rate window is exactly the time between the scrape that saw the warm-up and the one that saw the
measured phase, so Prometheus does not extrapolate and a rate is the phase's count over its length.

The five check gauges (api_experiment_running, _sample_ratio_p_value, _sample_ratio_mismatch,
_guardrail_failed, _p_value) come from the processor's state refresh, which runs the verdict code of
`apiusage experiments report`; the expected values are what that code concludes from the store.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.grafana.grafana_support import dashboards, data_panels, default_values, substitute, variables
from tests.grafana.live_support import Prometheus, prometheus_server
from tests.support.polling import wait_until
from tests.support.processor import start_processor

pytestmark = [pytest.mark.slow, pytest.mark.live]

UID = "apiusage-experiments"
SERVICE = "orders-api"
EXPERIMENT = "checkout-v2"
FLAG = "checkout-v2-flag"
BUCKETS = [0.05, 0.1, 0.2, 0.4, 0.8]
# 11 and 9 consumers: every number differs between the variants, so a query that mixed them
# up would fail; 11 vs 9 against a planned 50/50 is no sample ratio mismatch (p = 0.65).
CONTROL = [f"consumer-{i:02d}" for i in range(11)]
TREATED = [f"consumer-{i:02d}" for i in range(11, 20)]
FAST, SLOW = 0.030, 0.150  # seconds; buckets (0, 0.05] and (0.1, 0.2]

EXPERIMENTS = {
    "version": 1,
    "experiments": {
        EXPERIMENT: {
            "service": SERVICE,
            "flag": FLAG,
            "variants": ["control", "treatment"],
            "control": "control",
            "primary": "client_error_ratio",
            "guardrails": ["error_ratio", "latency_p95"],
        }
    },
}


@dataclass(frozen=True)
class Call:
    consumer: str
    variant: str
    status: int
    seconds: float


def _calls(consumers: list[str], variant: str, n: int, statuses: list[int], slow: int = 0) -> list[Call]:
    """`n` calls per consumer, round robin; the first calls get `statuses`, then 200; the last
    `slow` calls take SLOW seconds, the others FAST."""
    order = [c for _ in range(n) for c in consumers]
    codes = statuses + [200] * (len(order) - len(statuses))
    return [
        Call(c, variant, s, SLOW if i >= len(order) - slow else FAST)
        for i, (c, s) in enumerate(zip(order, codes, strict=True))
    ]


# Warm-up: every consumer once (assignment), a 5xx and a 4xx per variant, and consumer-00
# (control) seen once more in treatment: contaminated, it stays counted in control.
WARM_UP = [
    *_calls(CONTROL, "control", 1, [500, 400]),
    *_calls(TREATED, "treatment", 1, [500, 400]),
    Call(CONTROL[0], "treatment", 200, FAST),
]
# The window: control 66 requests, 3 5xx and 6 4xx, all fast; treatment 36, 9 5xx and 6 4xx,
# half of them slow.
MEASURED = [
    *_calls(CONTROL, "control", 6, [500] * 3 + [400] * 6),
    *_calls(TREATED, "treatment", 4, [500] * 9 + [400] * 6, slow=18),
]

BY = {"service": SERVICE, "experiment": EXPERIMENT}
C, T = {**BY, "variant": "control"}, {**BY, "variant": "treatment"}


def expected_rows(window: float, checks: dict) -> dict[tuple[int, str], list[tuple[dict[str, str], float]]]:
    """(panel id, refId) -> every row the query must answer, for a window of `window` seconds."""
    return {
        (2, "A"): [(C, 66 / window), (T, 36 / window)],
        (3, "A"): [(C, 3 / 66), (T, 9 / 36)],
        (4, "A"): [(C, 6 / 66), (T, 6 / 36)],
        # control: every request in (0, 0.05]; treatment: rank 0.95 x 36 = 34.2, the 18 slow ones
        # in (0.1, 0.2] after 18 fast ones.
        (5, "A"): [(C, 0.95 * 0.05), (T, 0.1 + 0.1 * (34.2 - 18) / 18)],
        (6, "A"): [(C, 11), (T, 9)],
        (7, "A"): [(BY, checks["running"])],
        (7, "B"): [(BY, checks["srm_p"])],
        (7, "C"): [(BY, checks["srm_mismatch"])],
        (8, "A"): [({**T, "metric": m}, v) for m, v in checks["guardrail_failed"].items()],
        (9, "A"): [({**T, "metric": m}, v) for m, v in checks["p_value"].items()],
        (10, "A"): [(BY, 1)],
    }


# --------------------------------------------------------------------------- the traffic


class FlagService:
    """Server spans of the real OTel SDK in which the real OpenFeature SDK evaluates FLAG (the
    variant is the call's), its TracingHook adding the span event; exported over OTLP/gRPC."""

    def __init__(self, grpc_endpoint: str) -> None:
        from openfeature import api as openfeature
        from openfeature.contrib.hook.opentelemetry import TracingHook
        from openfeature.flag_evaluation import FlagResolutionDetails, Reason
        from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        def assign(flag: InMemoryFlag, context) -> FlagResolutionDetails:
            variant = context.attributes["variant"]
            return FlagResolutionDetails(
                flag.variants[variant], variant=variant, reason=Reason.TARGETING_MATCH
            )

        domain = "experiments-dashboard"
        flag = InMemoryFlag("control", {"control": False, "treatment": True}, context_evaluator=assign)
        openfeature.set_provider(InMemoryProvider({FLAG: flag}), domain=domain)
        self.client = openfeature.get_client(domain)
        self.client.add_hooks([TracingHook()])
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{grpc_endpoint}", insecure=True))
        )
        self.tracer = self.provider.get_tracer("experiments-dashboard-test")

    def send(self, calls: list[Call]) -> None:
        from openfeature.evaluation_context import EvaluationContext
        from opentelemetry import trace

        for call in calls:
            end = time.time_ns()
            span = self.tracer.start_span(
                "POST /v2/checkout",
                kind=trace.SpanKind.SERVER,
                start_time=end - round(call.seconds * 1e9),
                attributes={
                    "http.request.method": "POST",
                    "http.route": "/v2/checkout",
                    "apiusage.consumer.id": call.consumer,
                },
            )
            with trace.use_span(span, end_on_exit=False):
                context = EvaluationContext(targeting_key=call.consumer, attributes={"variant": call.variant})
                self.client.get_boolean_value(FLAG, False, context)
            span.set_attribute("http.response.status_code", call.status)
            span.end(end_time=end)
        assert self.provider.force_flush(10_000)

    def close(self) -> None:
        self.provider.shutdown()


CHECK_GAUGES = (
    "api_experiment_running",
    "api_experiment_sample_ratio_p_value",
    "api_experiment_sample_ratio_mismatch",
    "api_experiment_guardrail_failed",
    "api_experiment_p_value",
)


def report_checks(config: Path) -> dict:
    """What `apiusage experiments report` concludes from the store: the values the state
    refresh exports as the check gauges (it runs the same verdict code)."""
    from apiusage.conventions.experiments import load_experiments
    from apiusage.experiments.checks import first_exposure_day, information_fraction
    from apiusage.experiments.readout import read_experiment
    from apiusage.experiments.verdict import analyse
    from apiusage.processor.config import load_config
    from apiusage.processor.state.store import open_store

    settings = load_config(str(config))
    experiment = load_experiments(settings.experiments).experiments[EXPERIMENT]
    store = open_store(settings.state)
    try:
        data = read_experiment(store, experiment)
        # The checks' information fraction (None here: no planned_days, so the test against alpha).
        fraction = information_fraction(
            experiment, time.time_ns() // 1_000_000, first_exposure_day(store, experiment)
        )
    finally:
        store.close()
    assert fraction is None
    analysis = analyse(experiment, {v: data[v] for v in experiment.variants if v in data}, fraction)
    return {
        "running": 1.0,
        "srm_p": float(analysis.srm.p_value),
        "srm_mismatch": 0.0 if analysis.srm.ok else 1.0,
        "guardrail_failed": {
            r.metric: float(r.guardrail_failed) for r in analysis.results if r.role == "guardrail"
        },
        "p_value": {r.metric: float(r.p_adjusted) for r in analysis.results if math.isfinite(r.p_adjusted)},
    }


# --------------------------------------------------------------------------- the stack


@dataclass
class Answers:
    rows: dict[tuple[int, str], list[tuple[dict[str, str], float]]]
    expected: dict[tuple[int, str], list[tuple[dict[str, str], float]]]
    variable_values: list[str]


def latest_scrape(prom: Prometheus) -> float:
    """The timestamp of the newest scrape of the processor's experiment series."""
    (row,) = prom.query("max(timestamp(api_experiment_requests_total))")
    return float(row["value"][1])


def total(prom: Prometheus, expr: str, at: float | None = None) -> float | None:
    rows = prom.query(expr, at=at)
    return float(rows[0]["value"][1]) if rows else None


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> Iterator[Answers]:
    tmp = tmp_path_factory.mktemp("experiments-dashboard")
    (tmp / "experiments.yaml").write_text(yaml.safe_dump(EXPERIMENTS))
    config = {
        "experiments": str(tmp / "experiments.yaml"),
        "state": {
            "flush_interval": "100ms",
            "refresh_interval": "200ms",
            "experiment_checks_interval": "200ms",
        },
        "exporters": {"prometheus": {"histogram_buckets": BUCKETS}},
    }
    with start_processor(tmp, config) as processor:
        metrics = processor.metrics_url.removeprefix("http://").split("/")[0]
        scrape = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "apiusage", "static_configs": [{"targets": [metrics]}]}],
        }
        with prometheus_server(tmp / "prometheus", scrape) as prom:
            service = FlagService(processor.grpc_endpoint)
            try:
                yield measure(prom, service, tmp / "apiusage.yaml")
            finally:
                service.close()


def measure(prom: Prometheus, service: FlagService, config: Path) -> Answers:
    requests = "sum(api_experiment_requests_total)"
    observed = "sum(api_experiment_request_duration_seconds_count)"
    service.send(WARM_UP)
    wait_until(
        lambda: total(prom, requests) == len(WARM_UP) and total(prom, observed) == len(WARM_UP),
        30,
        lambda: f"Prometheus to see the warm-up ({total(prom, requests)} of {len(WARM_UP)} requests)",
        interval=0.2,
    )
    start = latest_scrape(prom)
    time.sleep(1.5)  # a scrape after `start` that still has only the warm-up
    service.send(MEASURED)
    n = len(WARM_UP) + len(MEASURED)

    def consumers(variant: str) -> float | None:
        return total(prom, f'max without (instance) (api_experiment_consumers{{variant="{variant}"}})')

    wait_until(
        lambda: (
            total(prom, requests) == n
            and total(prom, observed) == n
            and consumers("control") == len(CONTROL)
            and consumers("treatment") == len(TREATED)
            and total(prom, "max without (instance) (api_experiment_contaminated_consumers)") == 1
        ),
        30,
        lambda: f"Prometheus to see the measured phase ({total(prom, requests)} of {n} requests)",
        interval=0.2,
    )
    checks = report_checks(config)
    # The refresh publishes the checks on its own schedule: wait for them.
    wait_until(
        lambda: (
            total(prom, "max without (instance) (api_experiment_sample_ratio_p_value)") == checks["srm_p"]
            and len(prom.query("api_experiment_p_value")) == len(checks["p_value"])
        ),
        30,
        "Prometheus to have the experiment checks",
        interval=0.2,
    )
    # The window ends at a scrape of the processor no older than every check's sample.
    checked = max(total(prom, f"max(timestamp({name}))") or math.inf for name in CHECK_GAUGES)
    end = wait_until(
        lambda: (t := latest_scrape(prom)) >= checked and t, 10, "a scrape after the checks", interval=0.2
    )
    window_ms = round((end - start) * 1000)
    assert window_ms >= 1000, (start, end)
    model = dashboards()[UID]
    values = default_values(model, f"{window_ms}ms")
    rows = {}
    for p in data_panels(model):
        for t in p["targets"]:
            found = prom.query(substitute(t["expr"], values), at=end)
            rows[p["id"], t["refId"]] = [(r["metric"], float(r["value"][1])) for r in found]
    var = variables(model)["experiment"]["query"]
    selector = substitute(var.removeprefix("label_values(").rsplit(",", 1)[0], values)
    found = prom.api("label/experiment/values", **{"match[]": selector})
    return Answers(rows, expected_rows(window_ms / 1000, checks), found)


# --------------------------------------------------------------------------- the checks


QUERIES = [
    (2, "A"),
    (3, "A"),
    (4, "A"),
    (5, "A"),
    (6, "A"),
    (7, "A"),
    (7, "B"),
    (7, "C"),
    (8, "A"),
    (9, "A"),
    (10, "A"),
]


@pytest.mark.parametrize(("panel_id", "ref"), QUERIES, ids=lambda x: str(x))
def test_experiments_panel_gives_the_exact_numbers(answers, panel_id, ref):
    got = answers.rows[panel_id, ref]
    want = answers.expected[panel_id, ref]
    assert want, f"panel {panel_id} {ref}: nothing expected (the checks were not computed)"
    assert len(got) == len(want), f"panel {panel_id} {ref}: {got}"
    for labels, value in want:
        match = [v for m, v in got if all(m.get(k, "") == x for k, x in labels.items())]
        assert len(match) == 1, f"panel {panel_id} {ref}: no single row with {labels} in {got}"
        assert math.isclose(match[0], value, rel_tol=1e-9, abs_tol=1e-12), (panel_id, ref, labels, match[0])


def test_the_checks_say_what_the_scenario_means(answers):
    """11 vs 9 consumers against a planned 50/50 is no mismatch (chi-square 0.2 on 1 degree of
    freedom); the treatment's 5xx (10 of 46 requests in all) against the control's (4 of 77) fails
    the guardrail; every metric has its p-value, every guardrail its check."""
    from scipy.stats import chi2

    checks = dict(answers.expected)
    ((_, srm_p),) = checks[7, "B"]
    assert math.isclose(srm_p, chi2.sf(0.2, 1), rel_tol=1e-9) and checks[7, "C"] == [(BY, 0.0)]
    assert checks[7, "A"] == [(BY, 1.0)]
    guardrails = {row["metric"]: v for row, v in checks[8, "A"]}
    assert guardrails.keys() == {"error_ratio", "latency_p95"}
    assert guardrails["error_ratio"] == 1.0
    p_values = {row["metric"]: v for row, v in checks[9, "A"]}
    assert p_values.keys() == {"client_error_ratio", "error_ratio", "latency_p95"}
    assert all(0 <= p <= 1 for p in p_values.values()) and p_values["error_ratio"] < 0.05


def test_firing_alerts_query_runs_and_lists_nothing_here(answers):
    """This Prometheus evaluates no alert rule: the panel's query runs, and finds no alert (the
    live dashboard test fires one per dashboard and checks the panel lists it)."""
    assert answers.rows[1, "A"] == []


def test_every_experiments_query_is_checked(answers):
    """A new panel or target of the dashboard gets its expected numbers here."""
    checked = {*QUERIES, (1, "A")}
    assert set(answers.rows) == checked, sorted(set(answers.rows) ^ checked)


def test_experiment_variable_lists_the_experiment(answers):
    assert answers.variable_values == [EXPERIMENT]
