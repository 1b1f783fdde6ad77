"""Fixtures for the instrumentation tests: a real SDK with an in-memory exporter, real apps."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from instr_support import Client, Spans
from opentelemetry._logs import get_logger_provider, set_logger_provider
from opentelemetry.instrumentation._semconv import _OpenTelemetrySemanticConventionStability
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource


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


class _Forward(LogRecordProcessor):
    """The global LoggerProvider's one processor: forwards to what the current test attached."""

    def __init__(self) -> None:
        self.targets: list[LogRecordProcessor] = []

    def on_emit(self, log_record: Any) -> None:
        for target in list(self.targets):
            target.on_emit(log_record)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return all(target.force_flush(timeout_millis) for target in list(self.targets))


_FORWARD: list[_Forward] = []


def global_log_forward() -> _Forward:
    """The forwarder on the process's global LoggerProvider (set once: OpenTelemetry allows one)."""
    if not _FORWARD:
        provider = get_logger_provider()
        if not isinstance(provider, LoggerProvider):
            provider = LoggerProvider(resource=Resource.create({"service.name": "orders-api"}))
            set_logger_provider(provider)
        forward = _Forward()
        provider.add_log_record_processor(forward)
        _FORWARD.append(forward)
    return _FORWARD[0]


@pytest.fixture
def logs() -> Iterator[InMemoryLogRecordExporter]:
    """Log records emitted through the global LoggerProvider during the test, in memory."""
    exporter = InMemoryLogRecordExporter()
    processor = SimpleLogRecordProcessor(exporter)
    forward = global_log_forward()
    forward.targets.append(processor)
    yield exporter
    forward.targets.remove(processor)
