"""A small but realistic FastAPI service used by the instrumentation tests.

``build_app()`` gives a fresh app; ``app`` is the module-level one that
``opentelemetry-instrument uvicorn orders_app:app`` serves in the zero-code test.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request, Response

# Known accounts of the fake auth dependency: bearer token -> (account, plan).
ACCOUNTS = {"tok-enterprise": ("acct-42", "enterprise"), "tok-free": ("acct-7", "free")}


def authenticate(request: Request) -> None:
    """What a service's own auth does: put the caller on request.state."""
    header = request.headers.get("authorization", "")
    token = header.removeprefix("Bearer ").strip()
    if token in ACCOUNTS:
        request.state.consumer_id, request.state.plan_tier = ACCOUNTS[token]


def build_app() -> FastAPI:
    app = FastAPI(title="orders-api")

    @app.get("/v1/orders/{order_id}", tags=["orders"])
    async def get_order(order_id: int) -> dict:
        return {"id": order_id}

    @app.delete("/v1/orders/{order_id}", tags=["orders"])
    async def delete_order(order_id: int) -> dict:
        return {"deleted": order_id}

    @app.get("/v1/legacy/report", deprecated=True)
    async def legacy_report() -> dict:
        return {"report": []}

    @app.post(
        "/v2/orders",
        tags=["orders"],
        openapi_extra={
            "x-feature": "checkout",
        },
    )
    async def create_order() -> dict:
        return {"id": 1}

    @app.get(
        "/v1/orders/{order_id}/items",
        deprecated=True,
        openapi_extra={
            "x-deprecated-since": "2026-03-01",
            "x-sunset": "2026-12-31",
            "x-replacement": "GET /v2/orders/{order_id}/lines",
            "x-deprecation-link": "https://docs.example.com/items-to-lines",
        },
    )
    async def order_items(order_id: int) -> dict:
        return {"items": []}

    billing = APIRouter(prefix="/v2", tags=["billing"], dependencies=[Depends(authenticate)])

    @billing.get("/invoices/{invoice_id}")
    async def get_invoice(invoice_id: str) -> dict:
        return {"id": invoice_id}

    @billing.get("/me")
    async def me(request: Request) -> dict:
        return {"account": getattr(request.state, "consumer_id", None)}

    app.include_router(billing)

    @app.get("/v1/session")
    async def session(response: Response) -> dict:
        response.set_cookie("session", "SECRET-SESSION-COOKIE")
        return {}

    @app.get("/v1/boom")
    async def boom() -> dict:
        raise RuntimeError("boom")

    @app.get("/internal/hidden", include_in_schema=False, deprecated=True, tags=["ops"])
    async def hidden() -> dict:
        return {}

    @app.get("/v1/own-headers", deprecated=True)
    async def own_headers(response: Response) -> dict:
        response.headers["Deprecation"] = "@1700000000"
        return {}

    return app


app = build_app()
