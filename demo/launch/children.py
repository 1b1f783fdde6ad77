"""Child processes of the demo, each in its own process group, stopped group by group.

Every child starts in a new session (so a terminal's Ctrl-C reaches only the demo,
which then stops the children in order: traffic first, the processor last so it
drains what the others sent). Stopping sends SIGTERM to the child's whole process
group, waits, then SIGKILLs the group: grandchildren go too. On Linux each child
also gets SIGTERM from the kernel if the demo itself dies (PR_SET_PDEATHSIG), so
even `kill -9` of the demo leaves no orphans behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["Child", "ChildError", "wait_until"]

_PR_SET_PDEATHSIG = 1
try:
    _libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
except OSError:  # pragma: no cover - no C library to load
    _libc = None


def _die_with_parent() -> None:  # runs in the child between fork and exec: keep it minimal
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildError(Exception):
    """A child could not start, or stopped on its own; the message says which and where its log is."""


class Child:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        env: dict[str, str] | None = None,
        cwd: str | os.PathLike | None = None,
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log
        self.env = env
        self.cwd = cwd
        self.pass_fds = tuple(pass_fds)  # file descriptors the child inherits (a listening socket)
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            try:
                self.process = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    pass_fds=self.pass_fds,
                    start_new_session=True,
                    preexec_fn=_die_with_parent if _libc is not None else None,
                )  # noqa: PLW1509
            except OSError as exc:
                raise ChildError(
                    f"cannot start {self.name} ({self.argv[0]}): {exc.strerror or exc}"
                ) from None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exit_status(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal_group(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)  # the child leads its own group: pgid == pid

    def stop(self, timeout: float = 10.0, hurry: Callable[[], bool] = lambda: False) -> int | None:
        """SIGTERM to the group, wait up to `timeout` (or until `hurry()`), then SIGKILL; the status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline and not hurry():
                time.sleep(0.05)
            if self.process.poll() is None:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(5)
        # The leader is gone; anything it left in its group goes now.
        self._signal_group(signal.SIGKILL)
        return self.process.returncode


def wait_until(check, timeout: float, interval: float = 0.1, while_running: Child | None = None):
    """Poll `check()` until it returns a true value or `timeout` passes; None then.

    With `while_running`, give up as soon as that child exits.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if while_running is not None and not while_running.running():
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)
