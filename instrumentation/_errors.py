"""The instrumentation's exception root: every error it raises on purpose derives from
InstrumentationError (`_config.ConfigurationError`). A catalog the instrumentation cannot use
raises the shared package's `CatalogError` (root `apiusage.conventions.errors.ConventionsError`),
which the instrumentation re-exports; at start-up it is reported as a ConfigurationError.
Errors that were a ValueError still are.
"""

from __future__ import annotations

__all__ = ["InstrumentationError"]


class InstrumentationError(Exception):
    """Base of the instrumentation's own errors; the message says what is wrong and how to fix it."""
