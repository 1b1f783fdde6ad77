"""Run code from inside a C call: a garbage-collection hook that fires mid-call.

CPython collects the young generation when a container (tuple, list, ...) is
allocated past the threshold, and runs gc callbacks and finalizers right there,
inside whatever C function allocated.  With the threshold at 1 nearly every tuple
the C scanner allocates starts a collection, so the hook runs between any two
spans of a scan: the deterministic way to reenter a C function (or, with a
``time.sleep(0)`` in the hook, to let another thread in mid-call).
"""

from __future__ import annotations

import gc
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Hook:
    """What the gc hook did: each action's outcome, in order."""

    action: Callable[[], object]
    limit: int
    outcomes: list[object] = field(default_factory=list)
    collections: int = 0
    _running: bool = False

    def __call__(self, phase: str, info: dict) -> None:
        if phase != "start":
            return
        self.collections += 1
        if self._running or len(self.outcomes) >= self.limit:
            return
        self._running = True
        try:
            self.outcomes.append(outcome(self.action))
        finally:
            self._running = False


@contextmanager
def collecting_often() -> Iterator[None]:
    """Young-generation collection on (nearly) every container allocation while inside."""
    thresholds = gc.get_threshold()
    was_enabled = gc.isenabled()
    gc.enable()
    gc.set_threshold(1, *thresholds[1:])
    gc.collect(0)  # start from an empty young generation: the same calls collect at the same points
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        if not was_enabled:
            gc.disable()


@contextmanager
def gc_hook(action: Callable[[], object], *, limit: int = 1_000_000) -> Iterator[Hook]:
    """While inside, every collection runs `action()` (at most `limit` times; never nested in itself).

    An exception from `action` is recorded in `outcomes`, not raised: gc callbacks
    must not raise (pytest would report an unraisable exception).
    """
    hook = Hook(action, limit)
    with collecting_often():
        gc.callbacks.append(hook)
        try:
            yield hook
        finally:
            gc.callbacks.remove(hook)


def outcome(fn: Callable[[], object]) -> object:
    """fn()'s result made exactly comparable, or ("raised", type name, message)."""
    try:
        return exact(fn())
    except Exception as exc:  # noqa: BLE001 -- the outcome is what the test compares
        return ("raised", type(exc).__name__, str(exc))


def exact(result: object) -> object:
    """Keep types (True != 1) and float bits (NaN == NaN) in comparisons."""
    if isinstance(result, (list, tuple)):
        return type(result)(exact(x) for x in result)
    if isinstance(result, float):
        return ("float", struct.pack("<d", result))
    return (type(result).__name__, result)
