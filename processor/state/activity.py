"""Consumer activity, deduplicated in memory between flushes: a sink of the derivation stage.

The worker thread calls `consume()` (and `consume_feedback()` for feedback events);
per request it updates two or three dicts, and one or two more per parameter name,
and nothing else, so the hot path never waits on the database.  The flush
thread calls `drain()` every flush interval and writes the rows in one
transaction, then `written()`; when that fails, `restore()` puts them back to
be retried.

The backlog (rows not yet written, drained ones included; consumer, activity and
endpoint rows alike, as `apiusage_state_rows_written_total` counts them) is bounded
in rows and in estimated bytes: at the limit `backlogged()` says so and the receivers
refuse new exports (retryable), so the spans already accepted still fit; rows past twice
the limit are dropped and counted in `rows_dropped`.

Parameter names are bounded per endpoint (service, method, route): the names the catalog declares
for it are always stored, and at most `max_names_per_route` others (first come); further names
are counted in `apiusage_data_quality_issues_total{check="names_not_stored"}`, not stored. The
admitted names live in memory, are seeded from the `parameters` table at start-up (`seed_names`)
and are forgotten with the table's rows by retention (`forget_names`).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..derive.feedback import Feedback
from ..derive.flags import Exposure
from ..derive.requests import ApiRequest
from ..derive.routes import catalog_key
from ..derive.series import sanitize_label_value
from ..telemetry import PipelineStats
from .experiments import ExperimentActivity
from .store import DAY_MS, ActivityBatch, _complete

if TYPE_CHECKING:
    from apiusage.conventions.catalog import Catalog

__all__ = ["ConsumerActivity", "DAY_MS"]

# Estimated bytes per pending row besides its strings: the dict slot, the key tuple, the value
# list and its numbers (measured on CPython 3.11: 250-330 bytes).
_ROW_OVERHEAD = 300
_HARD_FACTOR = 2  # rows are dropped only past twice the limit at which the receivers refuse
#: A release's first (and last) sight is at most this long before the processor received the request.
RELEASE_PAST_SKEW_MS = 15 * 60_000

log = logging.getLogger("apiusage.processor.state")


_EMPTY_STR = sys.getsizeof("")


def _size(key: tuple) -> int:
    # getsizeof - getsizeof(""): the length for ASCII, up to 4 bytes a character beyond it
    # (U+10000 and up), so 128 emoji weigh what they cost, not 128 bytes.
    return _ROW_OVERHEAD + sum(sys.getsizeof(k) - _EMPTY_STR for k in key if isinstance(k, str))


class _EndpointNames:
    """The names of one endpoint the state stores: declared ones, and the undeclared ones admitted
    under the bound with their last request (Unix ms), for retention."""

    __slots__ = ("declared", "admitted")

    def __init__(self, declared: frozenset[tuple[str, str]]) -> None:
        self.declared = declared
        self.admitted: dict[tuple[str, str], int] = {}

    def declared_prefix(self, location: str, name: str) -> str | None:
        """The longest declared object field `name` lies under (`address` of `address.city`)."""
        while "." in name:
            name = name.rsplit(".", 1)[0]
            if (location, name) in self.declared:
                return name
        return None


def _declared_index(catalog: Catalog | None, max_length: int) -> dict[tuple[str, str, str], frozenset]:
    """(service, method or "*", route key) → the declared (location, name) pairs, as the Deriver
    sanitises names (and as report.unused_parameters compares them)."""
    index: dict[tuple[str, str, str], set[tuple[str, str]]] = {}
    for svc in catalog.services if catalog is not None else ():
        for ep in svc.endpoints:
            key = catalog_key(ep.route)
            if key is None or not (ep.query_parameters or ep.body_fields):
                continue
            names = index.setdefault((svc.name, ep.method, key), set())
            for location in ("query", "body"):
                names.update((location, sanitize_label_value(n, max_length)) for n in ep.declared(location))
    return {k: frozenset(v) for k, v in index.items()}


class ConsumerActivity:
    def __init__(
        self,
        retention_days: int,
        stats: PipelineStats,
        max_pending: int = 1_000_000,
        max_future_skew: float = 300.0,
        max_pending_bytes: int = 256 << 20,
        parameter_consumers: bool = True,
        catalog: Catalog | None = None,
        max_names_per_route: int = 100,
        max_label_length: int = 128,
        max_routes: int = 1000,
    ) -> None:
        self._retention_days = retention_days
        # Undeclared names stored per endpoint: values put into names (`?<token>=1`) cannot grow
        # the parameters tables without bound; declared names are always stored (else they would
        # be reported unused).
        self.max_names_per_route = max_names_per_route
        self._declared = _declared_index(catalog, max_label_length)
        # (service, method, route) → its names: the endpoints the catalog declares names for, and
        # those with admitted names. The state's routes are not folded (100k distinct routes reach
        # it), so the admitted names are bounded in all too: max_names_per_route x max_routes.
        self._names_of: dict[tuple[str, str, str], _EndpointNames] = {}
        self.max_names_total = max_names_per_route * max_routes
        self._admitted_total = 0
        # False: the names of each endpoint only (unused parameters), no row per consumer and name.
        self._parameter_consumers = parameter_consumers
        self._stats = stats
        self.max_pending = max_pending
        self.max_pending_bytes = max_pending_bytes
        self._future_ms = int(max_future_skew * 1000)
        self.rows_dropped = 0
        self._refused = 0  # names of the consume() in progress not stored (per-endpoint bound)
        self._dropping = False  # log once per episode of dropping
        self._bytes = 0  # estimated size of the rows in the dicts
        self._inflight_rows = 0  # drained, being written
        self._inflight_bytes = 0
        self._lock = threading.Lock()
        # (service, consumer) → [first_seen, first_success, last_seen, plan, client, version,
        #                        plan of the earliest request]
        self._consumers: dict[tuple[str, str], list] = {}
        # (day, service, consumer, method, route, feature, client, version) → [calls, errors, last]
        self._activity: dict[tuple, list] = {}
        # (service, method, route) → [deprecated, first_seen, last_seen]
        self._endpoints: dict[tuple[str, str, str], list] = {}
        # (service, method, route, location, parameter, consumer) → [first_day, last_call, calls]
        self._consumer_parameters: dict[tuple, list] = {}
        # (service, method, route, location, parameter) → [first_seen, last_seen], every request
        self._parameters: dict[tuple, list] = {}
        # (service, consumer) → [first_seen, last_seen, events] of feedback events
        self._feedback: dict[tuple[str, str], list] = {}
        # Experiment exposures (issue 16): their rows ride in the same batch and transaction, after
        # the others; their drops count in rows_dropped.
        self.experiments = ExperimentActivity(
            retention_days, stats, max_pending, max_future_skew, max_pending_bytes, self._experiment_dropped
        )
        # (service, version) → [first_seen, last_seen, requests] of requests with a service.version
        self._releases: dict[tuple[str, str], list] = {}

    def consume(self, requests: Sequence[ApiRequest]) -> None:
        now_ms = int(time.time() * 1000)
        oldest_day = now_ms // DAY_MS - self._retention_days
        latest = now_ms + self._future_ms
        earliest_release = now_ms - RELEASE_PAST_SKEW_MS
        dropped = future = full = 0
        with self._lock:
            consumers, activity, endpoints = self._consumers, self._activity, self._endpoints
            releases = self._releases
            hard_rows = self.max_pending * _HARD_FACTOR - self._inflight_rows
            hard_bytes = self.max_pending_bytes * _HARD_FACTOR - self._inflight_bytes
            self._refused = 0
            for r in requests:
                at = r.end_time_ns // 1_000_000
                day = at // DAY_MS
                if day < oldest_day:
                    dropped += 1  # older than retention: history we would delete anyway
                    continue
                if at > latest:
                    future += 1  # a clock far ahead would keep a consumer "active" for ever
                    continue
                service, method, route, code = r.service, r.method, r.route, r.status_code
                ekey = (service, method, route)
                e = endpoints.get(ekey)
                deprecated = 1 if r.deprecated == "true" else 0
                if e is None:
                    # Spans without a consumer id add only endpoint rows: 100k distinct routes
                    # must meet the same bound as 100k consumers.
                    if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                        full += 1
                    else:
                        endpoints[ekey] = [deprecated, at, at]
                        self._bytes += _size(ekey)
                elif at >= e[2]:
                    e[0], e[2] = deprecated, at
                elif at < e[1]:
                    e[1] = at
                sv = r.service_version
                if sv is not None:
                    # A release is first seen when the processor sees it, give or take a batch:
                    # one span with a clock days behind must not move the marker (and so the
                    # release's rank) back to before the release it replaced.
                    seen = at if at >= earliest_release else earliest_release
                    full += self._release(releases, (service, sv), seen, r.weight, hard_rows, hard_bytes)
                consumer = r.consumer_id
                query, body = r.query_parameters, r.body_fields
                if query or body:
                    full += self._names(ekey, consumer, day, at, r.weight, query, body, hard_rows, hard_bytes)
                if consumer is None:
                    continue
                ok = code[0] == "2"
                failed = code[0] in "45" or code == "unknown"
                w = r.weight
                plan, client, version = r.plan_tier, r.client_name, r.client_version
                akey = (day, service, consumer, method, route, r.feature or "", client, version)
                a = activity.get(akey)
                if a is None:
                    if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                        # Past twice the limit: only a queue larger than the limit gets here.
                        full += 1 if (service, consumer) in consumers else 2
                        continue
                    activity[akey] = [w, w if failed else 0.0, at]
                    self._bytes += _size(akey)
                else:
                    a[0] += w
                    if failed:
                        a[1] += w
                    if at > a[2]:
                        a[2] = at
                ckey = (service, consumer)
                c = consumers.get(ckey)
                if c is None:
                    consumers[ckey] = [at, at if ok else None, at, plan, client, version, plan]
                    self._bytes += _size(ckey)
                    continue
                if at < c[0]:
                    c[0], c[6] = at, plan
                if ok and (c[1] is None or at < c[1]):
                    c[1] = at
                if at >= c[2]:
                    c[2], c[3], c[4], c[5] = at, plan, client, version
            refused = self._refused
        if refused:
            self._stats.data_quality(names_not_stored=refused)
        if dropped:
            self._stats.data_quality(beyond_retention=dropped)
        if future:
            self.rows_dropped += future
        if full:
            self._dropped(full)

    def _names(
        self,
        ekey: tuple[str, str, str],
        consumer: str | None,
        day: int,
        at: int,
        weight: float,
        query: tuple[str, ...] | None,
        body: tuple[str, ...] | None,
        hard_rows: int,
        hard_bytes: int,
    ) -> int:
        """Record the parameter and body field names of one request (lock held); returns the
        rows that did not fit past twice the bound."""
        full = 0
        parameters, pairs = self._parameters, self._consumer_parameters
        known = None
        for location, names in (("query", query), ("body", body)):
            for name in names or ():
                pkey = (*ekey, location, name)
                p = parameters.get(pkey)
                if p is None:
                    if known is None:
                        known = self._endpoint_names(ekey)
                    nkey = (location, name)
                    if nkey not in known.declared and nkey not in known.admitted:
                        if (
                            len(known.admitted) >= self.max_names_per_route
                            or self._admitted_total >= self.max_names_total
                        ):
                            self._refused += 1
                            # A field under a declared object field (`address.<token>`): the
                            # endpoint still records that field as sent, so it is not reported
                            # unused (report.unused_parameters reads the parameters table only).
                            prefix = known.declared_prefix(location, name)
                            if prefix is not None:
                                sent = (*ekey, location, prefix)
                                full += self._sent(parameters, sent, at, hard_rows, hard_bytes)
                            continue
                        self._admit(ekey, known, nkey, at)
                    if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                        full += 1
                    else:
                        parameters[pkey] = [at, at]
                        self._bytes += _size(pkey)
                elif at > p[1]:
                    p[1] = at
                elif at < p[0]:
                    p[0] = at
                if consumer is None or not self._parameter_consumers:
                    continue
                ckey = (*pkey, consumer)
                c = pairs.get(ckey)
                if c is None:
                    if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                        full += 1
                        continue
                    pairs[ckey] = [day, at, weight]
                    self._bytes += _size(ckey)
                else:
                    c[2] += weight
                    if at > c[1]:
                        c[1] = at
                    if day < c[0]:
                        c[0] = day
        return full

    def _release(
        self, releases: dict, rkey: tuple[str, str], at: int, weight: float, hard_rows: int, hard_bytes: int
    ) -> int:
        """Record one request of a release (lock held); 1 when it does not fit past twice the bound."""
        rel = releases.get(rkey)
        if rel is None:
            if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                return 1
            releases[rkey] = [at, at, weight]
            self._bytes += _size(rkey)
            return 0
        rel[2] += weight
        if at > rel[1]:
            rel[1] = at
        elif at < rel[0]:
            rel[0] = at
        return 0

    def _sent(self, parameters: dict, pkey: tuple, at: int, hard_rows: int, hard_bytes: int) -> int:
        """Record one request of an admitted name in the endpoint's names (lock held); 1 when it
        does not fit past twice the bound."""
        p = parameters.get(pkey)
        if p is None:
            if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                return 1
            parameters[pkey] = [at, at]
            self._bytes += _size(pkey)
        elif at > p[1]:
            p[1] = at
        elif at < p[0]:
            p[0] = at
        return 0

    def _endpoint_names(self, ekey: tuple[str, str, str]) -> _EndpointNames:
        known = self._names_of.get(ekey)
        if known is None:
            service, method, route = ekey
            key = catalog_key(route)
            declared: frozenset[tuple[str, str]] = frozenset()
            if key is not None and self._declared:
                # As report.unused_parameters matches them: the method's entry and the `*` one.
                declared = self._declared.get((service, method, key), declared) | self._declared.get(
                    (service, "*", key), frozenset()
                )
            known = _EndpointNames(declared)
            if declared:  # bounded by the catalog; the others are kept once they admit a name
                self._names_of[ekey] = known
        return known

    def _admit(
        self, ekey: tuple[str, str, str], known: _EndpointNames, nkey: tuple[str, str], at: int
    ) -> None:
        if not known.admitted:
            self._names_of[ekey] = known
        known.admitted[nkey] = at
        self._admitted_total += 1

    def seed_names(self, rows: Iterable[tuple[str, str, str, str, str, int]]) -> None:
        """Admit the names already stored, (service, method, route, location, parameter, last_seen)
        in the order they came (first seen first): a restart keeps the bound."""
        with self._lock:
            for service, method, route, location, name, last in rows:
                known = self._endpoint_names((service, method, route))
                nkey = (location, name)
                if nkey in known.declared:
                    continue
                if nkey in known.admitted:
                    known.admitted[nkey] = max(known.admitted[nkey], last)
                elif (
                    len(known.admitted) < self.max_names_per_route
                    and self._admitted_total < self.max_names_total
                ):
                    self._admit((service, method, route), known, nkey, last)

    def forget_names(self, cutoff_ms: int) -> int:
        """Forget the admitted names last sent before `cutoff_ms`, as retention deletes their rows
        (names still waiting to be written stay); returns how many were forgotten."""
        forgotten = 0
        with self._lock:
            pending = self._parameters
            for ekey, known in list(self._names_of.items()):
                for nkey, last in list(known.admitted.items()):
                    if last < cutoff_ms and (*ekey, *nkey) not in pending:
                        del known.admitted[nkey]
                        forgotten += 1
                if not known.admitted and not known.declared:
                    del self._names_of[ekey]
            self._admitted_total -= forgotten
        return forgotten

    def most_declared(self) -> int:
        """The most names the catalog declares for one endpoint (its `*` entry included)."""
        return 2 * max((len(names) for names in self._declared.values()), default=0)

    def names_admitted(self, ekey: tuple[str, str, str]) -> int:
        """Undeclared names admitted for an endpoint."""
        with self._lock:
            known = self._names_of.get(ekey)
            return len(known.admitted) if known is not None else 0

    def consume_feedback(self, events: Sequence[Feedback]) -> None:
        """Record who gave feedback (events with a consumer); the worker calls it per batch."""
        now_ms = int(time.time() * 1000)
        oldest_ms = (now_ms // DAY_MS - self._retention_days) * DAY_MS
        latest = now_ms + self._future_ms
        dropped = future = full = 0
        with self._lock:
            feedback = self._feedback
            hard_rows = self.max_pending * _HARD_FACTOR - self._inflight_rows
            hard_bytes = self.max_pending_bytes * _HARD_FACTOR - self._inflight_bytes
            for event in events:
                consumer = event.consumer_id
                if consumer is None:
                    continue
                at = event.time_ns // 1_000_000
                if at < oldest_ms:
                    dropped += 1
                    continue
                if at > latest:
                    future += 1
                    continue
                key = (event.service, consumer)
                f = feedback.get(key)
                if f is None:
                    if self._rows() >= hard_rows or self._bytes >= hard_bytes:
                        full += 1
                        continue
                    feedback[key] = [at, at, 1]
                    self._bytes += _size(key)
                    continue
                f[2] += 1
                if at > f[1]:
                    f[1] = at
                elif at < f[0]:
                    f[0] = at
        if dropped:
            self._stats.data_quality(beyond_retention=dropped)
        if future:
            self.rows_dropped += future
        if full:
            self._dropped(full)

    def consume_exposures(self, exposures: Sequence[Exposure]) -> None:
        """Record experiment exposures (processor/state/experiments.py); the worker calls it per batch."""
        self.experiments.consume_exposures(exposures)

    def _experiment_dropped(self, future: int, full: int) -> None:
        self.rows_dropped += future
        if full:
            self._dropped(full)

    def _dropped(self, n: int) -> None:
        self.rows_dropped += n
        if not self._dropping:
            self._dropping = True
            log.error(
                "state backlog past twice its limit (%d rows, %d bytes): dropping new rows "
                "until the store catches up (counted in apiusage_state_rows_dropped_total)",
                self.max_pending,
                self.max_pending_bytes,
            )

    def _rows(self) -> int:
        return (
            len(self._activity)
            + len(self._consumers)
            + len(self._endpoints)
            + len(self._consumer_parameters)
            + len(self._parameters)
            + len(self._feedback)
            + len(self._releases)
        )

    def pending(self) -> int:
        """Rows not yet in the store, those being written included."""
        return self._rows() + self._inflight_rows + self.experiments.pending()

    def pending_bytes(self) -> int:
        """Estimated memory of the rows not yet in the store."""
        return self._bytes + self._inflight_bytes + self.experiments.pending_bytes()

    def backlogged(self) -> bool:
        """True while the backlog is at its limit: receivers refuse new exports until it shrinks."""
        return self.pending() >= self.max_pending or self.pending_bytes() >= self.max_pending_bytes

    def drain(self) -> ActivityBatch:
        """Take everything gathered since the last drain, as rows for the store; it stays counted
        as pending until `written()` or `restore()`."""
        with self._lock:
            consumers, self._consumers = self._consumers, {}
            activity, self._activity = self._activity, {}
            endpoints, self._endpoints = self._endpoints, {}
            pairs, self._consumer_parameters = self._consumer_parameters, {}
            parameters, self._parameters = self._parameters, {}
            feedback, self._feedback = self._feedback, {}
            releases, self._releases = self._releases, {}
            self._inflight_rows += (
                len(consumers) + len(activity) + len(endpoints) + len(pairs) + len(parameters) + len(feedback)
            ) + len(releases)
            self._inflight_bytes += self._bytes
            self._bytes = 0
            names_of = self._names_of
            for (s, m, r, location, name), (_, last) in parameters.items():
                known = names_of.get((s, m, r))
                if known is not None and known.admitted.get((location, name), last) < last:
                    known.admitted[location, name] = last  # retention forgets it with its row
        return (
            [(s, c, v[0], v[1], v[2], v[6], v[3], v[4], v[5]) for (s, c), v in consumers.items()],
            [(*k, v[0], v[1], v[2]) for k, v in activity.items()],
            [(s, m, r, v[0], v[1], v[2]) for (s, m, r), v in endpoints.items()],
            [(*k, v[0], v[1], v[2]) for k, v in pairs.items()],
            [(*k, v[0], v[1]) for k, v in parameters.items()],
            [(s, c, v[0], v[1], v[2]) for (s, c), v in feedback.items()],
            *self.experiments.drain(),
            [(s, v, r[0], r[1], r[2]) for (s, v), r in releases.items()],
        )

    def written(self) -> None:
        """The drained rows are in the store: they no longer count as pending."""
        self.experiments.written()
        with self._lock:
            self._inflight_rows = self._inflight_bytes = 0
            if self._dropping and not self.backlogged():
                self._dropping = False
                log.info("state backlog below its limit again")

    def restore(self, batch: ActivityBatch) -> None:
        """Merge a batch that could not be written back in, so the next flush retries it."""
        consumers, activity, endpoints, pairs, parameters, feedback, *experiments, releases = _complete(batch)
        self.experiments.restore(tuple(experiments))  # type: ignore[arg-type]
        full = 0
        with self._lock:
            self._inflight_rows = self._inflight_bytes = 0
            hard_rows = self.max_pending * _HARD_FACTOR
            hard_bytes = self.max_pending_bytes * _HARD_FACTOR

            def room() -> bool:
                return self._rows() < hard_rows and self._bytes < hard_bytes

            for s, c, first, success, last, first_plan, plan, name, version in consumers:
                cur = self._consumers.get((s, c))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._consumers[s, c] = [first, success, last, plan, name, version, first_plan]
                    self._bytes += _size((s, c))
                    continue
                if first < cur[0]:
                    cur[0], cur[6] = first, first_plan
                if success is not None and (cur[1] is None or success < cur[1]):
                    cur[1] = success
                if last > cur[2]:
                    cur[2], cur[3], cur[4], cur[5] = last, plan, name, version
            for *key, calls, errors, last in activity:
                akey = tuple(key)
                cur = self._activity.get(akey)
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._activity[akey] = [calls, errors, last]
                    self._bytes += _size(akey)
                else:
                    cur[0] += calls
                    cur[1] += errors
                    cur[2] = max(cur[2], last)
            for s, m, r, deprecated, first, last in endpoints:
                cur = self._endpoints.get((s, m, r))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._endpoints[s, m, r] = [deprecated, first, last]
                    self._bytes += _size((s, m, r))
                else:
                    if last > cur[2]:
                        cur[0], cur[2] = deprecated, last
                    cur[1] = min(cur[1], first)
            for *key, first_day, last, calls in pairs:
                pkey = tuple(key)
                cur = self._consumer_parameters.get(pkey)
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._consumer_parameters[pkey] = [first_day, last, calls]
                    self._bytes += _size(pkey)
                else:
                    cur[0], cur[1], cur[2] = min(cur[0], first_day), max(cur[1], last), cur[2] + calls
            for *key, first, last in parameters:
                pkey = tuple(key)
                cur = self._parameters.get(pkey)
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._parameters[pkey] = [first, last]
                    self._bytes += _size(pkey)
                else:
                    cur[0], cur[1] = min(cur[0], first), max(cur[1], last)
            for s, c, first, last, events in feedback:
                cur = self._feedback.get((s, c))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._feedback[s, c] = [first, last, events]
                    self._bytes += _size((s, c))
                else:
                    cur[0], cur[1], cur[2] = min(cur[0], first), max(cur[1], last), cur[2] + events
            for s, v, first, last, requests in releases:
                cur = self._releases.get((s, v))
                if cur is None:
                    if not room():
                        full += 1
                        continue
                    self._releases[s, v] = [first, last, requests]
                    self._bytes += _size((s, v))
                else:
                    cur[0], cur[1], cur[2] = min(cur[0], first), max(cur[1], last), cur[2] + requests
        if full:
            self._dropped(full)
