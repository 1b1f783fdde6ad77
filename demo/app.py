"""The demo service, ``orders-api``: a small but realistic versioned API.

Serve it under zero-code instrumentation (the apiusage entry points do the rest)::

    opentelemetry-instrument uvicorn apiusage.demo.app:app

What it offers the dashboards:

* /v1 and /v2 routes; ``DELETE /v1/orders/{order_id}`` and ``GET /v1/reports/{report_id}``
  are deprecated in the catalog (``catalog.yaml``) with v2 replacements, and
  ``GET /v1/legacy/export`` is deprecated and never called by the traffic generator;
* a feature per route (route tags, and the catalog's ``feature:``);
* API keys in ``X-API-Key``, accepted when listed in the plan mapping (``plans.yaml``, or
  the file named by ``APIUSAGE_PLAN_TIERS``), which also gives each key its plan tier;
  missing or unknown keys get 401, webhooks are not on the free plan (403);
* believable latencies, validation errors (422), missing orders (404) and a capacity limit
  on export creation that answers 503 when a burst exceeds it.

Only FastAPI is needed; nothing here imports OpenTelemetry.
"""

from __future__ import annotations

import asyncio
import collections
import os
import random
import time
from pathlib import Path

import yaml
from apiusage.demo import PLANS, SERVICE_NAME
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request
from pydantic import BaseModel, Field

# Export creation capacity: at most this many per second, beyond that 503.
EXPORTS_PER_SECOND = 8
# Orders with ids above this do not exist (404).
MAX_ORDER_ID = 100_000


def load_plans(path: str | os.PathLike | None = None) -> dict[str, str]:
    """API key -> plan tier, from a plan-tier mapping file (``consumers:`` section)."""
    source = Path(path or os.environ.get("APIUSAGE_PLAN_TIERS") or PLANS)
    data = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    consumers = data.get("consumers") or {}
    if not isinstance(consumers, dict):
        raise ValueError(f"{source}: consumers must be a mapping of API key to plan tier")
    return {str(key): str(tier) for key, tier in consumers.items()}


class OrderLine(BaseModel):
    sku: str = Field(min_length=1, max_length=32)
    quantity: int = Field(ge=1, le=1000)


class NewOrder(BaseModel):
    lines: list[OrderLine] = Field(min_length=1, max_length=50)


class NewExport(BaseModel):
    kind: str = Field(pattern="^(orders|invoices)$")
    since: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")


class NewWebhook(BaseModel):
    url: str = Field(pattern="^https://")
    events: list[str] = Field(min_length=1)


class Capacity:
    """A sliding one-second window: how many calls fit in it."""

    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self.calls: collections.deque[float] = collections.deque()

    def take(self) -> bool:
        now = time.monotonic()
        while self.calls and now - self.calls[0] > 1.0:
            self.calls.popleft()
        if len(self.calls) >= self.per_second:
            return False
        self.calls.append(now)
        return True


async def work(base: float, rng: random.Random) -> None:
    """Sleep like a handler that calls a database: log-normal around `base`, rare slow outliers."""
    delay = base * rng.lognormvariate(0, 0.35)
    if rng.random() < 0.01:
        delay *= 8
    await asyncio.sleep(min(delay, 3.0))


def build_app(plans: dict[str, str] | None = None, *, seed: int | None = None) -> FastAPI:
    """A fresh demo app; `plans` (API key -> tier) defaults to the plan mapping file."""
    keys = load_plans() if plans is None else dict(plans)
    rng = random.Random(seed)
    exports = Capacity(EXPORTS_PER_SECOND)
    app = FastAPI(
        title=SERVICE_NAME,
        version="2.3.0",
        description="Demo orders API for apiusage: versioned routes, a deprecated "
        "endpoint with a replacement, plan tiers.",
    )

    def authenticate(
        request: Request, x_api_key: str | None = Header(default=None, include_in_schema=False)
    ) -> str:
        """The caller's plan tier; 401 without a known key."""
        if not x_api_key or x_api_key not in keys:
            raise HTTPException(
                401, "missing or unknown API key", headers={"WWW-Authenticate": 'ApiKey header="X-API-Key"'}
            )
        request.state.plan_tier = keys[x_api_key]
        return keys[x_api_key]

    def order(order_id: int) -> dict:
        if order_id > MAX_ORDER_ID:
            raise HTTPException(404, f"order {order_id} not found")
        return {
            "id": order_id,
            "status": rng.choice(["open", "paid", "shipped"]),
            "total": round(rng.uniform(5, 500), 2),
        }

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v2/status", tags=["status"])
    async def status() -> dict:
        """Public: no API key, so its spans carry no consumer."""
        return {"status": "ok", "versions": ["v1", "v2"]}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authenticate)])

    @v1.get("/orders", tags=["orders"])
    async def list_orders_v1(limit: int = 20) -> dict:
        await work(0.02, rng)
        return {"orders": [order(i) for i in range(1, min(limit, 50) + 1)]}

    @v1.get("/orders/{order_id}", tags=["orders"])
    async def get_order_v1(order_id: int) -> dict:
        await work(0.01, rng)
        return order(order_id)

    @v1.post("/orders", tags=["checkout"], status_code=201)
    async def create_order_v1(body: NewOrder) -> dict:
        await work(0.04, rng)
        return {"id": rng.randint(1, MAX_ORDER_ID), "lines": len(body.lines)}

    @v1.delete("/orders/{order_id}", tags=["orders"])
    async def delete_order_v1(order_id: int) -> dict:
        """Deprecated (catalog): use DELETE /v2/orders/{order_id}."""
        await work(0.02, rng)
        order(order_id)
        return {"deleted": order_id}

    @v1.get("/reports/{report_id}", tags=["exports"])
    async def get_report_v1(report_id: int) -> dict:
        """Deprecated (catalog): create an export with POST /v2/exports instead."""
        await work(0.15, rng)
        return {"id": report_id, "rows": rng.randint(0, 1000)}

    @v1.get("/legacy/export", tags=["exports"])
    async def legacy_export() -> dict:
        """Deprecated (catalog) and sunset soon; nobody should call it any more."""
        await work(0.3, rng)
        return {"rows": []}

    v2 = APIRouter(prefix="/v2", dependencies=[Depends(authenticate)])

    @v2.get("/orders", tags=["orders"])
    async def list_orders(limit: int = 20, cursor: str | None = None) -> dict:
        await work(0.015, rng)
        return {"orders": [order(i) for i in range(1, min(limit, 50) + 1)], "next": None}

    @v2.get("/orders/{order_id}", tags=["orders"])
    async def get_order(order_id: int) -> dict:
        await work(0.008, rng)
        return order(order_id)

    @v2.post("/orders", tags=["checkout"], status_code=201)
    async def create_order(body: NewOrder) -> dict:
        await work(0.035, rng)
        return {"id": rng.randint(1, MAX_ORDER_ID), "lines": len(body.lines)}

    @v2.delete("/orders/{order_id}", tags=["orders"], status_code=200)
    async def delete_order(order_id: int) -> dict:
        await work(0.015, rng)
        order(order_id)
        return {"deleted": order_id}

    @v2.get("/invoices/{invoice_id}", tags=["billing"])
    async def get_invoice(invoice_id: str) -> dict:
        await work(0.025, rng)
        return {"id": invoice_id, "amount": round(rng.uniform(10, 5000), 2)}

    @v2.get("/search", tags=["search"])
    async def search(q: str = "", limit: int = 10) -> dict:
        if not q:
            raise HTTPException(400, "q is required")
        await work(0.08, rng)
        return {"hits": rng.randint(0, limit)}

    @v2.post("/exports", tags=["exports"], status_code=202)
    async def create_export(body: NewExport) -> dict:
        if not exports.take():
            raise HTTPException(503, "export capacity exhausted, retry later", headers={"Retry-After": "1"})
        await work(0.12, rng)
        return {"id": rng.randint(1, MAX_ORDER_ID), "kind": body.kind, "state": "queued"}

    @v2.get("/exports/{export_id}", tags=["exports"])
    async def get_export(export_id: int) -> dict:
        await work(0.02, rng)
        return {"id": export_id, "state": rng.choice(["queued", "running", "done"])}

    @v2.post("/webhooks", tags=["webhooks"], status_code=201)
    async def create_webhook(body: NewWebhook, tier: str = Depends(authenticate)) -> dict:
        if tier == "free":
            raise HTTPException(403, "webhooks need the pro or enterprise plan")
        await work(0.03, rng)
        return {"id": rng.randint(1, MAX_ORDER_ID), "events": body.events}

    app.include_router(v1)
    app.include_router(v2)
    return app


app = build_app()
