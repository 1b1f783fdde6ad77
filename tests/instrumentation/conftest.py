"""Fixtures for the instrumentation tests: a real SDK with an in-memory exporter, real apps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from instr_support import Client, Spans
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor

from tests.support.otel_logs import global_log_forward


@pytest.fixture(autouse=True)
def _clean_apiusage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # Tests state their configuration explicitly; the developer's shell must not leak in.
    for name in list(os.environ):
        if name.startswith("APIUSAGE_") or name.startswith("OTEL_INSTRUMENTATION_HTTP_CAPTURE"):
            monkeypatch.delenv(name)


@pytest.fixture
def spans() -> Iterator[Spans]:
    s = Spans()
    yield s
    s.provider.shutdown()


@pytest.fixture
def client_for() -> Iterator[Callable[..., Client]]:
    """Clients for real apps; the client address is a documentation IP that must never leak."""
    clients: list[Client] = []

    def make(app: Any, client_addr: tuple[str, int] = ("203.0.113.7", 50123)) -> Client:
        client = Client(app, client_addr)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def semconv(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str | None], None]]:
    """Switch OTEL_SEMCONV_STABILITY_OPT_IN; OpenTelemetry reads it once per process."""

    def set_mode(mode: str | None) -> None:
        if mode is None:
            monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
        else:
            monkeypatch.setenv("OTEL_SEMCONV_STABILITY_OPT_IN", mode)
        _OpenTelemetrySemanticConventionStability._initialized = False
        _OpenTelemetrySemanticConventionStability._initialize()

    yield set_mode
    monkeypatch.delenv("OTEL_SEMCONV_STABILITY_OPT_IN", raising=False)
    _OpenTelemetrySemanticConventionStability._initialized = False
    _OpenTelemetrySemanticConventionStability._initialize()


@pytest.fixture
def logs() -> Iterator[InMemoryLogRecordExporter]:
    """Log records emitted through the global LoggerProvider during the test, in memory."""
    exporter = InMemoryLogRecordExporter()
    processor = SimpleLogRecordProcessor(exporter)
    forward = global_log_forward()
    forward.targets.append(processor)
    yield exporter
    forward.targets.remove(processor)
