"""The C scanner is reentrant: a scan started while another is suspended inside it (from a gc
callback, a finalizer, or another thread that one of those let in) changes neither result.

The scanner holds the GIL, but the tuples it allocates can start a garbage collection, which
runs Python code mid-scan (tests/support/reentrancy.py).  Every result is compared with the
protobuf-based reference scanner.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable

import pytest
from apiusage.conventions.attributes import (
    ATTR_BODY_FIELDS,
    ATTR_QUERY_PARAMETERS,
    ATTR_VALIDATION_LOCATIONS,
)
from apiusage.demo.otlp import key_value
from apiusage.processor.config import UsageConfig
from apiusage.processor.derive.requests import span_field_sources
from apiusage.processor.receivers import scan
from apiusage.processor.receivers.scan import PyScanner, ScanError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.support.reentrancy import collecting_often, exact, gc_hook, outcome

# The processor's own attribute groups (first key present wins), and two resource groups.
SPAN_GROUPS = [tuple(g) for g in span_field_sources(UsageConfig())]
RESOURCE_GROUPS = [("service.name",), ("deployment.environment.name", "deployment.environment")]


# More keys than the C scanner keeps value slots for on its stack (64): per-call heap scratch.
MANY_SPAN_GROUPS = SPAN_GROUPS + [(f"x{i}", f"y{i}") for i in range(30)]


def c_scanner(
    span_groups: list[tuple[str, ...]] = SPAN_GROUPS, array_keys: list[str] | tuple[()] = ()
) -> scan.CScanner:
    if scan.CScanner is None:
        reason = f"C scanner extension not importable: {scan.C_IMPORT_ERROR}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return scan.CScanner(span_groups, RESOURCE_GROUPS, array_keys=array_keys)


REFERENCE = PyScanner(SPAN_GROUPS, RESOURCE_GROUPS)


def body(name: str, spans: int = 20, resources: int = 1) -> bytes:
    """`resources` ResourceSpans (resource attributes first, as SDKs send them) of `spans` spans,
    every value derived from `name` so that results of different bodies differ everywhere."""
    request = ExportTraceServiceRequest()
    for r in range(resources):
        request.resource_spans.append(
            ResourceSpans(
                resource=Resource(
                    attributes=[
                        key_value("service.name", f"{name}-svc{r}"),
                        key_value("deployment.environment", f"{name}-env{r}"),
                    ]
                ),
                scope_spans=[
                    ScopeSpans(
                        spans=[
                            Span(
                                trace_id=bytes([r, i]) * 8,
                                span_id=bytes([i]) * 8,
                                kind=Span.SPAN_KIND_SERVER,
                                start_time_unix_nano=1_000 + i,
                                end_time_unix_nano=2_000 + i,
                                attributes=[
                                    key_value("http.method", "GET"),
                                    key_value("http.route", f"/{name}/{i}"),
                                    key_value("http.status_code", 200 + i),
                                    key_value("enduser.id", f"{name}-u{i}"),
                                    key_value("apiusage.consumer.id", f"{name}-c{i}"),
                                ],
                            )
                            for i in range(spans)
                        ]
                    )
                ],
            )
        )
    return request.SerializeToString()


@pytest.mark.parametrize("span_groups", [SPAN_GROUPS, MANY_SPAN_GROUPS], ids=["default", "many"])
def test_scan_reentered_from_a_gc_callback_returns_both_results_intact(span_groups: list) -> None:
    scanner = c_scanner(span_groups)
    reference = PyScanner(span_groups, RESOURCE_GROUPS)
    outer = body("outer", spans=40)
    cut = body("cut", spans=3)
    inner = [body("inner-a"), body("inner-b", resources=2), cut[: len(cut) - 5]]  # the last is malformed
    expected_inner = [outcome(lambda b=b: scanner.scan(b)) for b in inner]
    assert expected_inner[:2] == [exact(reference.scan(b)) for b in inner[:2]]
    assert expected_inner[2][:2] == ("raised", "ScanError")
    scanned: list[int] = []

    def nested_scan() -> object:
        scanned.append(len(scanned) % len(inner))
        return scanner.scan(inner[scanned[-1]])

    with gc_hook(nested_scan) as hook:
        got = outcome(lambda: scanner.scan(outer))

    assert got == exact(reference.scan(outer))
    assert got[0][0] == exact(("outer-svc0", "outer-env0"))  # what the shared scratch state lost
    # 40 span tuples allocated, a collection every second one: nested scans ran between spans
    assert len(hook.outcomes) >= 10
    assert hook.outcomes == [expected_inner[i] for i in scanned]


class _Rearming:
    """Garbage (a reference cycle) whose finalizer runs `action` and leaves new such garbage behind,
    so the next collection -- mid-scan -- runs it again."""

    def __init__(self, action: Callable[[], None], remaining: int) -> None:
        self.action, self.remaining, self.cycle = action, remaining, self

    def __del__(self) -> None:
        self.action()
        if self.remaining > 0:
            _Rearming(self.action, self.remaining - 1)


def test_scan_reentered_from_a_finalizer_returns_both_results_intact() -> None:
    scanner = c_scanner()
    outer, inner = body("outer", spans=30, resources=2), body("inner", spans=5)
    expected_inner = exact(REFERENCE.scan(inner))
    nested: list[object] = []
    with collecting_often():
        _Rearming(lambda: nested.append(outcome(lambda: scanner.scan(inner))), remaining=20)
        got = outcome(lambda: scanner.scan(outer))
    assert got == exact(REFERENCE.scan(outer))
    assert len(nested) >= 10
    assert nested == [expected_inner] * len(nested)


def test_threads_sharing_one_scanner_each_get_their_own_results() -> None:
    """A differential test: 4 threads, one scanner.  A collection inside one thread's scan waits
    there until another thread has done a whole scan, which then waits until the first one goes on:
    the interleaving a finalizer that lets other threads run allows, made to happen at every
    collection (only one thread at a time can be inside a collection)."""
    scanner = c_scanner()
    threads_n, rounds = 4, 10
    bodies = [[body(f"t{t}b{k}", spans=12, resources=1 + k % 2) for k in range(3)] for t in range(threads_n)]
    expected = [[exact(REFERENCE.scan(b)) for b in mine] for mine in bodies]
    mismatches: list[tuple[int, int]] = []
    changed = threading.Condition()
    done_scans, running, paused, resumed, handoffs = [0], [threads_n], [0], [0], [0]
    scanning = threading.local()
    deadline = time.monotonic() + 15
    start = threading.Barrier(threads_n, timeout=10)

    def let_another_thread_scan() -> None:
        if not getattr(scanning, "now", False):
            return
        with changed:
            target = done_scans[0] + 1
            paused[0] += 1
            # wait_for releases the GIL; only other threads can finish a scan meanwhile
            if changed.wait_for(lambda: done_scans[0] >= target or running[0] < 2, timeout=2):
                handoffs[0] += done_scans[0] >= target
            paused[0] -= 1
            resumed[0] += 1
            changed.notify_all()

    def run(t: int) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                for k, b in enumerate(bodies[t]):
                    if time.monotonic() > deadline:
                        return
                    scanning.now = True
                    try:
                        got = scanner.scan(b)
                    finally:
                        scanning.now = False
                    if exact(got) != expected[t][k]:
                        mismatches.append((t, k))
                    with changed:
                        done_scans[0] += 1
                        changed.notify_all()
                        if paused[0]:  # let the paused scan go on before scanning again
                            changed.wait_for(lambda seen=resumed[0]: resumed[0] > seen, timeout=2)
        finally:
            with changed:
                running[0] -= 1
                changed.notify_all()

    with gc_hook(let_another_thread_scan):
        workers = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(threads_n)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=max(0.1, deadline - time.monotonic() + 2))
    assert not any(w.is_alive() for w in workers), "scanning threads did not finish within 17 s"
    assert done_scans[0] == threads_n * rounds * 3, "ran out of time before every scan was checked"
    assert mismatches == []
    # many scans were overtaken mid-way by another thread's whole scan
    assert handoffs[0] >= done_scans[0] // 4, handoffs


RESIZE_REFUSED = ("raised", "BufferError", "Existing exports of data: object cannot be re-sized")


def _scan_while_rewritten(scanner: scan.CScanner, data: bytearray, rewrites: list[bytes]) -> tuple:
    """scan(data) while each collection inside it rewrites data; returns (result or ScanError,
    number of rewrites)."""
    rewritten = [0]

    def rewrite() -> None:
        # Only the scan holds an export of data: a refused resize means we are inside it.
        if outcome(lambda: data.extend(b"x")) != RESIZE_REFUSED:
            del data[-1]
            return
        rewritten[0] += 1
        data[:] = rewrites[rewritten[0] % len(rewrites)]

    with gc_hook(rewrite):
        try:
            got: object = scanner.scan(data)
        except ScanError as exc:
            got = exc
    return got, rewritten[0]


def test_a_buffer_rewritten_mid_scan_is_still_read_within_bounds() -> None:
    """A finalizer may rewrite a bytearray being scanned (it cannot resize it: the scan holds a
    buffer export).  The scan then sees a mix of old and new bytes -- a result or a ScanError,
    never anything else, and never a read outside the buffer (the ASan run in test_scan.py)."""
    scanner = c_scanner()
    original = body("orig", spans=30)
    other = body("other", spans=60)[: len(original)]
    rng = random.Random(12)
    rewritten = 0
    for _ in range(30):
        data = bytearray(original)
        rewrites = [
            rng.choice([bytes(len(data)), b"\xff" * len(data), rng.randbytes(len(data)), other])
            for _ in range(3)
        ]
        got, times = _scan_while_rewritten(scanner, data, rewrites)
        assert isinstance(got, (tuple, ScanError)), got
        assert len(data) == len(original)
        rewritten += times
    assert rewritten >= 30  # at least once per scan, before it had read the whole body


# Array values: the C scanner walks an array key's array a second time, allocating as it goes, so a
# collection can run (and rewrite a bytearray) between its two walks of one attribute.
ARRAY_KEYS = [ATTR_QUERY_PARAMETERS, ATTR_BODY_FIELDS, ATTR_VALIDATION_LOCATIONS]
# The config's own groups name these keys too; here two of them share a group instead.
ARRAY_GROUPS = [g for g in SPAN_GROUPS if not set(g) & set(ARRAY_KEYS)] + [
    (ATTR_QUERY_PARAMETERS,),
    (ATTR_BODY_FIELDS, ATTR_VALIDATION_LOCATIONS),
]


def array_body(name: str, spans: int = 20) -> bytes:
    """Spans whose array values (nested, kvlists inside, past max_array_items) derive from `name`."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for i in range(spans):
        scope.spans.append(
            Span(
                kind=Span.SPAN_KIND_SERVER,
                start_time_unix_nano=1_000 + i,
                attributes=[
                    key_value("http.route", f"/{name}/{i}"),
                    key_value("apiusage.consumer.id", [f"{name}-c{i}"]),  # a scalar key: absent
                    key_value("enduser.id", f"{name}-u{i}"),
                    key_value(ATTR_QUERY_PARAMETERS, [f"{name}-q{j}" for j in range(i % 4)]),
                    key_value(ATTR_BODY_FIELDS, [f"{name}-f{i}", i, [f"{name}-n"], {"k": name}, b"b", None]),
                    key_value(ATTR_VALIDATION_LOCATIONS, [f"{name}-{j}" for j in range(70 + i)]),
                ],
            )
        )
    return request.SerializeToString()


def test_scan_reentered_mid_array_returns_both_results_intact() -> None:
    scanner = c_scanner(ARRAY_GROUPS, ARRAY_KEYS)
    reference = PyScanner(ARRAY_GROUPS, RESOURCE_GROUPS, array_keys=ARRAY_KEYS)
    outer = array_body("outer", spans=30)
    inner = [array_body("inner-a", spans=5), body("inner-b"), outer[:-7]]  # the last is malformed
    expected_inner = [outcome(lambda b=b: scanner.scan(b)) for b in inner]
    assert expected_inner[:2] == [exact(reference.scan(b)) for b in inner[:2]]
    assert expected_inner[2][:2] == ("raised", "ScanError")
    expected = exact(reference.scan(outer))
    assert exact(scanner.scan(outer)) == expected
    consumer = 8 + [g[0] for g in SPAN_GROUPS].index("apiusage.consumer.id")
    assert scanner.scan(outer)[1][3][consumer] == "outer-u3"
    assert scanner.scan(outer)[1][3][8 + len(ARRAY_GROUPS) - 2 :] == (
        ("outer-q0", "outer-q1", "outer-q2"),
        ("outer-f3", 3, None, None, None, None),
    )
    scanned: list[int] = []

    def nested_scan() -> object:
        scanned.append(len(scanned) % len(inner))
        return scanner.scan(inner[scanned[-1]])

    with gc_hook(nested_scan) as hook:
        got = outcome(lambda: scanner.scan(outer))
    assert got == expected
    assert len(hook.outcomes) >= 30  # at least one per span: arrays allocate lists
    assert hook.outcomes == [expected_inner[i] for i in scanned]


def test_a_buffer_rewritten_mid_array_is_still_read_within_bounds() -> None:
    """As test_a_buffer_rewritten_mid_scan_is_still_read_within_bounds, with a collection between
    the walks of an array (the ASan run in test_scan.py checks the reads)."""
    scanner = c_scanner(ARRAY_GROUPS, ARRAY_KEYS)
    original = array_body("orig", spans=20)
    other = array_body("other-longer-name", spans=40)[: len(original)]
    shifted = original[1:] + b"\x00"  # the same bytes one off: lengths land on other fields
    rng = random.Random(13)
    rewritten = 0
    for _ in range(30):
        data = bytearray(original)
        rewrites = [
            rng.choice([bytes(len(data)), b"\xff" * len(data), rng.randbytes(len(data)), other, shifted])
            for _ in range(3)
        ]
        got, times = _scan_while_rewritten(scanner, data, rewrites)
        assert isinstance(got, (tuple, ScanError)), got
        assert len(data) == len(original)
        rewritten += times
    assert rewritten >= 30
