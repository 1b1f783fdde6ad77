"""The shared package's exception root: `ConventionsError`.

Its errors (`catalog.CatalogError`, `routes.RouteTemplateError`, `_yaml.YamlError`) are what
both sides see when a file people write cannot be used: the instrumentation and the
processor catch this one class, or the specific one. It cannot derive from either side's root
(`InstrumentationError`, `ProcessorError`), since this package imports neither.
"""

from __future__ import annotations

__all__ = ["ConventionsError"]


class ConventionsError(Exception):
    """Base of the shared package's errors; the message says what is wrong and where."""
