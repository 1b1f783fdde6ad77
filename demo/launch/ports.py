"""The demo's loopback ports: defaults, the flag that changes each, and a check before start-up."""

from __future__ import annotations

import errno
import socket
from collections.abc import Container
from dataclasses import dataclass

__all__ = ["HOST", "PORTS", "Port", "PortError", "claim"]

HOST = "127.0.0.1"  # everything the demo starts listens on loopback only


@dataclass(frozen=True)
class Port:
    name: str  # attribute of the parsed arguments, e.g. "prometheus_port"
    what: str  # what listens there, for messages
    default: int

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


PORTS = (
    Port("otlp_grpc_port", "the processor's OTLP/gRPC receiver", 4317),
    Port("otlp_http_port", "the processor's OTLP/HTTP receiver", 4318),
    Port("metrics_port", "the processor's metrics and runbooks", 9464),
    Port("api_port", "the demo API (orders-api)", 8000),
    Port("prometheus_port", "Prometheus", 9090),
    Port("alertmanager_port", "Alertmanager", 9093),
)


class PortError(Exception):
    """A port cannot be used; the message names it and the flag that changes it."""


def _free() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _check(port: int) -> int | None:
    """None when `port` can be bound on loopback now, else the errno."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # like the servers we start
        try:
            s.bind((HOST, port))
        except OSError as exc:
            return exc.errno or errno.EADDRINUSE
    return None


def claim(requested: dict[str, int], skip: Container[str] = frozenset()) -> dict[str, int]:
    """Each port checked (0: a free one chosen); PortError naming the first one taken.

    `skip` names ports of components that will not run (Prometheus not installed).
    """
    out: dict[str, int] = {}
    for spec in PORTS:
        if spec.name in skip:
            continue
        port = requested[spec.name]
        if not 0 <= port <= 65535:
            raise PortError(f"{spec.flag} {port}: not a port number (0 picks a free one)")
        if port == 0:
            port = _free()
            while port in out.values():
                port = _free()
        elif port in out.values():
            other = next(p for p in PORTS if out.get(p.name) == port)
            raise PortError(
                f"port {port} is given to both {other.what} ({other.flag}) and "
                f"{spec.what} ({spec.flag}); choose another with {spec.flag} PORT"
            )
        else:
            err = _check(port)
            if err is not None:
                why = (
                    "is already in use"
                    if err == errno.EADDRINUSE
                    else f"cannot be used ({errno.errorcode.get(err, err)})"
                )
                raise PortError(
                    f"port {port} for {spec.what} {why} on {HOST}; choose another "
                    f"with {spec.flag} PORT (0 picks a free one)"
                )
        out[spec.name] = port
    return out
