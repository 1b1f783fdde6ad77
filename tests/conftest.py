"""Hypothesis profiles: `dev` (few examples, the inner loop) unless CI=true picks `ci` (more).

HYPOTHESIS_PROFILE=ci (or dev) chooses one explicitly. Tests that set their own example count
take it from tests.support.examples.examples() so it follows the profile too.
"""

from __future__ import annotations

import os

from hypothesis import settings

settings.register_profile("dev", max_examples=20)
settings.register_profile("ci", max_examples=200, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
)
