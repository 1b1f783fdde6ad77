"""A real PostgreSQL server for tests: initdb into a temporary folder, start on loopback, stop.

Needs Debian's postgresql package (scripts/system-deps.sh installs it for
`make test`).  As root, the server runs as the `postgres` user, which
PostgreSQL insists on.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

from .components import free_port, missing


def bindir() -> str | None:
    """The folder of the newest installed PostgreSQL's programs, or None."""
    return _bindir()


def _bindir() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(found[-1]) if found else None


class PostgresServer:
    """A running server: `dsn`, and `stop()`/`start()` to take it away and bring it back."""

    def __init__(self, dsn: str, start: list[str], stop: list[str]) -> None:
        self.dsn = dsn
        self._start, self._stop = start, stop

    def stop(self) -> None:
        subprocess.run(self._stop, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        subprocess.run(self._start, check=True, capture_output=True, timeout=60)


@contextlib.contextmanager
def postgres_server(parent: str | None = None, durable: bool = False) -> Iterator[PostgresServer]:
    """A fresh, empty PostgreSQL database on 127.0.0.1 (`.dsn`), stopped and removed after.

    Its files go under `parent` (default: the temporary folder). Tests run it without fsync;
    `durable` keeps the stock settings, for benchmarks."""
    bindir = _bindir()
    if bindir is None:
        missing("PostgreSQL server (Debian package postgresql: run make test)")
    root = tempfile.mkdtemp(prefix="apiusage-pg-", dir=parent)
    data, sockets = os.path.join(root, "data"), os.path.join(root, "sock")
    os.makedirs(sockets)
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chmod(root, 0o755)
        for path in (root, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    log = os.path.join(root, "server.log")

    def run(*args: str) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)
        if result.returncode:
            raise RuntimeError(f"{args[0]} failed: {result.stderr or result.stdout}")

    fast = "" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    start = [
        *prefix,
        f"{bindir}/pg_ctl",
        "-D",
        data,
        "-l",
        log,
        "-w",
        "-t",
        "120",
        "-o",
        f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1{fast}",
        "start",
    ]
    stop = [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"]
    try:
        run(
            f"{bindir}/initdb",
            "-D",
            data,
            "-U",
            "postgres",
            "-A",
            "trust",
            *(() if durable else ("--no-sync",)),
            "-E",
            "UTF8",
            "--locale=C",
        )
        run(*start[len(prefix) :])
        yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", start, stop)
    finally:
        if os.path.exists(os.path.join(data, "postmaster.pid")):
            subprocess.run(
                [*prefix, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=60,
            )
        shutil.rmtree(root, ignore_errors=True)
