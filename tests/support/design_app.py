"""A small FastAPI service for the API design end-to-end tests (tests/processor/test_e2e_design.py).

Served by ``opentelemetry-instrument uvicorn tests.support.design_app:app`` (from the repository
root), and read by ``apiusage catalog from-openapi --app tests.support.design_app:app``. Every
operation carries ``x-feature`` so that the catalog lists it whatever else it keeps.

* ``GET /items``: optional query parameters ``limit`` (int), ``cursor``, ``expand``, and
  ``include_archived``, which the tests never send (an unused parameter);
* ``POST /items``: a JSON body with required ``name`` and ``quantity`` (int) and optional
  ``tags``, ``meta`` (a free-form object: no declared nested fields), ``password`` (a field
  whose name looks secret) and ``gift``, which the tests never send;
* ``GET /export?size=N``: exactly N bytes, streamed in chunks (no Content-Length);
* ``GET /boom``: an unhandled exception (``BoomError``), so a 500 with ``error.type``;
* ``GET /unavailable``: a 503 answered without an exception;
* ``POST /feedback``: the service's feedback endpoint, calling
  ``apiusage.instrumentation.record_feedback``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

SERVICE = "design-api"
CHUNK = 64 << 10
MAX_EXPORT = 64 << 20


class NewItem(BaseModel):
    name: str
    quantity: int
    tags: list[str] | None = None
    meta: dict[str, str] | None = None
    password: str | None = None
    gift: bool = False


class NewFeedback(BaseModel):
    score: int
    category: str
    route: str | None = None


class BoomError(RuntimeError):
    """Raised by GET /boom and left unhandled."""


async def _chunks(size: int) -> AsyncIterator[bytes]:
    sent = 0
    while sent < size:
        n = min(CHUNK, size - sent)
        yield b"x" * n
        sent += n


def _feature(name: str) -> dict:
    return {"x-feature": name}


def build_app() -> FastAPI:
    app = FastAPI(title=SERVICE, version="1.0.0")

    @app.get("/items", openapi_extra=_feature("items"))
    async def list_items(
        limit: int = 10,
        cursor: str | None = None,
        expand: str | None = None,
        include_archived: bool = False,
    ) -> dict:
        return {"items": [{"id": i} for i in range(min(limit, 3))], "next": None}

    @app.post("/items", status_code=201, openapi_extra=_feature("items"))
    async def create_item(item: NewItem) -> dict:
        return {"id": 1, "quantity": item.quantity}

    @app.get("/export", openapi_extra=_feature("exports"))
    async def export(size: int = Query(ge=0, le=MAX_EXPORT)) -> StreamingResponse:
        return StreamingResponse(_chunks(size), media_type="application/octet-stream")

    @app.get("/boom", openapi_extra=_feature("errors"))
    async def boom() -> dict:
        raise BoomError("the ledger is down")

    @app.get("/unavailable", openapi_extra=_feature("errors"))
    async def unavailable() -> JSONResponse:
        return JSONResponse({"detail": "try later"}, status_code=503)

    @app.post("/feedback", status_code=202, openapi_extra=_feature("feedback"))
    async def feedback(body: NewFeedback) -> dict:
        from apiusage.instrumentation import record_feedback

        record_feedback(body.score, body.category, body.route)
        return {"status": "thanks"}

    return app


app = build_app()
