"""Run inside the instrumentation-only venv by test_wheel.py: instrument a FastAPI app, call it
in-process, print the server span's attributes and which processor modules import, as JSON."""

from __future__ import annotations

import asyncio
import importlib.util
import json

import httpx
from apiusage.instrumentation import instrument
from fastapi import FastAPI
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

app = FastAPI()


@app.get("/v1/orders/{order_id}")
def order(order_id: int) -> dict[str, int]:
    return {"id": order_id}


exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
instrument(app, pseudonym_key="wheel-test-pseudonym-key-0123456789", tracer_provider=provider)


async def call() -> int:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://orders.test") as client:
        answer = await client.get(
            "/v1/orders/7", headers={"X-API-Key": "k-live-1", "User-Agent": "acme-sdk/1.2.3"}
        )
    return answer.status_code


status = asyncio.run(call())
servers = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
print(
    json.dumps(
        {
            "status": status,
            "server_spans": [dict(s.attributes or {}) for s in servers],
            "importable": {
                name: importlib.util.find_spec(name) is not None
                for name in (
                    "prometheus_client",
                    "uvicorn",
                    "httptools",
                    "markdown_it",
                    "grpc_status",
                    "fastapi",
                )
            },
        }
    )
)
