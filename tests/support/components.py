"""Real components a test needs: skip when missing, but fail under CI=true (CI must have them)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def missing(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is missing; CI must install it")
    pytest.skip(f"{what} is not installed")
