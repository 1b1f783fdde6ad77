"""A real FastAPI app under the real instrumentation: the exact apiusage.* attributes per resolver path."""

from __future__ import annotations

import pytest
from apiusage.instrumentation import (
    ApiKeyHeader,
    BearerSubject,
    PlanTierMapping,
    RequestState,
    instrument,
    load_catalog,
)
from instr_support import KEY, SERVICE, jwt, pseudonym
from orders_app import build_app


def base(**extra: object) -> dict:
    attrs = {
        "apiusage.schema_version": 2,
        "apiusage.consumer.plan_tier": "unknown",
        "apiusage.endpoint.deprecated": False,
    }
    attrs.update(extra)
    return attrs


def test_api_key_header_default_resolver(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    client = client_for(app)

    headers = {"X-API-Key": "sk_live_abc", "User-Agent": "acme-sdk/2.4.1 (linux)"}
    r = client.get("/v1/orders/17", headers=headers)

    assert r.status_code == 200
    assert spans.apiusage() == base(
        **{
            "apiusage.consumer.id": pseudonym("sk_live_abc"),
            "apiusage.client.name": "acme-sdk",
            "apiusage.client.version": "2.4.1",
            "apiusage.api.version": "v1",
            "apiusage.feature": "orders",
        }
    )


def test_pseudonym_is_stable_across_instrumented_apps_sharing_the_key(spans, client_for):
    first, second = build_app(), build_app()
    instrument(first, tracer_provider=spans.provider, pseudonym_key=KEY)
    instrument(second, tracer_provider=spans.provider, pseudonym_key=KEY)
    client_for(first).get("/v1/orders/1", headers={"X-API-Key": "k-1"})
    one = spans.apiusage()["apiusage.consumer.id"]
    client_for(second).get("/v1/orders/1", headers={"X-API-Key": "k-1"})
    two = spans.apiusage()["apiusage.consumer.id"]
    assert one == two == pseudonym("k-1")
    assert pseudonym("k-1", "another-key-0123456789") != one


def test_sdk_headers_win_over_user_agent_and_custom_header_names(spans, client_for):
    app = build_app()
    instrument(
        app,
        tracer_provider=spans.provider,
        pseudonym_key=KEY,
        client_name_header="X-SDK",
        client_version_header="X-SDK-Version",
    )
    client_for(app).get(
        "/v1/orders/1",
        headers={"X-SDK": "orders-python", "X-SDK-Version": "3.0.0", "User-Agent": "curl/8.5.0"},
    )
    attrs = spans.apiusage()
    assert (attrs["apiusage.client.name"], attrs["apiusage.client.version"]) == ("orders-python", "3.0.0")
    assert "apiusage.consumer.id" not in attrs  # no API key sent


def test_no_client_information_means_no_client_attributes(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    client_for(app).get("/v1/orders/1", headers={"User-Agent": ""})
    attrs = spans.apiusage()
    assert "apiusage.client.name" not in attrs and "apiusage.client.version" not in attrs


def test_bearer_jwt_subject(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer="bearer")
    token = jwt({"sub": "user-1234", "plan": "pro"})
    client_for(app).get("/v1/orders/1", headers={"Authorization": f"Bearer {token}"})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("user-1234")


def test_bearer_custom_claim_and_opaque_token(spans, client_for):
    app = build_app()
    instrument(
        app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer=[BearerSubject(claim="client_id")]
    )
    client = client_for(app)
    client.get("/v1/orders/1", headers={"Authorization": "Bearer " + jwt({"sub": "u", "client_id": "svc-9"})})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("svc-9")
    # An opaque token is the credential itself: it is the raw id.
    client.get("/v1/orders/1", headers={"Authorization": "Bearer opaque-token-xyz"})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("opaque-token-xyz")
    # Basic auth is not a bearer token.
    client.get("/v1/orders/1", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert "apiusage.consumer.id" not in spans.apiusage()


def test_request_state_consumer_and_plan_tier(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer="state")
    client = client_for(app)
    client.get("/v2/me", headers={"Authorization": "Bearer tok-enterprise", "User-Agent": "web/1"})
    assert spans.apiusage() == base(
        **{
            "apiusage.consumer.id": pseudonym("acct-42"),
            "apiusage.consumer.plan_tier": "enterprise",
            "apiusage.client.name": "web",
            "apiusage.client.version": "1",
            "apiusage.api.version": "v2",
            "apiusage.feature": "billing",
        }
    )
    client.get("/v2/me")  # unauthenticated: nothing on request.state
    attrs = spans.apiusage()
    assert "apiusage.consumer.id" not in attrs
    assert attrs["apiusage.consumer.plan_tier"] == "unknown"


def test_user_callables_for_consumer_and_plan_tier(spans, client_for):
    seen = []

    def consumer(request):
        return request.headers.get("x-tenant")

    def plan(request, consumer_id):
        seen.append(consumer_id)
        return {"t-1": "gold"}.get(consumer_id)

    app = build_app()
    instrument(
        app,
        tracer_provider=spans.provider,
        pseudonym_key=KEY,
        consumer=consumer,
        plan_tier=plan,
        default_plan_tier="free",
    )
    client = client_for(app)
    client.get("/v1/orders/1", headers={"X-Tenant": "t-1"})
    attrs = spans.apiusage()
    assert (attrs["apiusage.consumer.id"], attrs["apiusage.consumer.plan_tier"]) == (pseudonym("t-1"), "gold")
    client.get("/v1/orders/1", headers={"X-Tenant": "t-2"})
    assert spans.apiusage()["apiusage.consumer.plan_tier"] == "free"
    assert seen == ["t-1", "t-2"]  # plan resolvers get the raw id, in-process only


def test_resolvers_are_tried_in_order(spans, client_for):
    app = build_app()
    instrument(
        app,
        tracer_provider=spans.provider,
        pseudonym_key=KEY,
        consumer=[ApiKeyHeader("X-Key"), RequestState("consumer_id")],
    )
    client = client_for(app)
    client.get("/v2/me", headers={"X-Key": "key-1", "Authorization": "Bearer tok-free"})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("key-1")
    client.get("/v2/me", headers={"Authorization": "Bearer tok-free"})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("acct-7")


def test_a_raising_resolver_does_not_fail_the_request(spans, client_for):
    def broken(request):
        raise KeyError("oops")

    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, consumer=[broken, ApiKeyHeader()])
    r = client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k"})
    assert r.status_code == 200
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("k")


def test_plan_tier_mapping_file_by_raw_or_pseudonymous_id(spans, client_for, tmp_path):
    tiers = tmp_path / "tiers.yaml"
    tiers.write_text(
        f"default: free\nconsumers:\n  sk_enterprise: enterprise\n  {pseudonym('sk_pro')}: pro\n"
    )
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, plan_tier=tiers)
    client = client_for(app)
    got = []
    for key in ("sk_enterprise", "sk_pro", "sk_other"):
        client.get("/v1/orders/1", headers={"X-API-Key": key})
        got.append(spans.apiusage()["apiusage.consumer.plan_tier"])
    assert got == ["enterprise", "pro", "free"]


def test_plan_tier_mapping_from_dict(spans, client_for):
    app = build_app()
    instrument(
        app, tracer_provider=spans.provider, pseudonym_key=KEY, plan_tier=PlanTierMapping({"k1": "pro"})
    )
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k1"})
    assert spans.apiusage()["apiusage.consumer.plan_tier"] == "pro"


def test_environment_configures_resolvers(spans, client_for, monkeypatch, tmp_path):
    tiers = tmp_path / "tiers.json"
    tiers.write_text('{"consumers": {"acct-7": "starter"}}')
    monkeypatch.setenv("APIUSAGE_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("APIUSAGE_CONSUMER_RESOLVER", "header,state")
    monkeypatch.setenv("APIUSAGE_CONSUMER_HEADER", "X-Customer-Key")
    monkeypatch.setenv("APIUSAGE_PLAN_TIER_RESOLVER", "mapping")
    monkeypatch.setenv("APIUSAGE_PLAN_TIERS", str(tiers))
    monkeypatch.setenv("APIUSAGE_API_VERSION_HEADER", "API-Version")
    app = build_app()
    instrument(app, tracer_provider=spans.provider)
    client = client_for(app)
    client.get("/v2/me", headers={"Authorization": "Bearer tok-free", "API-Version": "2026-01-01"})
    attrs = spans.apiusage()
    assert attrs["apiusage.consumer.id"] == pseudonym("acct-7")
    assert attrs["apiusage.consumer.plan_tier"] == "starter"  # state resolver not enabled for tiers
    assert attrs["apiusage.api.version"] == "2026-01-01"
    client.get("/v1/orders/1", headers={"X-Customer-Key": "ck-1", "X-API-Key": "ignored"})
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("ck-1")


def test_api_version_from_path_header_or_config(spans, client_for):
    app = build_app()
    instrument(
        app,
        tracer_provider=spans.provider,
        pseudonym_key=KEY,
        api_version="2025-06",
        api_version_header="X-API-Version",
    )
    client = client_for(app)
    client.get("/v2/invoices/inv-1")
    assert spans.apiusage()["apiusage.api.version"] == "v2"
    client.get("/internal/hidden")
    assert spans.apiusage()["apiusage.api.version"] == "2025-06"
    client.get("/internal/hidden", headers={"X-API-Version": "2026-01"})
    assert spans.apiusage()["apiusage.api.version"] == "2026-01"


def test_feature_from_tags_openapi_extra_and_catalog(spans, client_for, tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "services:\n"
        f"  {SERVICE}:\n"
        "    endpoints:\n"
        "      - {method: GET, route: '/v2/invoices/{invoice_id}', feature: invoicing}\n"
    )
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, catalog=catalog)
    client = client_for(app)
    features = []
    for method, path in (
        ("GET", "/v1/orders/1"),
        ("POST", "/v2/orders"),
        ("GET", "/v2/invoices/1"),
        ("GET", "/internal/hidden"),
        ("GET", "/v1/legacy/report"),
    ):
        client.request(method, path)
        features.append(spans.apiusage().get("apiusage.feature"))
    # tags; openapi_extra x-feature beats tags; catalog beats tags; hidden route's own tags; none
    assert features == ["orders", "checkout", "invoicing", "ops", None]


def test_feature_sources_are_configurable(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, feature_sources=("tags",))
    client_for(app).post("/v2/orders")
    assert spans.apiusage()["apiusage.feature"] == "orders"


def test_deprecated_flag_from_fastapi_and_catalog(spans, client_for, tmp_path):
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(
        "services:\n"
        f"  {SERVICE}:\n"
        "    endpoints:\n"
        "      - {method: DELETE, route: '/v1/orders/{order_id}', deprecated: 2026-09-01}\n"
    )
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, catalog=load_catalog(catalog))
    client = client_for(app)
    flags = []
    for method, path in (
        ("DELETE", "/v1/orders/3"),
        ("GET", "/v1/orders/3"),
        ("GET", "/v1/legacy/report"),
        ("GET", "/internal/hidden"),
        ("GET", "/nope"),
    ):
        client.request(method, path)
        flags.append(spans.apiusage()["apiusage.endpoint.deprecated"])
    assert flags == [True, False, True, True, False]


def test_errors_and_unmatched_routes_are_still_enriched(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    client = client_for(app)
    assert client.get("/v1/boom", headers={"X-API-Key": "k"}).status_code == 500
    assert spans.apiusage() == base(
        **{
            "apiusage.consumer.id": pseudonym("k"),
            "apiusage.api.version": "v1",
            "apiusage.client.name": "testclient",
        }
    )
    assert client.get("/v9/unknown").status_code == 404
    assert spans.apiusage() == base(**{"apiusage.api.version": "v9", "apiusage.client.name": "testclient"})


def test_consumer_resolution_off_needs_no_key(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, consumer="none")
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "sk_live_abc"})
    attrs = spans.apiusage()
    assert "apiusage.consumer.id" not in attrs
    assert "sk_live_abc" not in spans.dump()


def test_reuses_an_already_instrumented_app_and_does_not_double_enrich(spans, client_for):
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = build_app()
    FastAPIInstrumentor.instrument_app(app, tracer_provider=spans.provider)
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    client_for(app).get("/v1/orders/1", headers={"X-API-Key": "k"})
    assert len(spans.server()) == 1
    assert spans.apiusage()["apiusage.consumer.id"] == pseudonym("k")


@pytest.mark.parametrize("sampled", [False])
def test_unsampled_requests_still_get_deprecation_headers(client_for, sampled):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    app = build_app()
    instrument(app, tracer_provider=TracerProvider(sampler=ALWAYS_OFF), pseudonym_key=KEY)
    r = client_for(app).get("/v1/orders/5/items")
    assert r.headers["deprecation"] == "@1772323200"
    assert r.headers["link"] == (
        '</v2/orders/5/lines>; rel="successor-version", '
        '<https://docs.example.com/items-to-lines>; rel="deprecation"'
    )
