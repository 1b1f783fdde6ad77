"""The demo's experiment and releases, in process: the flag assignment (exact per consumer, a fair
split), the OpenFeature evaluation on the real instrumented span, the treatment's stock check,
release 1.5.0's ledger, the experiments file, the run's copy of it and the summary's lines."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter

import httpx
import pytest
import yaml
from apiusage.conventions.experiments import load_experiments
from apiusage.demo import EXPERIMENTS, FLAG, PSEUDONYM_KEY, RELEASES, VARIANTS, release_environment
from apiusage.demo.app import (
    DISCONTINUED_FROM,
    build_app,
    checkout_variant,
    consumer_pseudonym,
    ledger_prefix,
    load_plans,
    service_version,
)
from apiusage.demo.launch.demo import DemoError, write_experiments
from apiusage.demo.launch.summary import Summary, parse
from apiusage.instrumentation import Pseudonymizer, instrument
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from scipy.stats import binom

PLANS = load_plans()
# Exact: the pseudonym is the instrumentation's HMAC with the demo's key, the variant a hash of it.
EXPECTED = {
    "demo-pro-01": "control",
    "demo-pro-02": "treatment",
    "demo-free-02": "control",
    "demo-enterprise-01": "control",
}


def _order(*skus: str) -> dict:
    return {"lines": [{"sku": s, "quantity": 1} for s in skus]}


def _requests(app, calls: list[tuple[str, str, dict | None]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            out = []
            for key, path, body in calls:
                method = "POST" if body is not None else "GET"
                out.append(await client.request(method, path, json=body, headers={"X-API-Key": key}))
            return out

    return asyncio.run(run())


# ---------------------------------------------------------------- assignment


def test_the_targeting_key_is_the_instrumentations_pseudonym_never_the_api_key():
    pseudonymizer = Pseudonymizer(PSEUDONYM_KEY.encode())
    for key in PLANS:
        assert consumer_pseudonym(key, PSEUDONYM_KEY) == pseudonymizer(key)
        assert key not in consumer_pseudonym(key, PSEUDONYM_KEY)
    assert consumer_pseudonym("demo-pro-01", "another-key-0123456") != consumer_pseudonym(
        "demo-pro-01", PSEUDONYM_KEY
    )


def test_a_consumer_always_gets_the_same_variant():
    for key, variant in EXPECTED.items():
        assert checkout_variant(consumer_pseudonym(key, PSEUDONYM_KEY)) == variant, key
    # sha256("new-checkout\\0" + id) starts 3ac7...: below half of 2**64, so the treatment; 8770...: not.
    assert checkout_variant("0123456789abcdef0123456789abcdef") == "treatment"
    assert checkout_variant("0123456789abcdef0123456789abcdee") == "control"
    # Another flag splits the same consumers independently.
    ids = [consumer_pseudonym(k, PSEUDONYM_KEY) for k in PLANS]
    assert [checkout_variant(i) for i in ids] != [checkout_variant(i, "another-flag") for i in ids]


def test_the_demo_consumers_split_24_to_16():
    got = Counter(checkout_variant(consumer_pseudonym(k, PSEUDONYM_KEY)) for k in PLANS)
    assert got == {"control": 24, "treatment": 16}


def test_the_split_over_many_ids_is_within_a_binomial_band():
    n = 100_000
    treated = sum(checkout_variant(f"{i:032x}") == "treatment" for i in range(n))
    low, high = binom.interval(1 - 1e-6, n, 0.5)
    assert low <= treated <= high, treated
    assert {checkout_variant(f"{i:032x}") for i in range(50)} == set(VARIANTS)


# ---------------------------------------------------------------- the flag on the span


@pytest.fixture
def instrumented():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = build_app(PLANS, seed=1)
    instrument(app, tracer_provider=provider, pseudonym_key=PSEUDONYM_KEY, environ={})
    yield app, exporter
    provider.shutdown()


def test_each_checkout_carries_one_flag_evaluation_with_the_consumers_variant(instrumented):
    app, exporter = instrumented
    keys = sorted(PLANS)[::3]  # 14 of the 40 (each checkout sleeps like a real one)
    assert {checkout_variant(consumer_pseudonym(k, PSEUDONYM_KEY)) for k in keys} == set(VARIANTS)
    answers = _requests(app, [(k, "/v2/orders", _order("SKU-12")) for k in keys])
    assert [r.status_code for r in answers] == [201] * len(keys)
    servers = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert len(servers) == len(keys)
    for span in servers:
        consumer = span.attributes["apiusage.consumer.id"]
        (event,) = [e for e in span.events if e.name == "feature_flag.evaluation"]
        assert dict(event.attributes) == {
            "feature_flag.key": FLAG,
            "feature_flag.result.variant": checkout_variant(consumer),
            "feature_flag.result.value": "true" if checkout_variant(consumer) == "treatment" else "false",
            "feature_flag.result.reason": "split",
            # the hook copies the targeting key: the pseudonym the span already carries
            "feature_flag.context.id": consumer,
            "feature_flag.provider.name": "In-Memory Provider",
        }
    text = repr([(s.attributes, [e.attributes for e in s.events]) for s in exporter.get_finished_spans()])
    assert not any(key in text for key in keys), "a raw API key reached a span"


def test_the_treatment_turns_away_discontinued_skus_and_validation_errors_count_in_both(instrumented):
    app, exporter = instrumented
    treated, control = "demo-pro-02", "demo-free-02"
    gone, kept = f"SKU-{DISCONTINUED_FROM}", f"SKU-{DISCONTINUED_FROM - 1}"
    calls = [
        (treated, "/v2/orders", _order("SKU-1", gone)),
        (treated, "/v2/orders", _order("SKU-1", kept)),
        (control, "/v2/orders", _order("SKU-1", gone)),
        (treated, "/v2/orders", {"lines": []}),
        (control, "/v2/orders", {"lines": []}),
        (treated, "/v1/orders", _order(gone)),  # the v1 checkout has no experiment
    ]
    answers = _requests(app, calls)
    assert [r.status_code for r in answers] == [409, 201, 201, 422, 422, 201]
    assert answers[0].json() == {"detail": f"{gone} is discontinued"}
    variants = [
        (
            s.name,
            [e.attributes["feature_flag.result.variant"] for e in s.events if e.name.startswith("feature")],
        )
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.SERVER
    ]
    assert variants == [
        ("POST /v2/orders", ["treatment"]),
        ("POST /v2/orders", ["treatment"]),
        ("POST /v2/orders", ["control"]),
        ("POST /v2/orders", ["treatment"]),  # evaluated before the body is validated
        ("POST /v2/orders", ["control"]),
        ("POST /v1/orders", []),
    ]


def test_without_a_key_there_is_no_evaluation(instrumented):
    app, exporter = instrumented
    assert [r.status_code for r in _requests(app, [("", "/v2/orders", _order("SKU-1"))])] == [401]
    assert all(not s.events for s in exporter.get_finished_spans())


# ---------------------------------------------------------------- releases


@pytest.mark.parametrize(
    "attributes, version",
    [
        ("", "1.4.2"),
        ("cloud.region=eu-west-1", "1.4.2"),
        ("cloud.region=eu-west-1,service.version=1.5.0", "1.5.0"),
        (" service.version = 1.5.0 ", "1.5.0"),
        ("service.version=1.4.2,service.version=1.5.0", "1.5.0"),  # the last wins, as in the SDK
        ("service.version=2%2E0", "2.0"),
        ("service.version=", "1.4.2"),
        ("garbage,,=,service.version", "1.4.2"),
    ],
)
def test_the_service_reads_its_release_from_the_resource_attributes(attributes, version):
    assert service_version({"OTEL_RESOURCE_ATTRIBUTES": attributes}) == version


def test_release_environment_adds_the_version_to_the_design_resource():
    assert release_environment("1.5.0")["OTEL_RESOURCE_ATTRIBUTES"] == (
        "cloud.region=eu-west-1,service.version=1.5.0"
    )
    assert RELEASES == ("1.4.2", "1.5.0")


@pytest.mark.parametrize(
    "version, prefix", [("1.4.2", "INV-99"), ("1.5.0", "INV-9"), ("1.10.1", "INV-9"), ("dev", "INV-99")]
)
def test_from_1_5_0_the_ledger_fails_every_invoice_from_inv_9(version, prefix):
    assert ledger_prefix(version) == prefix


@pytest.mark.parametrize("version, statuses", [("1.4.2", [200, 200, 500]), ("1.5.0", [200, 500, 500])])
def test_release_1_5_0_answers_more_invoices_with_500(monkeypatch, version, statuses):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"cloud.region=eu-west-1,service.version={version}")
    app = build_app(PLANS, seed=1)
    paths = ["/v2/invoices/INV-1234", "/v2/invoices/INV-9386", "/v2/invoices/INV-9912"]
    answers = _requests(app, [("demo-pro-02", p, None) for p in paths])
    assert [r.status_code for r in answers] == statuses
    health = _requests(app, [("", "/healthz", None)])[0].json()
    assert health["version"] == version


# ---------------------------------------------------------------- the experiments file


def test_the_demo_experiments_file_names_the_apps_flag_and_route():
    (experiment,) = load_experiments(EXPERIMENTS)
    assert (experiment.name, experiment.service, experiment.flag) == ("new-checkout", "orders-api", FLAG)
    assert experiment.variants == VARIANTS and experiment.control == "control"
    assert dict(experiment.split) == {"control": 0.5, "treatment": 0.5}
    assert experiment.metrics == ("client_error_ratio", "error_ratio", "latency_p95")
    assert experiment.segment.matches("POST", "/v2/orders", "free", "shop-sdk-js")
    assert not experiment.segment.matches("POST", "/v1/orders", "free", "shop-sdk-js")
    assert (experiment.minimum_detectable_effect, experiment.alpha, experiment.planned_days) == (
        0.2,
        0.05,
        14,
    )


def test_the_run_gets_a_copy_that_starts_on_the_day_of_the_run(tmp_path):
    target = write_experiments(tmp_path, dt.date(2027, 3, 4))
    assert target == tmp_path / "experiments.yaml"
    (experiment,) = load_experiments(target)
    assert experiment.start == dt.date(2027, 3, 4)
    assert experiment.flag == FLAG and experiment.planned_days == 14
    # A reused --dir keeps its own copy (and its start).
    assert write_experiments(tmp_path, dt.date(2027, 5, 6)) == target
    assert load_experiments(target).experiments["new-checkout"].start == dt.date(2027, 3, 4)


def test_a_broken_copy_in_a_reused_dir_is_named(tmp_path):
    data = yaml.safe_load(EXPERIMENTS.read_text())
    data["experiments"]["new-checkout"]["control"] = "nobody"
    (tmp_path / "experiments.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(DemoError) as caught:
        write_experiments(tmp_path, dt.date(2027, 3, 4))
    message = str(caught.value)
    assert message.startswith("the experiments file cannot be used: ")
    assert str(tmp_path / "experiments.yaml") in message and "new-checkout.control" in message


# ---------------------------------------------------------------- the live summary


def _scrape(c2: int, t2: int, old: int, new: int) -> str:
    svc = 'service="orders-api"'
    exp = f'{svc},experiment="new-checkout"'
    release = 'method="GET",route="/v2/orders",status_class="2xx"'
    return "".join(
        f"{line}\n"
        for line in (
            f'api_experiment_requests_total{{{exp},variant="control",status_class="2xx"}} {c2}',
            f'api_experiment_requests_total{{{exp},variant="control",status_class="4xx"}} 5',
            f'api_experiment_requests_total{{{exp},variant="treatment",status_class="2xx"}} {t2}',
            f'api_experiment_consumers{{{exp},variant="control"}} 12',
            f'api_experiment_consumers{{{exp},variant="treatment"}} 9',
            f'api_release_requests_total{{{svc},version="1.4.2",{release}}} {old}',
            f'api_release_requests_total{{{svc},version="1.5.0",{release}}} {new}',
            f'api_release_rank{{{svc},version="1.5.0"}} 0',
            f'api_release_rank{{{svc},version="1.4.2"}} 1',
        )
    )


def test_the_summary_shows_the_experiments_variants_and_the_releases_share():
    summary = Summary("http://unused", None)
    first = summary.line(parse(_scrape(100, 90, 300, 100), at=0.0), None)
    third = first.splitlines()[-1]
    assert third == (
        "         | experiment new-checkout: control 105 requests 12 consumers, treatment 90 requests "
        "9 consumers | releases (share of requests now): 1.5.0 25%, 1.4.2 75%"
    )
    # Later readings: the share of what arrived since the last one.
    later = summary.line(parse(_scrape(110, 95, 310, 190), at=5.0), None)
    assert later.splitlines()[-1].endswith("releases (share of requests now): 1.5.0 90%, 1.4.2 10%")
    assert "control 115 requests 12 consumers, treatment 95 requests 9 consumers" in later


def test_without_experiments_or_releases_the_summary_has_no_third_line():
    line = Summary("http://unused", None).line(parse("api_new_consumers_total 3\n", at=0.0), None)
    assert len(line.splitlines()) == 1
