"""One forwarding processor on the process's global LoggerProvider, shared by every test.

OpenTelemetry lets a process set its global LoggerProvider once, so the tests attach their
own processors to this forwarder instead of replacing the provider."""

from __future__ import annotations

from typing import Any

from opentelemetry._logs import get_logger_provider, set_logger_provider
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
from opentelemetry.sdk.resources import Resource

__all__ = ["global_log_forward"]


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
