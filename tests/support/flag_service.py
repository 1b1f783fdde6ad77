"""A FastAPI service that evaluates a feature flag with the real OpenFeature SDK and its
OpenTelemetry TracingHook (span events on the request's span), under the project's
instrumentation, exporting over OTLP/gRPC: the producer of experiment exposures in end-to-end
tests. The set-up of tests/experiments/test_experiments_e2e.py, with the answers as a parameter."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import httpx
from apiusage.instrumentation import instrument
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from openfeature import api as openfeature
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

#: (treated, the consumer's API key, its call number from 1) -> the HTTP status to answer
Answer = Callable[[bool, str, int], int]


def flagged_checkout_service(
    endpoint: str,
    service: str,
    flag: str,
    treated: Iterable[str],
    answer: Answer,
    domain: str = "flag-service",
) -> tuple[FastAPI, TracerProvider]:
    """POST /v2/checkout: evaluates `flag` for the caller's x-api-key (the targeting key;
    `treated` keys get variant "treatment", the others "control") and answers `answer(...)`."""
    treated = frozenset(treated)

    def assign(flag_: InMemoryFlag, context: EvaluationContext) -> FlagResolutionDetails:
        variant = "treatment" if context.targeting_key in treated else "control"
        return FlagResolutionDetails(
            value=flag_.variants[variant], variant=variant, reason=Reason.TARGETING_MATCH
        )

    openfeature.set_provider(
        InMemoryProvider(
            {flag: InMemoryFlag("control", {"control": False, "treatment": True}, context_evaluator=assign)}
        ),
        domain=domain,
    )
    client = openfeature.get_client(domain)
    client.add_hooks([TracingHook()])
    calls: dict[str, int] = {}
    app = FastAPI()

    @app.post("/v2/checkout")
    async def checkout(request: Request) -> JSONResponse:
        key = request.headers["x-api-key"]
        new = client.get_boolean_value(flag, False, EvaluationContext(targeting_key=key))
        n = calls[key] = calls.get(key, 0) + 1
        return JSONResponse({"new": new}, status_code=answer(new, key, n))

    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.5.0"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    instrument(app, tracer_provider=provider, pseudonym_key="e2e-flag-service-key-0123456789", environ={})
    return app, provider


async def call_checkout(app: FastAPI, keys: Iterable[str], rounds: int) -> list[int]:
    """`rounds` times, one POST /v2/checkout per key, in order; the statuses answered."""
    statuses = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        for _ in range(rounds):
            for key in keys:
                response = await client.post("/v2/checkout", headers={"x-api-key": key})
                statuses.append(response.status_code)
    return statuses
