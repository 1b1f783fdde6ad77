"""From feature-flag evaluations to experiment exposures: the experiment join.

A sink of the worker. A request of a service with experiments (``experiments.yaml``) whose
feature-flag span events (``ApiRequest.flags``) evaluate an experiment's flag makes one
``Exposure``, when the request is in the experiment's segment and the variant is one the file
declares; an undeclared variant is counted (``apiusage_flag_evaluations_total{outcome=
"undeclared_variant"}``), never a new label value.

Evaluations from OTLP log records (``consume_flag_evaluations``) carry the span id of their
request, and either may reach the processor first, in different batches, minutes apart (logs and
traces leave a service through different exporters). So both wait, in two bounded maps with one
TTL: evaluations of experiment flags waiting for their span, and requests of services that have
experiments (in a compact form) waiting for evaluations. An entry past the TTL or pushed out by
the size bound is counted in ``apiusage_experiment_join_dropped_total``. Expiry runs with every
batch and, by the clock, from the worker (``expire_pending``, at least every second even when no
batch comes); what still waits at shutdown is counted as dropped too (``drop_pending``). A request
evaluated for one flag by a span event and a log record (or twice by either) is exposed once: the
first evaluation decides, the others count as ``duplicate``.

Runs on the worker thread only, so the maps need no lock; the exposures go to the exposure sinks
(``consume_exposures``), each failure isolated and counted.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..telemetry import FlagOutcome, PipelineStats
from .flags import Exposure, FlagEvaluation
from .requests import ApiRequest

if TYPE_CHECKING:
    from apiusage.conventions.experiments import Experiment, Experiments

    from ..config import ExperimentJoinConfig

__all__ = ["ExperimentJoin", "ExposureSink"]

_EXPOSURE = FlagOutcome.EXPOSURE.value
_DUPLICATE = FlagOutcome.DUPLICATE.value
_NOT_EXPERIMENT = FlagOutcome.NOT_EXPERIMENT.value
_OUT_OF_SEGMENT = FlagOutcome.OUT_OF_SEGMENT.value
_UNDECLARED = FlagOutcome.UNDECLARED_VARIANT.value
_UNJOINABLE = FlagOutcome.UNJOINABLE.value
_SPAN, _LOG = "span_event", "log"
# Segment answers remembered per (experiment, method, route, plan tier, client); route matching
# parses the template, and the same few combinations recur. Emptied when full.
_MEMO_LIMIT = 65_536

#: A request as it waits for log evaluations: the Exposure fields after service, experiment and
#: variant, with the service first: (service, method, route, status_code, plan_tier, client_name,
#: feature, consumer_id, duration, weight, end_time_ns). Its strings are the request's own.
_Held = tuple[Any, ...]


@runtime_checkable
class ExposureSink(Protocol):
    def consume_exposures(self, exposures: Sequence[Exposure]) -> None: ...


class ExperimentJoin:
    """Joins flag evaluations (span events and log records) to requests, and emits Exposures."""

    def __init__(
        self,
        experiments: Experiments,
        config: ExperimentJoinConfig,
        stats: PipelineStats,
        exposure_sinks: Sequence[ExposureSink] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        #: Where the exposures go, in order; app.py (and the state service) append to it.
        self.exposure_sinks: list[ExposureSink] = list(exposure_sinks)
        self._stats = stats
        self._clock = clock
        self._ttl = float(config.ttl)
        self._max_evaluations = config.max_pending_evaluations
        self._max_requests = config.max_pending_requests
        # service -> flag -> experiment: the services whose requests are looked at at all.
        self._by_service: dict[str, dict[str, Experiment]] = {}
        for e in experiments:
            self._by_service.setdefault(e.service, {})[e.flag] = e
        # (span id, flag) -> (deadline, variant): log evaluations waiting for their request.
        self._evaluations: OrderedDict[tuple[bytes, str], tuple[float, str]] = OrderedDict()
        # span id -> (deadline, names of the experiments already decided (a tuple, or None), _Held):
        # insertion order is arrival order, and the TTL is one, so the oldest entry is always first.
        self._requests: OrderedDict[bytes, tuple[float, tuple[str, ...] | None, _Held]] = OrderedDict()
        self._segment_memo: dict[tuple[str, str, str, str, str], bool] = {}

    def consume(self, requests: Sequence[ApiRequest]) -> None:
        """Span-event evaluations of one batch, and the log evaluations waiting for its spans."""
        now = self._clock()
        self._expire(now)
        outcomes: Counter[tuple[str, str]] = Counter()
        exposures: list[Exposure] = []
        by_service = self._by_service
        waiting = self._evaluations
        held_requests = self._requests
        deadline = now + self._ttl
        for r in requests:
            flags_of = by_service.get(r.service)
            if flags_of is None:
                if r.flags:
                    outcomes[_SPAN, _NOT_EXPERIMENT] += len(r.flags)
                continue
            held: _Held = (
                r.service,
                r.method,
                r.route,
                r.status_code,
                r.plan_tier,
                r.client_name,
                r.feature,
                r.consumer_id,
                r.duration,
                r.weight,
                r.end_time_ns,
            )
            decided: set[str] = set()
            for flag, variant in r.flags or ():
                e = flags_of.get(flag)
                if e is None:
                    outcomes[_SPAN, _NOT_EXPERIMENT] += 1
                    continue
                outcomes[_SPAN, self._decide(e, variant, held, decided, exposures)] += 1
            span_id = r.span_id
            if not span_id:
                continue  # no log record can name it
            if waiting:
                for flag, e in flags_of.items():
                    evaluation = waiting.pop((span_id, flag), None)
                    if evaluation is not None:
                        outcomes[_LOG, self._decide(e, evaluation[1], held, decided, exposures)] += 1
            if span_id in held_requests:  # the same span again (an exporter's retry): it is new
                held_requests.move_to_end(span_id)
            held_requests[span_id] = (deadline, tuple(decided) if decided else None, held)
            if len(held_requests) > self._max_requests:
                held_requests.popitem(last=False)
                self._stats.experiment_join_dropped["requests", "evicted"] += 1
        self._finish(outcomes, exposures)

    def consume_flag_evaluations(self, evaluations: Sequence[FlagEvaluation]) -> None:
        """Log-record evaluations: joined to a held request now, or held until it comes."""
        now = self._clock()
        self._expire(now)
        outcomes: Counter[tuple[str, str]] = Counter()
        exposures: list[Exposure] = []
        by_service = self._by_service
        held_requests = self._requests
        waiting = self._evaluations
        deadline = now + self._ttl
        for ev in evaluations:
            flags_of = by_service.get(ev.service)
            if flags_of is None or ev.flag not in flags_of:
                outcomes[_LOG, _NOT_EXPERIMENT] += 1
                continue
            span_id = ev.span_id
            if not span_id:
                outcomes[_LOG, _UNJOINABLE] += 1
                continue
            entry = held_requests.get(span_id)
            if entry is not None:
                until, decided, held = entry
                # The request's own service decides which experiment the flag belongs to.
                e = by_service.get(held[0], {}).get(ev.flag)
                if e is None:
                    outcomes[_LOG, _NOT_EXPERIMENT] += 1
                    continue
                now_decided = set(decided or ())
                outcomes[_LOG, self._decide(e, ev.variant, held, now_decided, exposures)] += 1
                if len(now_decided) != len(decided or ()):  # keeps its place: same deadline
                    held_requests[span_id] = (until, tuple(now_decided), held)
                continue
            key = (span_id, ev.flag)
            if key in waiting:
                outcomes[_LOG, _DUPLICATE] += 1  # the same flag on the same span, logged twice
                continue
            waiting[key] = (deadline, ev.variant)
            if len(waiting) > self._max_evaluations:
                waiting.popitem(last=False)
                self._stats.experiment_join_dropped["evaluations", "evicted"] += 1
        self._finish(outcomes, exposures)

    def _decide(
        self, e: Experiment, variant: str, held: _Held, decided: set[str], exposures: list[Exposure]
    ) -> str:
        """The outcome of one evaluation of `e` on a request; an exposure is appended."""
        if e.name in decided:
            return _DUPLICATE
        decided.add(e.name)
        if not self._in_segment(e, held):
            return _OUT_OF_SEGMENT
        if variant not in e.variants:
            return _UNDECLARED
        exposures.append(Exposure(held[0], e.name, variant, *held[1:]))
        return _EXPOSURE

    def _in_segment(self, e: Experiment, held: _Held) -> bool:
        segment = e.segment
        if not (segment.plan_tiers or segment.clients or segment.routes):
            return True
        key = (e.name, held[1], held[2], held[4], held[5])
        answer = self._segment_memo.get(key)
        if answer is None:
            answer = segment.matches(held[1], held[2], held[4], held[5])
            if len(self._segment_memo) >= _MEMO_LIMIT:
                self._segment_memo.clear()
            self._segment_memo[key] = answer
        return answer

    def _expire(self, now: float) -> None:
        dropped = self._stats.experiment_join_dropped
        for kind, pending in (("evaluations", self._evaluations), ("requests", self._requests)):
            n = _expire_front(pending, now)
            if n:
                dropped[kind, "expired"] += n

    def expire_pending(self) -> None:
        """Expire by the clock alone (the worker calls it with or without traffic): after traffic
        stops, entries past the TTL still leave, are counted, and free their memory."""
        self._expire(self._clock())
        self._count_pending()

    def drop_pending(self) -> None:
        """At shutdown, once the queue has drained: what still waits can no longer join. Counted
        (``reason="shutdown"``), not silently lost; the held requests were counted as requests
        by the other sinks when they arrived, so no request is lost with them."""
        dropped = self._stats.experiment_join_dropped
        for kind, pending in (("evaluations", self._evaluations), ("requests", self._requests)):
            if pending:
                dropped[kind, "shutdown"] += len(pending)
                pending.clear()
        self._count_pending()

    def _count_pending(self) -> None:
        self._stats.experiment_join_pending["evaluations"] = len(self._evaluations)
        self._stats.experiment_join_pending["requests"] = len(self._requests)

    def _finish(self, outcomes: Counter[tuple[str, str]], exposures: list[Exposure]) -> None:
        stats = self._stats
        stats.flag_evaluations.update(outcomes)
        self._count_pending()
        if not exposures:
            return
        for sink in self.exposure_sinks:
            # Isolated here, not by the worker: its one-by-one retry would join the batch twice.
            try:
                sink.consume_exposures(exposures)
            except Exception as exc:  # noqa: BLE001 - the next sinks must still see them
                stats.processing_error(len(exposures), f"in {type(sink).__name__} (exposures)", exc)

    def pending(self) -> tuple[int, int]:
        """(evaluations waiting for their request, requests held for evaluations)."""
        return len(self._evaluations), len(self._requests)


def _expire_front(pending: OrderedDict[Any, Any], now: float) -> int:
    """Drop the entries whose deadline (item 0) has passed, oldest first; returns how many."""
    n = 0
    while pending:
        if next(iter(pending.values()))[0] > now:
            break
        pending.popitem(last=False)
        n += 1
    return n
