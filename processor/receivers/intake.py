"""What both receivers do with a decoded body: scan, validate spans, enqueue, decide the answer."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apiusage.conventions.attributes import ATTR_CONSUMER_ID

from ..derive.feedback import EventRecord, extract_feedback, feedback_keys
from ..derive.flags import EvaluationRecord, extract_evaluations
from ..memory import MemoryLimiter
from ..pipeline import SpanQueue
from ..telemetry import ExportOutcome, PipelineStats, RejectReason
from .passthrough import logs_events_in_json, logs_in_protobuf, services_in_json, services_in_protobuf
from .payload import InvalidPayload, PayloadTooLarge
from .scan import ScanError, Scanner, TooManySpans

__all__ = ["Intake", "Outcome", "RPC_CODES"]

_ZERO_TRACE = bytes(16)
_BACKLOG_MESSAGE = (
    "the state store is behind: its backlog of unwritten rows is at "
    "state.max_pending_rows or state.max_pending_bytes; retry later"
)
_ZERO_SPAN = bytes(8)


# The google.rpc code a refusal carries on either transport (the HTTP body's Status, the gRPC
# status): OTLP's INVALID_ARGUMENT, RESOURCE_EXHAUSTED (not retried) and UNAVAILABLE (retried).
RPC_CODES = {
    ExportOutcome.INVALID: 3,  # INVALID_ARGUMENT
    ExportOutcome.TOO_LARGE: 8,  # RESOURCE_EXHAUSTED
    ExportOutcome.UNSUPPORTED: 3,
    ExportOutcome.QUEUE_FULL: 14,  # UNAVAILABLE
    ExportOutcome.MEMORY_LIMIT: 14,
    ExportOutcome.STATE_BACKLOG: 14,
    ExportOutcome.SHUTTING_DOWN: 14,
    ExportOutcome.EVICTED: 14,
    ExportOutcome.NOT_FOUND: 5,  # NOT_FOUND
    ExportOutcome.METHOD: 12,  # UNIMPLEMENTED
    ExportOutcome.LENGTH_REQUIRED: 3,
    ExportOutcome.UNAUTHENTICATED: 16,  # UNAUTHENTICATED
    ExportOutcome.UNAUTHORIZED_SERVICE: 7,  # PERMISSION_DENIED
    ExportOutcome.RECEIVE_TIMEOUT: 4,  # DEADLINE_EXCEEDED
}


@dataclass(frozen=True)
class Outcome:
    """The answer to one export request, independent of transport (`kind`: telemetry.ExportOutcome)."""

    kind: ExportOutcome
    rejected: int = 0
    message: str = ""


class Intake:
    def __init__(
        self,
        scanner: Scanner,
        queue: SpanQueue,
        stats: PipelineStats,
        # Forwarder.forward(body, signal, content_type, gzipped) -> "queued" | "dropped" | "off"
        forward: Callable[..., str] | None = None,
        memory: MemoryLimiter | None = None,
        backlog: Callable[[], bool] | None = None,
        max_spans: int = 0,
        max_label_length: int = 128,
        consumer_attributes: Sequence[str] = (ATTR_CONSUMER_ID,),
    ) -> None:
        self._scanner = scanner
        # Feedback log records: labels bounded as the Deriver bounds span labels, and the consumer
        # read from the same attributes as a span's (processors.usage.attributes.consumer_id).
        self._max_label_length = max_label_length
        self._consumer_attributes = tuple(consumer_attributes)
        self._feedback_keys = feedback_keys(self._consumer_attributes)
        self.max_spans = max_spans  # per request (0: unbounded); the JSON decoder checks it too
        self._queue = queue
        self._stats = stats
        self._forward = forward
        self._memory = memory
        self._backlog = backlog  # True while the state store's unwritten rows are at their limit

    def overloaded(self, transport: str, signal: str = "traces") -> Outcome | None:
        """A retryable refusal while memory is over its soft limit or (traces) the state backlog is
        full (checked before reading bodies). Metrics and logs never reach the state store."""
        if self.over_memory_limit():
            return self.refuse_over_memory(transport)
        if signal == "traces" and self._backlog is not None and self._backlog():
            return self.refuse(transport, ExportOutcome.STATE_BACKLOG, _BACKLOG_MESSAGE)
        return None

    def over_memory_limit(self) -> bool:
        """Whether memory is over its soft limit (the limiter's last reading: cheap to ask often)."""
        return self._memory is not None and self._memory.over

    def memory_room(self) -> int | None:
        """Bytes left under the memory limiter's soft limit, read now (None: no limiter)."""
        return None if self._memory is None else self._memory.room()

    def refuse_over_memory(self, transport: str) -> Outcome:
        """Record and build the retryable refusal for memory over its soft limit."""
        if self._memory is not None:
            self._memory.refusals += 1
        return self.refuse(
            transport, ExportOutcome.MEMORY_LIMIT, "the processor is over its memory limit; retry later"
        )

    def refuse(self, transport: str, kind: ExportOutcome | str, message: str) -> Outcome:
        """Record and build an answer for a body that never reached the scanner."""
        kind = ExportOutcome(kind)  # the HTTP server's own refusals arrive as their names
        self._stats.request(transport, kind)
        return Outcome(kind, message=message)

    def accept(self, body: bytes, transport: str, service: str = "*") -> Outcome:
        """Scan a protobuf ExportTraceServiceRequest body and queue its usable spans.

        `service` is the one service the sender's token may report for ("*": any).
        """
        try:
            resources, spans = self._scanner.scan(body)
        except TooManySpans as exc:
            return self.refuse(
                transport,
                ExportOutcome.TOO_LARGE,
                f"{exc}; send smaller batches (the limit is receivers.otlp.max_spans_per_request)",
            )
        except ScanError as exc:
            return self.refuse(
                transport, ExportOutcome.INVALID, f"cannot decode ExportTraceServiceRequest: {exc}"
            )
        received = len(spans)
        usable = [
            s
            for s in spans
            if len(s[4]) == 16 and len(s[5]) == 8 and s[4] != _ZERO_TRACE and s[5] != _ZERO_SPAN
        ]
        rejected = received - len(usable)
        foreign = 0
        if service != "*":
            allowed = {i for i, r in enumerate(resources) if r[0] == service}
            mine = [s for s in usable if s[0] in allowed]
            foreign, usable = len(usable) - len(mine), mine
        if usable and self._memory is not None and not self._memory.admit(len(body)):
            # Asked again with the batch decoded: the answer at the headers may be tens of ms old,
            # and every body accepted since then is memory it has not seen (memory.py).
            return self.refuse_over_memory(transport)
        if usable and not self._queue.offer(resources, usable):
            if self._queue.closed:
                kind, reason = ExportOutcome.SHUTTING_DOWN, RejectReason.SHUTTING_DOWN
                message = "the processor is shutting down"
            else:
                kind, reason = ExportOutcome.QUEUE_FULL, RejectReason.QUEUE_FULL
                message = "the processing queue is full; retry later"
            self._stats.request(transport, kind, received, received, reason)
            return Outcome(kind, message=message)
        if self._forward is not None and usable and not foreign:
            self._forward(body)  # never blocks: the forwarder drops when its queue is full
        if foreign:
            message = (
                f"{foreign} of {received} spans rejected: their service.name is not "
                f"{service!r}, the only service this token may send for"
            )
            self._stats.request(
                transport,
                ExportOutcome.PARTIAL,
                received,
                foreign + rejected,
                RejectReason.UNAUTHORIZED_SERVICE,
            )
            return Outcome(ExportOutcome.PARTIAL, foreign + rejected, message)
        if rejected:
            message = (
                f"{rejected} of {received} spans rejected: trace_id must be 16 bytes and "
                "span_id 8 bytes, neither all zeros"
            )
            self._stats.request(
                transport, ExportOutcome.PARTIAL, received, rejected, RejectReason.INVALID_SPAN
            )
            return Outcome(ExportOutcome.PARTIAL, rejected, message)
        self._stats.request(transport, ExportOutcome.SUCCESS, received)
        return Outcome(ExportOutcome.SUCCESS)

    def pass_through(
        self,
        signal: str,
        body: bytes,
        transport: str,
        service: str = "*",
        content_type: str = "application/x-protobuf",
        gzipped: bool = False,
        plain: bytes | None = None,
    ) -> Outcome:
        """Hand a metrics or logs export request to the OTLP exporter, unchanged, or answer it.

        `body` is forwarded as received (`content_type`, `gzipped`); `plain` is the same body
        inflated, which is what is checked (framing, and each resource's service.name for a
        service-bound token). Without `exporters.otlp` the request is answered with success and
        counted as `<signal>_not_forwarded`: an SDK must neither retry nor log errors for data the
        processor was never meant to keep.

        The feedback events in a logs request (derive/feedback.py) go to the worker's queue, in
        the room of the spans; when it is full the request is refused retryably and not forwarded.
        So do its feature-flag evaluations (derive/flags.py), in the same room."""
        plain = body if plain is None else plain
        records: list[EventRecord] = []
        flag_records: list[EvaluationRecord] = []
        try:
            if content_type == "application/json":
                # Parsed whatever the token: a body no OTLP/JSON reader takes must be refused here,
                # not answered success and then refused by the backend.
                if signal == "logs":
                    services, records, flag_records = logs_events_in_json(
                        plain, service != "*", feedback_keys=self._feedback_keys
                    )
                else:
                    services = services_in_json(plain, signal, names=service != "*")
            else:
                services = services_in_protobuf(plain, signal, self.max_spans, names=service != "*")
        except PayloadTooLarge as exc:
            return self.refuse(transport, ExportOutcome.TOO_LARGE, str(exc))
        except InvalidPayload as exc:
            return self.refuse(
                transport, ExportOutcome.INVALID, f"cannot decode this {signal} export request: {exc}"
            )
        if service != "*":
            foreign = sum(1 for s in services if s != service)
            if foreign:
                # Not forwarded at all: the backend would store data under another service's name.
                return self.refuse(
                    transport,
                    ExportOutcome.UNAUTHORIZED_SERVICE,
                    f"{foreign} of {len(services)} resources have a service.name other than "
                    f"{service!r}, the only service this token may send for; nothing was forwarded",
                )
        if signal == "logs" and content_type != "application/json":
            try:
                records, flag_records = logs_in_protobuf(plain, feedback_keys=self._feedback_keys)
            except PayloadTooLarge as exc:
                return self.refuse(transport, ExportOutcome.TOO_LARGE, str(exc))
            except InvalidPayload as exc:
                return self.refuse(
                    transport, ExportOutcome.INVALID, f"cannot decode this logs export request: {exc}"
                )
        events, refused = (
            extract_feedback(records, self._max_label_length, self._consumer_attributes)
            if records
            else ([], 0)
        )
        evaluations, invalid = (
            extract_evaluations(flag_records, self._max_label_length) if flag_records else ([], 0)
        )
        # Room for the feedback and evaluations is taken before forwarding and given back if
        # forwarding drops the body: a request the client must retry leaves nothing counted, and
        # one that is queued for the worker was forwarded.
        room = len(events) + len(evaluations)
        reserved = bool(events or refused or evaluations or invalid)
        if events and self._backlog is not None and self._backlog():
            # The consumer store takes feedback too (distinct consumers who gave it): as for spans.
            # Flag evaluations do not refuse a logs body (most of its records are the service's
            # own logs, and most evaluations are of flags no experiment reads): they only join
            # requests, and a request is refused while the store is backlogged.
            return self.refuse(transport, ExportOutcome.STATE_BACKLOG, _BACKLOG_MESSAGE)
        if reserved and not self._queue.reserve(room):
            return self._queue_refusal(transport)
        done = "off" if self._forward is None else self._forward(body, signal, content_type, gzipped)
        if done == "dropped":
            if reserved:
                self._queue.release(room)
            # Counted by the forwarder as dropped; the client is told to retry, as a Collector whose
            # sending queue is full does, since nothing else keeps this data.
            return self.refuse(
                transport,
                ExportOutcome.QUEUE_FULL,
                "the queue of requests to forward (exporters.otlp) is full; retry later",
            )
        if events or refused:
            self._queue.put_feedback(events, refused)
        if evaluations or invalid:
            self._queue.put_flag_evaluations(evaluations, invalid)
        if done == "off":  # no exporters.otlp, or its `signals` leave this one out
            self._stats.request(transport, ExportOutcome(f"{signal}_not_forwarded"))
            return Outcome(ExportOutcome.SUCCESS)
        self._stats.request(transport, ExportOutcome(f"{signal}_forwarded"))
        return Outcome(ExportOutcome.SUCCESS)

    def _queue_refusal(self, transport: str) -> Outcome:
        """Record and build the retryable refusal of a logs request whose feedback finds no room."""
        if self._queue.closed:
            return self.refuse(transport, ExportOutcome.SHUTTING_DOWN, "the processor is shutting down")
        return self.refuse(transport, ExportOutcome.QUEUE_FULL, "the processing queue is full; retry later")
