"""tests.support.polling: the one wait-until helper of the tests."""

from __future__ import annotations

import time

import pytest

from tests.support.polling import poll, read_until, wait_until


def test_returns_the_first_truthy_value_without_waiting_longer():
    answers = iter([0, None, "", {"up": 1}, "never reached"])
    started = time.monotonic()
    assert wait_until(lambda: next(answers), 5, "an answer", interval=0.01) == {"up": 1}
    assert time.monotonic() - started < 1


def test_times_out_naming_what_and_the_last_ignored_error():
    def refused() -> None:
        raise ConnectionRefusedError("port 9")

    started = time.monotonic()
    with pytest.raises(AssertionError) as info:
        wait_until(refused, 0.2, "the server", interval=0.05, ignore=(OSError,))
    assert 0.2 <= time.monotonic() - started < 1.5
    assert (
        str(info.value)
        == "timed out after 0.2s waiting for the server (last error: ConnectionRefusedError: port 9)"
    )


def test_an_error_not_ignored_propagates_at_once():
    with pytest.raises(KeyError):
        wait_until(lambda: {}["x"], 5, "a key")


def test_a_callable_what_shows_the_state_at_the_failure():
    state = {"open": 3}
    with pytest.raises(AssertionError, match=r"waiting for no connections \(open: 3\)$"):
        wait_until(lambda: state["open"] == 0, 0.05, lambda: f"no connections (open: {state['open']})")


def test_poll_probes_once_more_at_the_deadline_and_returns_the_last_value():
    calls = []
    value, error = poll(lambda: calls.append(time.monotonic()) or 0, 0.1, interval=0.04)
    assert (value, error) == (0, None)
    assert len(calls) >= 3 and calls[-1] - calls[0] >= 0.1
    assert poll(lambda: "now", 0)[0] == "now"  # a zero timeout still probes once


def test_read_until_gives_the_last_value_read_whether_or_not_done_held():
    counts = iter(range(100))
    assert read_until(lambda: next(counts), lambda n: n >= 3, 5, interval=0.01) == 3
    assert read_until(lambda: "stuck", lambda s: s == "moved", 0.05, interval=0.01) == "stuck"
