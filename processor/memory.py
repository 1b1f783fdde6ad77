"""A memory limiter, as in the OpenTelemetry Collector: refuse new data while memory is high.

A thread reads the process's resident set size every `check_interval`; above
`limit - spike_limit` the receivers answer with retryable refusals (HTTP 503 +
Retry-After, gRPC UNAVAILABLE + RetryInfo) until it falls again, so clients
back off instead of the process growing without bound.
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
from collections.abc import Iterable

from prometheus_client.core import Metric

from . import selfmetrics
from .config import MemoryLimiterConfig

__all__ = ["MemoryLimiter", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _malloc_trim() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise, and RSS never falls)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryLimiter:
    """A component (component.py): a thread that reads the RSS every check_interval."""

    name = "memory_limiter"
    families = selfmetrics.owned_by("memory_limiter")

    def __init__(self, config: MemoryLimiterConfig) -> None:
        self.limit = config.limit_mib << 20
        self.soft_limit = (config.limit_mib - config.spike_limit_mib) << 20
        self._interval = float(config.check_interval)
        self.over = False
        self.rss = rss_bytes()
        self.refusals = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiusage-memory", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()

    def check(self) -> bool:
        self.rss = rss_bytes()
        over = self.rss > self.soft_limit
        if over:
            # Freed batches go back first; refuse only for what is really in use.
            gc.collect()
            _malloc_trim()
            self.rss = rss_bytes()
            over = self.rss > self.soft_limit
        self.over = over
        return over

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self, deadline: float) -> bool:
        self.stop()  # the thread only reads /proc: it ends at its next wake-up, not waited for
        return True

    def collect(self) -> Iterable[Metric]:
        yield selfmetrics.MEMORY_LIMIT_BYTES.family(self.soft_limit)
        yield selfmetrics.MEMORY_OVER_LIMIT.family(int(self.over))
        yield selfmetrics.MEMORY_LIMITER_REFUSALS.family(self.refusals)
