"""Real components a test needs: skip when missing, but fail under CI=true (CI must have them)."""

from __future__ import annotations

import os
import socket
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; CI must install it")
    pytest.skip(f"{what} is not installed")


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
