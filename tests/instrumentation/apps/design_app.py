"""A FastAPI service for the schema version 2 tests: bodies, validation, streaming, feedback."""

from __future__ import annotations

from apiusage.instrumentation import record_feedback
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel

#: The streaming export's chunks: 1, 2, ..., 300 bytes (45,150 in all).
EXPORT_CHUNKS = [bytes([65 + i % 26]) * i for i in range(1, 301)]
EXPORT_SIZE = sum(map(len, EXPORT_CHUNKS))


class Address(BaseModel):
    city: str
    street: str | None = None


class Customer(BaseModel):
    id: str
    address: Address | None = None


class Item(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    sku: str
    quantity: int
    customer: Customer | None = None
    items: list[Item] = []


class Feedback(BaseModel):
    score: int
    category: str
    route: str | None = None


class Outer:
    class InnerError(Exception):
        """An exception class whose qualified name is not its plain name."""


def authenticate(request: Request) -> None:
    token = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
    if token:
        request.state.consumer_id = f"acct-{token}"


def build_app(own_validation_handler: bool = False) -> FastAPI:
    app = FastAPI(title="design-api")

    if own_validation_handler:

        @app.exception_handler(RequestValidationError)
        async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
            return JSONResponse({"problems": len(exc.errors())}, status_code=400)

    @app.post("/v1/orders")
    async def create_order(order: Order, limit: int | None = None, dry_run: bool = False) -> dict:
        return {"ok": True}

    @app.get("/v1/search")
    async def search(q: str = "", limit: int = 10) -> dict:
        return {"results": []}

    @app.post("/v1/echo")
    async def echo(request: Request) -> Response:
        return Response(await request.body(), media_type="application/octet-stream")

    @app.post("/v1/echo-stream")
    async def echo_stream(request: Request) -> Response:
        parts = [chunk async for chunk in request.stream()]
        return Response(b"".join(parts), media_type="application/octet-stream")

    @app.post("/v1/ignore-body")
    async def ignore_body() -> dict:
        return {}

    @app.get("/v1/export")
    async def export() -> StreamingResponse:
        async def chunks():
            for chunk in EXPORT_CHUNKS:
                yield chunk

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.get("/v1/lying-length")
    async def lying_length() -> Response:
        # A Content-Length that disagrees with the body: the count is what was sent.
        return Response(b"0123456789AB", headers={"content-length": "5"})

    @app.get("/v1/boom")
    async def boom() -> dict:
        raise RuntimeError("boom")

    @app.get("/v1/nested-boom")
    async def nested_boom() -> dict:
        raise Outer.InnerError("nested")

    @app.get("/v1/unavailable")
    async def unavailable() -> JSONResponse:
        return JSONResponse({"error": "try later"}, status_code=503)

    @app.post("/v1/feedback", dependencies=[Depends(authenticate)])
    async def feedback(body: Feedback) -> dict:
        record_feedback(body.score, body.category, body.route)
        return {"thanks": True}

    @app.post("/v1/feedback-sync", dependencies=[Depends(authenticate)])
    def feedback_sync(body: Feedback) -> dict:
        record_feedback(body.score, body.category, body.route)
        return {"thanks": True}

    return app


app = build_app()
