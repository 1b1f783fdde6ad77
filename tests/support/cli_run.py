"""Run `apiusage ...` as a subprocess and measure it: exit status, output, peak RSS, wall time."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .processor import apiusage_command

# The child's address space is capped so that a regression (an alias bomb expanding again)
# fails the test with MemoryError instead of taking the machine's memory.
_ADDRESS_SPACE_LIMIT = 2 << 30


@dataclass(frozen=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    peak_rss_bytes: int
    seconds: float


def _limit_child() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (_ADDRESS_SPACE_LIMIT, _ADDRESS_SPACE_LIMIT))


def _vm_hwm(pid: int) -> int:
    """The peak RSS of `pid`'s current program (0 once it has exited)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def run_apiusage(args: list[str], cwd: Path, timeout: float = 15) -> CliRun:
    """`apiusage *args` in `cwd`; killed (and the test failed) after `timeout` seconds.

    The peak RSS is VmHWM, read while the child runs: its rusage ru_maxrss also counts the
    forked copy of this pytest process before exec (300 MiB here is 300 MiB there).
    """
    out, err = cwd / ".cli-stdout", cwd / ".cli-stderr"
    with out.open("wb") as fo, err.open("wb") as fe:
        start = time.monotonic()
        process = subprocess.Popen(
            [*apiusage_command(), *args],
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=fo,
            stderr=fe,
            preexec_fn=_limit_child,
        )
        deadline = start + timeout
        peak = 0
        while True:
            peak = max(peak, _vm_hwm(process.pid))
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.kill(process.pid, signal.SIGKILL)
                os.wait4(process.pid, 0)
                process.returncode = -9
                raise AssertionError(f"apiusage {' '.join(args)} still running after {timeout}s")
            time.sleep(0.02)
        seconds = time.monotonic() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    return CliRun(
        process.returncode,
        out.read_text(errors="replace"),
        err.read_text(errors="replace"),
        peak or usage.ru_maxrss * 1024,
        seconds,
    )
