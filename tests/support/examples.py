"""Example counts for property tests that set their own: the full count under the `ci` profile."""

from __future__ import annotations

from hypothesis import settings


def examples(ci: int) -> int:
    """`ci` under the ci profile (tests/conftest.py), a tenth of it (at least 10) otherwise."""
    if settings.get_current_profile_name() == "ci":
        return ci
    return max(10, ci // 10)
