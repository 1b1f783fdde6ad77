"""The component lifecycle, after the OpenTelemetry Collector's component.Component (Start/Shutdown).

Every long-lived part of the processor (the receivers, the worker, the state service, the trace
forwarder, the memory limiter, the metrics and admin endpoints) is a `Component`: it is built
(ports bound, store opened) by app.py, started, and shut down with a deadline.  app.py keeps
them in one ordered `Components` list: started first to last, shut down last to first, so the
receivers stop taking data first, the worker drains next, and the state flushes after it.

`shutdown(deadline)` must return by `deadline` (a time.monotonic() value), or soon after when a
thread cannot be interrupted; each component may stop sooner by its own bound.  It must work on
a component that was built but never started (a start-up that failed half-way), and twice.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Protocol, TypeVar, runtime_checkable

from .errors import ProcessorError
from .selfmetrics import Family

__all__ = ["Component", "Components", "StartFailed", "time_left"]

log = logging.getLogger("apiusage.processor")

#: A start-up that failed half-way closes what it built within this.
ABORT_TIMEOUT = 15.0


@runtime_checkable
class Component(Protocol):
    # Read-only: a plain attribute satisfies it, and so does a property (Served's name).
    @property
    def name(self) -> str:
        """Short and stable, for logs and errors ("otlp-http", "worker", "state")."""

    #: The apiusage_* families (selfmetrics.py) that report this component's work.
    families: tuple[Family, ...]

    def start(self) -> None:
        """Begin work: serve, run threads. Raises when it cannot."""

    def shutdown(self, deadline: float) -> bool:
        """Stop by `deadline` (monotonic); False when accepted data was lost (the exit status)."""


class StartFailed(ProcessorError):
    """A component raised in start(); what was built has been shut down again."""

    def __init__(self, component: str, cause: BaseException) -> None:
        super().__init__(f"{component} did not start: {cause}")
        self.component = component


def time_left(deadline: float, bound: float | None = None) -> float:
    """Seconds until `deadline` (never negative), at most `bound`."""
    left = max(0.0, deadline - time.monotonic())
    return left if bound is None else min(bound, left)


C = TypeVar("C", bound=Component)


class Components:
    """The processor's components in start order; shut down in reverse with one deadline."""

    def __init__(self) -> None:
        self._all: list[Component] = []

    def add(self, component: C) -> C:
        """Append a built component (started by start(), or shut down if building the rest fails)."""
        if not isinstance(component, Component):
            raise TypeError(
                f"{type(component).__name__} is not a Component (name, families, start, shutdown)"
            )
        self._all.append(component)
        return component

    @property
    def names(self) -> list[str]:
        return [c.name for c in self._all]

    def __iter__(self) -> Iterator[Component]:
        return iter(self._all)

    def start(self) -> None:
        """Start each in order; if one raises, shut every component down and raise StartFailed."""
        for component in self._all:
            try:
                component.start()
            except Exception as exc:
                self.shutdown(time.monotonic() + ABORT_TIMEOUT)
                raise StartFailed(component.name, exc) from exc

    def shutdown(self, deadline: float) -> bool:
        """Shut down last to first; True when none lost data. A component that raises is logged
        and counts as a loss; the ones before it are still shut down."""
        ok = True
        for component in reversed(self._all):
            try:
                ok = component.shutdown(deadline) and ok
            except Exception:  # noqa: BLE001 - the next components must still stop
                log.exception("shutting down %s failed", component.name)
                ok = False
        return ok
