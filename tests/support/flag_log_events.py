"""Feature-flag evaluations as OTLP log events, for the processor's flag-log tests.

No published OpenFeature hook emits log events yet (openfeature-hooks-opentelemetry adds span
events), so `LogEventHook` is the small one a service would write: in `finally_after` it emits an
OpenTelemetry event (an SDK LogRecord named ``feature_flag.evaluation``) in the current span's
context, through a real SDK Logger. `processor_with_sink` runs a real Processor whose worker also
hands its batches to a test sink that keeps what it receives."""

from __future__ import annotations

import contextlib
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from apiusage.demo.otlp import add_attributes
from openfeature.flag_evaluation import FlagEvaluationDetails
from openfeature.hook import Hook, HookContext, HookHints
from opentelemetry import context as otel_context
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.support.processor import LOOPBACK_CONFIG, RunningProcessor, merge

__all__ = [
    "CONTEXT_ID",
    "KEY",
    "PROVIDER",
    "VARIANT",
    "FlagSink",
    "LogEventHook",
    "flag_record",
    "flag_request",
    "processor_with_sink",
]

EVENT = "feature_flag.evaluation"
KEY, VARIANT = "feature_flag.key", "feature_flag.result.variant"
PROVIDER, CONTEXT_ID = "feature_flag.provider.name", "feature_flag.context.id"


class LogEventHook(Hook):
    """Emits each evaluation as an OTel log event in the current span's context; `emitted` keeps
    (flag key, variant or None, timestamp) of each, for the tests to compare with."""

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self.emitted: list[tuple[str, str | None, int]] = []

    def finally_after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[Any], hints: HookHints
    ) -> None:
        attributes: dict[str, str] = {KEY: details.flag_key}
        if details.variant:
            attributes[VARIANT] = details.variant
        if hook_context.provider_metadata:
            attributes[PROVIDER] = hook_context.provider_metadata.name
        targeting_key = hook_context.evaluation_context.targeting_key
        if targeting_key:
            attributes[CONTEXT_ID] = targeting_key
        now = time.time_ns()
        self._logger.emit(
            event_name=EVENT, attributes=attributes, timestamp=now, context=otel_context.get_current()
        )
        self.emitted.append((details.flag_key, details.variant, now))


class FlagSink:
    """A sink of flag evaluations and feedback that keeps them (the worker thread appends)."""

    def __init__(self) -> None:
        self.evaluations: list[Any] = []
        self.feedback: list[Any] = []
        self._lock = threading.Lock()

    def consume_flag_evaluations(self, evaluations: Sequence[Any]) -> None:
        with self._lock:
            self.evaluations.extend(evaluations)

    def consume_feedback(self, events: Sequence[Any]) -> None:
        with self._lock:
            self.feedback.extend(events)


@contextlib.contextmanager
def processor_with_sink(sink: object, extra_config: dict | None = None) -> Iterator[RunningProcessor]:
    """An in-process Processor on loopback ports whose worker also feeds `sink`."""
    from apiusage.processor.app import Processor
    from apiusage.processor.config import parse_config

    with tempfile.TemporaryDirectory(prefix="flaglogs-state-") as tmp:
        config = merge(LOOPBACK_CONFIG, {"state": {"sqlite": {"path": f"{tmp}/state.db"}}})
        processor = Processor(parse_config(merge(config, extra_config)))
        processor.worker.add_sink(sink)  # type: ignore[arg-type]
        processor.start()
        try:
            urls = processor.urls()
            yield RunningProcessor(
                urls["otlp-grpc"],
                urls["otlp-http"].removesuffix("/v1/traces"),
                urls["metrics"],
                processor=processor,
            )
        finally:
            processor.stop()


def flag_record(
    key: object = "new-checkout",
    variant: object = "on",
    trace_id: bytes = bytes(range(1, 17)),
    span_id: bytes = bytes(range(1, 9)),
    time_ns: int = 1_700_000_000_123_456_789,
    old_style: bool = False,
    **extra: object,
) -> dict:
    """A flag evaluation record (named by event_name, or by the event.name attribute when
    `old_style`); None leaves the key or variant out."""
    attributes = {KEY: key, VARIANT: variant, CONTEXT_ID: "user-42@example.com", **extra}
    if old_style:
        attributes["event.name"] = EVENT
    return {
        "event_name": "" if old_style else EVENT,
        "time": time_ns,
        "trace_id": trace_id,
        "span_id": span_id,
        "attributes": {k: v for k, v in attributes.items() if v is not None},
    }


def flag_request(*resources: tuple[dict, list[dict]]) -> ExportLogsServiceRequest:
    """A request of resources, each (resource attributes, records); a record is a dict with
    optional `event_name`, `time`, `body`, `trace_id`, `span_id` and `attributes`."""
    request = ExportLogsServiceRequest()
    for resource, records in resources:
        rl = request.resource_logs.add()
        add_attributes(rl.resource.attributes, resource)
        scope = rl.scope_logs.add()
        scope.scope.name = "tests.flags"
        for r in records:
            record = scope.log_records.add()
            record.event_name = r.get("event_name", "")
            record.time_unix_nano = r.get("time", 0)
            record.trace_id = r.get("trace_id", b"")
            record.span_id = r.get("span_id", b"")
            if "body" in r:
                record.body.string_value = r["body"]
            add_attributes(record.attributes, r.get("attributes", {}))
    return request
