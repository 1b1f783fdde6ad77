"""A real FastAPI service behind an experiment flag, for the experiment end-to-end tests.

The service evaluates `FLAG` with the real OpenFeature SDK (an InMemoryProvider that puts the
TREATED keys in "treatment") and its OpenTelemetry TracingHook (the feature_flag.evaluation span
event), answers 400 when `fails(key, treated, call number)` says so, and exports its spans over
OTLP/gRPC. `ConsistentSampler` is OpenTelemetry's consistent probability sampling: it keeps a
trace when the 56 random bits of its id reach the rejection threshold and writes that threshold
into tracestate (`ot=th:…`), which is what the processor reads as the span's adjusted count.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import httpx
from apiusage.instrumentation import instrument
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from openfeature import api as openfeature
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

SERVICE = "orders-api"
FLAG = "checkout-v2"
KEYS = [f"sk_live_consumer{i:02d}_0123456789" for i in range(20)]
TREATED = frozenset(KEYS[1::2])

# The experiments file of the flag: 4xx primary, 5xx guardrail, no start (read at the end).
EXPERIMENTS = {
    "version": 1,
    "experiments": {
        FLAG: {
            "service": SERVICE,
            "flag": FLAG,
            "variants": ["control", "treatment"],
            "control": "control",
            "primary": "client_error_ratio",
            "guardrails": ["error_ratio"],
        }
    },
}

_RANDOM_BITS = 56


class ConsistentSampler(Sampler):
    """Keep a trace with probability `1 - threshold / 2**56` (threshold given as up to 14 hex
    digits, as in tracestate) and say so in tracestate; children follow their trace."""

    def __init__(self, threshold_hex: str) -> None:
        self._th = threshold_hex
        self._threshold = int(threshold_hex.ljust(14, "0"), 16)

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        parent = get_current_span(parent_context).get_span_context()
        state = parent.trace_state if parent.is_valid else TraceState()
        if trace_id & ((1 << _RANDOM_BITS) - 1) < self._threshold:
            return SamplingResult(Decision.DROP, None, state)
        state = state.update("ot", f"th:{self._th}") if "ot" in state else state.add("ot", f"th:{self._th}")
        return SamplingResult(Decision.RECORD_AND_SAMPLE, attributes, state)

    def get_description(self) -> str:
        return f"ConsistentSampler{{th:{self._th}}}"


class SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator: the same traces are sampled on every run."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def generate_span_id(self) -> int:
        return self._random.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._random.getrandbits(128) or 1


def flag_service(
    endpoint: str,
    fails: Callable[[str, bool, int], bool],
    *,
    domain: str,
    sampler: Sampler | None = None,
    id_generator: IdGenerator | None = None,
    processors: Sequence[SpanProcessor] = (),
) -> tuple[FastAPI, TracerProvider]:
    """The instrumented service, and its TracerProvider (flush and shut it down after)."""

    def assign(flag: InMemoryFlag, context: EvaluationContext) -> FlagResolutionDetails:
        variant = "treatment" if context.targeting_key in TREATED else "control"
        return FlagResolutionDetails(
            value=flag.variants[variant], variant=variant, reason=Reason.TARGETING_MATCH
        )

    openfeature.set_provider(
        InMemoryProvider(
            {FLAG: InMemoryFlag("control", {"control": False, "treatment": True}, context_evaluator=assign)}
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
        new = client.get_boolean_value(FLAG, False, EvaluationContext(targeting_key=key))
        n = calls[key] = calls.get(key, 0) + 1
        return JSONResponse({"new": new}, status_code=400 if fails(key, new, n) else 200)

    provider = TracerProvider(
        resource=Resource.create({"service.name": SERVICE, "service.version": "1.5.0"}),
        sampler=sampler,
        id_generator=id_generator,
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    for processor in processors:
        provider.add_span_processor(processor)
    instrument(app, tracer_provider=provider, pseudonym_key="e2e-experiments-key-0123456789", environ={})
    return app, provider


async def drive(app: FastAPI, calls: int) -> list[int]:
    """Every key calls `calls` times, round-robin; the status codes in order."""
    statuses = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders") as client:
        for _ in range(calls):
            for key in KEYS:
                response = await client.post("/v2/checkout", headers={"x-api-key": key})
                statuses.append(response.status_code)
    return statuses
