"""The one polling helper of the tests: call a probe until it answers, or fail saying what."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

__all__ = ["poll", "read_until", "wait_until"]


def poll(
    probe: Callable[[], T],
    timeout: float,
    *,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> tuple[T | None, BaseException | None]:
    """Call `probe` until it returns something truthy or `timeout` s pass (it runs at least once,
    and once more at the deadline); (its last value, the last error of `ignore` it raised)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        value: T | None
        try:
            value = probe()
        except ignore as exc:
            last_error, value = exc, None
        if value or time.monotonic() >= deadline:
            return value, last_error
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_until(
    probe: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """`probe()`'s first truthy value; AssertionError naming `what` (and the last ignored error)
    after `timeout` seconds. A callable `what` is called then, to show the state at the failure."""
    value, last_error = poll(probe, timeout, interval=interval, ignore=ignore)
    if not value:
        raise AssertionError(
            f"timed out after {timeout:g}s waiting for {what() if callable(what) else what}"
            + (f" (last error: {type(last_error).__name__}: {last_error})" if last_error else "")
        )
    return value


def read_until(
    read: Callable[[], T], done: Callable[[T], bool], timeout: float, *, interval: float = 0.05
) -> T:
    """`read()` until `done` holds for what it read or `timeout` s pass; the last value read
    (for a caller that then asserts on it, with the value in its message)."""
    last: list[T] = []

    def reached() -> bool:
        last[:] = [read()]
        return done(last[0])

    poll(reached, timeout, interval=interval)
    return last[0]
