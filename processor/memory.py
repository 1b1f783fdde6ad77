"""A memory limiter, as in the OpenTelemetry Collector: refuse new data while memory is high.

A thread reads the process's resident set size every `check_interval`; above
`limit - spike_limit` the receivers answer with retryable refusals (HTTP 503 +
Retry-After, gRPC UNAVAILABLE + RetryInfo) until it falls again, so clients
back off instead of the process growing without bound.

The thread's reading alone is not enough under load: it needs the GIL, which the receivers'
scans and the worker hold, so its checks came 10 to 65 ms apart instead of 10 (and the first
one over the limit spent a garbage collection before it said so), and a flood of bodies
accepted in between went past the soft limit by more than the spike limit. So a batch is
admitted into the queue only after a reading of the RSS taken then (`admit()`: a pread of
/proc/self/statm, about a microsecond), with the batch already decoded: what the queue holds
never takes memory past the soft limit, and the spike limit covers what is in flight (bodies
being received and decoded, the batch the worker is deriving).
"""

from __future__ import annotations

import ctypes
import gc
import os
import threading
import time
from collections.abc import Iterable

from prometheus_client.core import Metric

from . import selfmetrics
from .config import MemoryLimiterConfig

__all__ = ["MemoryLimiter", "rss_bytes"]

_PAGE = os.sysconf("SC_PAGE_SIZE")
#: Seconds between two full garbage collections of the limiter while memory stays over.
GC_INTERVAL = 1.0


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


class _Statm:
    """/proc/self/statm kept open: a pread of it is a fresh reading for a microsecond, cheap
    enough for every batch (opening it each time costs ten). One per process, reopened in a
    forked child (the inherited descriptor would read the parent)."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def rss(self) -> int:
        fd = self._fd
        if fd is None or self._pid != os.getpid():
            fd = self._open()
            if fd is None:
                return 0
        try:
            return int(os.pread(fd, 128, 0).split()[1]) * _PAGE
        except (OSError, ValueError, IndexError):
            return 0

    def _open(self) -> int | None:
        with self._lock:
            if self._fd is None or self._pid != os.getpid():
                try:
                    self._fd = os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC)
                except OSError:
                    return None
                self._pid = os.getpid()
            return self._fd


_STATM = _Statm()


class MemoryLimiter:
    """A component (component.py): a thread that reads the RSS every check_interval."""

    name = "memory_limiter"
    families = selfmetrics.owned_by("memory_limiter")

    def __init__(self, config: MemoryLimiterConfig) -> None:
        self.limit = config.limit_mib << 20
        self.soft_limit = (config.limit_mib - config.spike_limit_mib) << 20
        self._interval = float(config.check_interval)
        self.over = False
        self.rss = _STATM.rss()
        self.refusals = 0
        self._collected_at = -GC_INTERVAL
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="apiusage-memory", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.check()

    def check(self) -> bool:
        """Read the RSS; over the soft limit, give freed memory back and read it again."""
        self.rss = _STATM.rss()
        if self.rss <= self.soft_limit:
            self.over = False
            return False
        # Said at once: the collection and the trim below take from one to over a hundred ms
        # under load, and bodies would be admitted all that time on the reading before.
        self.over = True
        now = time.monotonic()
        if now - self._collected_at >= GC_INTERVAL:
            # Batches are freed by reference counting; a full collection (for cycles) holds the GIL
            # for 30 to 140 ms under load, and at every check it starved the worker that frees
            # the memory: at most one a second.
            self._collected_at = now
            gc.collect()
        _malloc_trim()  # refuse only for what is really in use
        self.rss = _STATM.rss()
        self.over = over = self.rss > self.soft_limit
        return over

    def admit(self, releasing: int = 0) -> bool:
        """Whether one more decoded batch may be queued: not while the last verdict is over, nor
        when a reading taken now is over the soft limit (then over until the thread's next check).

        `releasing`: bytes of the request's own body, in the reading and freed once it is
        answered; counting them would refuse a large body for its own size."""
        if self.over:
            return False
        rss = _STATM.rss()
        if rss - releasing > self.soft_limit:
            self.rss, self.over = rss, True
            return False
        return True

    def room(self) -> int:
        """Bytes left under the soft limit, read now."""
        self.rss = rss = _STATM.rss()
        return self.soft_limit - rss

    def stop(self) -> None:
        self._stop.set()

    def shutdown(self, deadline: float) -> bool:
        self.stop()  # the thread only reads /proc: it ends at its next wake-up, not waited for
        return True

    def collect(self) -> Iterable[Metric]:
        yield selfmetrics.MEMORY_LIMIT_BYTES.family(self.soft_limit)
        yield selfmetrics.MEMORY_OVER_LIMIT.family(int(self.over))
        yield selfmetrics.MEMORY_LIMITER_REFUSALS.family(self.refusals)
