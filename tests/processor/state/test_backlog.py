"""The backlog of unwritten rows: bounded in rows and in estimated bytes, drained rows still
counted until written, restored rows not counted twice, and drops only past twice the bound."""

from __future__ import annotations

import time

from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.state.activity import ConsumerActivity
from apiusage.processor.telemetry import PipelineStats

MiB = 1 << 20


def requests(first: int, last: int, route: str = "/v1/orders") -> list[ApiRequest]:
    now_ns = time.time_ns()
    return [
        ApiRequest(
            "orders",
            "GET",
            route,
            "200",
            "pro",
            "false",
            "sdk",
            "1.0",
            None,
            None,
            f"c{i:05d}",
            0.01,
            1.0,
            now_ns,
            b"t" * 16,
            b"s" * 8,
        )
        for i in range(first, last)
    ]


def test_the_row_bound_backlogs_and_drained_rows_count_until_written() -> None:
    activity = ConsumerActivity(40, PipelineStats(), max_pending=40)
    activity.consume(requests(0, 19))  # 19 consumer rows, 19 activity rows, 1 endpoint row
    assert (activity.pending(), activity.backlogged()) == (39, False)
    activity.consume(requests(19, 20))
    assert (activity.pending(), activity.backlogged()) == (41, True)
    batch = activity.drain()
    assert (activity.pending(), activity.backlogged()) == (41, True)  # being written: still owed
    activity.consume(requests(0, 5))  # the same consumers again: merged on restore
    activity.restore(batch)
    assert (activity.pending(), activity.rows_dropped) == (41, 0)
    activity.drain()
    activity.written()
    assert (activity.pending(), activity.pending_bytes(), activity.backlogged()) == (0, 0, False)


def test_the_byte_bound_backlogs_before_the_row_bound() -> None:
    activity = ConsumerActivity(40, PipelineStats(), max_pending=1_000_000, max_pending_bytes=MiB)
    route = "/v1/" + "x" * 2000
    activity.consume(requests(0, 100, route))
    # per activity row: 300 + strings; per consumer row: 300 + service and id
    row = 300 + len("orders") + 6 + len("GET") + len(route) + len("sdk") + len("1.0")
    endpoint = 300 + len("orders") + len("GET") + len(route)
    expected = 100 * row + 100 * (300 + len("orders") + 6)
    assert (activity.pending(), activity.pending_bytes()) == (201, expected + endpoint)
    assert not activity.backlogged()
    activity.consume(requests(100, 500, route))
    assert activity.pending_bytes() == 5 * expected + endpoint and activity.backlogged()
    assert activity.rows_dropped == 0


def test_rows_past_twice_the_bound_are_dropped_and_counted(caplog) -> None:
    activity = ConsumerActivity(40, PipelineStats(), max_pending=40)
    # 101 rows offered (one endpoint); room for 80, and the consumer row of the last activity row
    activity.consume(requests(0, 50))
    assert (activity.pending(), activity.rows_dropped) == (81, 20)
    assert [r.getMessage() for r in caplog.records] == [
        "state backlog past twice its limit (40 rows, 268435456 bytes): dropping new rows until "
        "the store catches up (counted in apiusage_state_rows_dropped_total)"
    ]
    activity.consume(requests(50, 51) + requests(0, 1, route="/v2/other"))  # new; known consumer
    # 2 + 1 + the new endpoint row of /v2/other
    assert activity.rows_dropped == 24 and len(caplog.records) == 1  # logged once per episode
