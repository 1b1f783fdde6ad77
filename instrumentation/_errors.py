"""The instrumentation's exception root: every error it raises on purpose derives from
InstrumentationError (`_config.ConfigurationError`; the catalog's `CatalogError` is to follow).

Imports nothing, so the catalog model (wherever it lives) can derive from it without
importing OpenTelemetry or FastAPI.  Errors that were a ValueError still are.
"""

from __future__ import annotations

__all__ = ["InstrumentationError"]


class InstrumentationError(Exception):
    """Base of the instrumentation's own errors; the message says what is wrong and how to fix it."""
