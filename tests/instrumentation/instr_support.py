"""Helpers shared by the instrumentation tests (a unique module name: no clash with other conftests)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

APPS = Path(__file__).parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))
KEY = "test-pseudonym-key-0123456789"
SERVICE = "orders-api"


def need(condition: bool, reason: str) -> None:
    """Skip when a real component is missing; with CI=true that is a failure instead."""
    if condition:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"required component missing: {reason}")
    pytest.skip(reason)


def bin_path(name: str) -> str | None:
    """An executable of this virtualenv, else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else shutil.which(name)


class Spans:
    """A TracerProvider exporting to memory, with helpers to read the server spans."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))

    def all(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def server(self) -> list[ReadableSpan]:
        return [s for s in self.all() if s.kind == SpanKind.SERVER]

    def one_server(self) -> ReadableSpan:
        spans = self.server()
        assert len(spans) == 1, [s.name for s in spans]
        self.exporter.clear()
        return spans[0]

    def apiusage(self) -> dict[str, Any]:
        """The apiusage.* attributes of the single server span since the last call."""
        span = self.one_server()
        return {k: v for k, v in span.attributes.items() if k.startswith("apiusage.")}

    def dump(self) -> str:
        """Everything the exporter would send, as text: names, attributes, events, resource."""
        return "\n".join(s.to_json() for s in self.all())


class Client:
    """A synchronous httpx client driving an ASGI app in-process through httpx.ASGITransport."""

    def __init__(self, app: Any, client_addr: tuple[str, int]) -> None:
        self._loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, client=client_addr, raise_app_exceptions=False)
        self._client = httpx.AsyncClient(transport=transport, base_url="http://testserver")

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        kwargs.setdefault("headers", {})
        kwargs["headers"] = {"User-Agent": "testclient", **kwargs["headers"]}
        return self._loop.run_until_complete(self._client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self._loop.run_until_complete(self._client.aclose())
        self._loop.close()


def jwt(claims: dict[str, Any]) -> str:
    """An unsigned-looking JWT (header.payload.signature) carrying ``claims``."""
    import base64

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'HS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"server exited with {process.returncode}:\n{out}\n{err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"nothing listening on port {port} after {timeout}s")


def stop(process: subprocess.Popen) -> tuple[str, str]:
    if process.poll() is None:
        process.terminate()
        try:
            return process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.communicate()


def pseudonym(raw: str, key: str = KEY) -> str:
    """The documented consumer id: HMAC-SHA256(key, raw id), first 32 hex digits."""
    import hashlib
    import hmac

    return hmac.new(key.encode(), raw.encode(), hashlib.sha256).hexdigest()[:32]
