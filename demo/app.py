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
  on export creation that answers 503 when a burst exceeds it;
* for the API design insights: optional query parameters (``limit``, ``cursor``,
  ``expand`` on ``GET /v2/orders``, and ``include_archived``, declared but sent by no
  client), JSON bodies with optional fields (``note``, ``coupon``, ``shipping`` on orders;
  ``format``, ``compress`` on exports), export downloads streamed in chunks and growing
  with the service's uptime (:func:`export_size`), an invoice ledger that fails with an
  exception now and then (a 500 whose ``error.type`` is :class:`LedgerUnavailable`), and
  ``POST /v1/feedback``, the service's own feedback endpoint, which calls
  ``apiusage.instrumentation.record_feedback``;
* an experiment: ``POST /v2/orders`` evaluates the ``new-checkout`` feature flag with the
  OpenFeature SDK, whose OpenTelemetry hook adds a ``feature_flag.evaluation`` event to the
  request's span. Half of the consumers (:func:`checkout_variant`, by a hash of the
  pseudonymous consumer id, so a consumer keeps its variant) get the treatment: a stock check
  that answers 409 for discontinued SKUs (:data:`DISCONTINUED_FROM` and up) and takes a
  little longer. The targeting key is the pseudonymous id (:func:`consumer_pseudonym`, the
  same the instrumentation puts on the span), never the API key: the hook copies it to the
  event as ``feature_flag.context.id``;
* releases: the service reads its ``service.version`` from ``OTEL_RESOURCE_ATTRIBUTES``
  (:func:`service_version`); from 1.5.0 on the invoice ledger client times out on every
  invoice number starting with ``INV-9`` (:func:`ledger_prefix`), so ``GET
  /v2/invoices/{invoice_id}`` answers many more 500s than under 1.4.2.

FastAPI and OpenFeature are needed; the only OpenTelemetry import is the OpenFeature hook's
(the feedback endpoint uses the apiusage instrumentation when it is installed, and answers
501 without it).
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import unquote

import yaml
from apiusage.demo import FLAG, PLANS, PSEUDONYM_KEY, RELEASES, SERVICE_NAME, VARIANTS
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from openfeature import api as openfeature
from openfeature.client import OpenFeatureClient
from openfeature.contrib.hook.opentelemetry import TracingHook
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from pydantic import BaseModel, Field

# Export creation capacity: at most this many per second, beyond that 503.
EXPORTS_PER_SECOND = 8
# Orders with ids above this do not exist (404).
MAX_ORDER_ID = 100_000
# An export download: this many bytes when the service starts, growing by EXPORT_GROWTH
# bytes per hour of uptime (orders pile up), at most EXPORT_MAX_BYTES.
EXPORT_BASE_BYTES = 3 << 20
EXPORT_GROWTH = 3 << 20
EXPORT_MAX_BYTES = 32 << 20
EXPORT_CHUNK = 64 << 10
# Invoices whose number starts with this live in the legacy ledger, which fails (500).
LEGACY_LEDGER_PREFIX = "INV-99"
# From this release on, the new ledger client times out on every invoice starting with this.
LEDGER_REGRESSION = (RELEASES[1], "INV-9")
# The new checkout (treatment) checks stock: SKUs numbered this and up are discontinued (409).
DISCONTINUED_FROM = 391
# Share of consumers in the treatment, and the extra work of its stock check (seconds).
TREATMENT_SHARE = 0.5
STOCK_CHECK = 0.008
FeedbackCategory = Literal["docs", "errors", "performance", "sdk", "pricing"]
FEEDBACK_CATEGORIES: tuple[str, ...] = get_args(FeedbackCategory)


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


class Shipping(BaseModel):
    method: Literal["standard", "express"] = "standard"
    instructions: str | None = Field(default=None, max_length=200)


class NewOrder(BaseModel):
    lines: list[OrderLine] = Field(min_length=1, max_length=50)
    note: str | None = Field(default=None, max_length=500)
    coupon: str | None = Field(default=None, max_length=32)
    shipping: Shipping | None = None


class NewExport(BaseModel):
    kind: str = Field(pattern="^(orders|invoices)$")
    since: str = Field(pattern=r"^\d{4}-\d{2}-\d{2}$")
    format: Literal["csv", "jsonl"] = "csv"
    compress: bool = False


class NewFeedback(BaseModel):
    score: int = Field(ge=1, le=5)
    category: FeedbackCategory
    route: str | None = Field(default=None, max_length=200, pattern=r"^/[\x21-\x7e]*$")
    comment: str | None = Field(default=None, max_length=2000)  # read by people, never recorded


class LedgerUnavailable(RuntimeError):
    """The legacy invoice ledger did not answer: an unhandled exception, so a 500."""


def service_version(environ: Mapping[str, str] | None = None) -> str:
    """The service's release: ``service.version`` of OTEL_RESOURCE_ATTRIBUTES (as the SDK reads it),
    else the first of the demo's releases."""
    raw = (os.environ if environ is None else environ).get("OTEL_RESOURCE_ATTRIBUTES", "")
    version = None
    for item in raw.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == "service.version":
            version = unquote(value.strip())  # the last one wins, as in the SDK
    return version or RELEASES[0]


def _release(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        return ()


def ledger_prefix(version: str) -> str:
    """Invoice numbers whose ledger fails (500) under release `version`."""
    since, prefix = LEDGER_REGRESSION
    return prefix if _release(version) >= _release(since) else LEGACY_LEDGER_PREFIX


def consumer_pseudonym(api_key: str, key: str | bytes | None = None) -> str:
    """The pseudonymous consumer id of an API key: the keyed HMAC the apiusage instrumentation puts
    on the span (``apiusage.consumer.id``), with APIUSAGE_PSEUDONYM_KEY or the demo's key."""
    if key is None:
        key = os.environ.get("APIUSAGE_PSEUDONYM_KEY", "").strip() or PSEUDONYM_KEY
    secret = key.encode("utf-8") if isinstance(key, str) else key
    return hmac.new(secret, api_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


def checkout_variant(consumer_id: str, flag: str = FLAG) -> str:
    """The consumer's variant of `flag`: a hash of flag and id, so it never changes and flags split
    independently; TREATMENT_SHARE of the ids get the treatment."""
    digest = hashlib.sha256(f"{flag}\0{consumer_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return VARIANTS[1] if bucket < TREATMENT_SHARE else VARIANTS[0]


def _assign(flag: InMemoryFlag, context: EvaluationContext) -> FlagResolutionDetails:
    if not context.targeting_key:  # nobody to assign: the flag's default, as any provider would
        return FlagResolutionDetails(
            value=flag.variants[flag.default_variant], variant=flag.default_variant, reason=Reason.DEFAULT
        )
    variant = checkout_variant(context.targeting_key)
    return FlagResolutionDetails(value=flag.variants[variant], variant=variant, reason=Reason.SPLIT)


def flag_client() -> OpenFeatureClient:
    """An OpenFeature client for the demo's flags: an in-process provider (no network), and the
    OpenTelemetry hook that records each evaluation on the current span."""
    domain = SERVICE_NAME
    flags = {
        FLAG: InMemoryFlag(VARIANTS[0], {VARIANTS[0]: False, VARIANTS[1]: True}, context_evaluator=_assign)
    }
    openfeature.set_provider(InMemoryProvider(flags), domain=domain)
    client = openfeature.get_client(domain)
    client.add_hooks([TracingHook()])
    return client


def discontinued(body: NewOrder) -> str | None:
    """The first discontinued SKU of an order, for the new checkout's stock check."""
    for line in body.lines:
        number = line.sku.removeprefix("SKU-")
        if number.isdigit() and int(number) >= DISCONTINUED_FROM:
            return line.sku
    return None


def export_size(uptime: float) -> int:
    """Bytes of an export download after `uptime` seconds of service."""
    return min(EXPORT_BASE_BYTES + int(EXPORT_GROWTH * max(uptime, 0.0) / 3600), EXPORT_MAX_BYTES)


_HEADER = b"order_id,status,total,currency,created_at\n"
_BLOCK = b"".join(
    b"%06d,%s,%07.2f,EUR,2026-11-%02dT%02d:%02d:00Z\n"
    % (i, (b"open", b"paid", b"shipped")[i % 3], (i * 37) % 5000 + 0.5, i % 28 + 1, i % 24, i % 60)
    for i in range(2048)
)


async def export_chunks(size: int) -> AsyncIterator[bytes]:
    """Exactly `size` bytes of CSV, in chunks of EXPORT_CHUNK, yielding to the loop between them."""
    sent = 0
    head = _HEADER[:size]
    if head:
        yield head
        sent = len(head)
    while sent < size:
        n = min(EXPORT_CHUNK, size - sent)
        reps, rest = divmod(n, len(_BLOCK))
        yield _BLOCK * reps + _BLOCK[:rest]
        sent += n
        await asyncio.sleep(0)


def _feedback_recorder() -> Callable[..., None] | None:
    """apiusage.instrumentation.record_feedback, or None when it is not installed."""
    try:
        from apiusage.instrumentation import record_feedback
    except ImportError:
        return None
    return record_feedback


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
    started = time.monotonic()
    record_feedback = _feedback_recorder()
    version = service_version()
    failing_invoices = ledger_prefix(version)
    flags = flag_client()
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
        """Up, and which release (a rolling restart waits for the new one to answer)."""
        return {"status": "ok", "version": version, "pid": os.getpid()}

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

    @v1.post("/feedback", tags=["feedback"], status_code=202)
    async def feedback(body: NewFeedback) -> dict:
        """Developer feedback about the API: the score and category become an OTel event."""
        if record_feedback is None:
            raise HTTPException(
                501, "feedback is not recorded: apiusage.instrumentation.record_feedback is not available"
            )
        try:
            record_feedback(body.score, body.category, body.route)
        except ValueError as exc:  # the instrumentation refuses what it cannot record
            raise HTTPException(422, str(exc)) from None
        return {"status": "thanks"}

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
    async def list_orders(
        limit: int = Query(20, ge=1, le=100),
        cursor: str | None = Query(None, max_length=200),
        expand: str | None = Query(None, pattern="^(lines|customer)(,(lines|customer))?$"),
        include_archived: bool = False,
    ) -> dict:
        await work(0.015, rng)
        orders = [order(i) for i in range(1, min(limit, 50) + 1)]
        if expand and "lines" in expand:
            for o in orders:
                o["lines"] = [{"sku": f"SKU-{o['id'] % 400 + 1}", "quantity": 1}]
        return {"orders": orders, "next": f"c{rng.randint(1, 10**9)}"}

    @v2.get("/orders/{order_id}", tags=["orders"])
    async def get_order(order_id: int) -> dict:
        await work(0.008, rng)
        return order(order_id)

    def new_checkout(request: Request) -> bool:
        """The consumer's `new-checkout` flag. A dependency: it runs (and the evaluation is on the
        span) before the body is validated, so the 422s of both variants count in the experiment."""
        key = request.headers.get("x-api-key", "")  # authenticate() ran first: a known key
        return flags.get_boolean_value(FLAG, False, EvaluationContext(targeting_key=consumer_pseudonym(key)))

    @v2.post("/orders", tags=["checkout"], status_code=201)
    async def create_order(body: NewOrder, treatment: bool = Depends(new_checkout)) -> dict:
        """The checkout; the `new-checkout` experiment's treatment checks stock first."""
        if treatment:
            await work(STOCK_CHECK, rng)
            sku = discontinued(body)
            if sku is not None:
                raise HTTPException(409, f"{sku} is discontinued")
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
        if invoice_id.startswith(failing_invoices):
            raise LedgerUnavailable(f"legacy ledger timed out for {invoice_id}")
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

    @v2.get("/exports/{export_id}/download", tags=["exports"])
    async def download_export(export_id: int) -> StreamingResponse:
        """The export as CSV, streamed: several MB, more the longer the service runs."""
        await work(0.05, rng)
        return StreamingResponse(
            export_chunks(export_size(time.monotonic() - started)),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="export-{export_id}.csv"'},
        )

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
