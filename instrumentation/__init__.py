"""Auto-instrument a FastAPI service so its server spans carry API usage context.

One line::

    from apiusage.instrumentation import instrument
    instrument(app)

or zero code: ``opentelemetry-instrument uvicorn app:app`` (see docs/instrumentation.md).
A service's feedback endpoint calls ``record_feedback(score, category, route=None)``.

Names are imported lazily (PEP 562) so that ``import apiusage.instrumentation.catalog``
(the old path of ``apiusage.conventions.catalog``) does not import OpenTelemetry or FastAPI.

Errors it raises on purpose derive from one root, ``InstrumentationError``
(``ConfigurationError``, ``CatalogError``, ``FeedbackError``); those that were a ValueError still are.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ATTR_API_VERSION",
    "ATTR_CLIENT_NAME",
    "ATTR_CLIENT_VERSION",
    "ATTR_CONSUMER_ID",
    "ATTR_DEPRECATED",
    "ATTR_FEATURE",
    "ATTR_PLAN_TIER",
    "ATTR_SCHEMA_VERSION",
    "ApiKeyHeader",
    "ApiUsageConfigurator",
    "ApiUsageDistro",
    "ApiUsageInstrumentor",
    "ApiUsageMiddleware",
    "BearerSubject",
    "Catalog",
    "CatalogError",
    "ConfigurationError",
    "ENVIRONMENT_VARIABLES",
    "Endpoint",
    "Enricher",
    "FeedbackError",
    "InstrumentationError",
    "PlanTierMapping",
    "Pseudonymizer",
    "RedactingSpanProcessor",
    "RequestState",
    "SCHEMA_VERSION",
    "ServiceCatalog",
    "Settings",
    "catalog_from_openapi",
    "instrument",
    "load_catalog",
    "record_feedback",
]

# name -> module that defines it (relative to this package, or absolute)
_LOCATIONS = {
    "ATTR_API_VERSION": "apiusage.conventions.attributes",
    "ATTR_CLIENT_NAME": "apiusage.conventions.attributes",
    "ATTR_CLIENT_VERSION": "apiusage.conventions.attributes",
    "ATTR_CONSUMER_ID": "apiusage.conventions.attributes",
    "ATTR_DEPRECATED": "apiusage.conventions.attributes",
    "ATTR_FEATURE": "apiusage.conventions.attributes",
    "ATTR_PLAN_TIER": "apiusage.conventions.attributes",
    "ATTR_SCHEMA_VERSION": "apiusage.conventions.attributes",
    "SCHEMA_VERSION": "apiusage.conventions.attributes",
    "ApiKeyHeader": "._resolvers",
    "BearerSubject": "._resolvers",
    "PlanTierMapping": "._resolvers",
    "Pseudonymizer": "._resolvers",
    "RequestState": "._resolvers",
    "ApiUsageConfigurator": "._auto",
    "ApiUsageDistro": "._auto",
    "ApiUsageInstrumentor": "._auto",
    "ApiUsageMiddleware": "._middleware",
    "Catalog": "apiusage.conventions.catalog",
    "CatalogError": "apiusage.conventions.catalog",
    "Endpoint": "apiusage.conventions.catalog",
    "ServiceCatalog": "apiusage.conventions.catalog",
    "load_catalog": "apiusage.conventions.catalog",
    "catalog_from_openapi": "._openapi",
    "ConfigurationError": "._config",
    "InstrumentationError": "._errors",
    "ENVIRONMENT_VARIABLES": "._config",
    "Settings": "._config",
    "Enricher": "._enrich",
    "RedactingSpanProcessor": "._redact",
    "instrument": "._setup",
    "record_feedback": "._feedback",
    "FeedbackError": "._feedback",
}


def __getattr__(name: str) -> Any:
    module = _LOCATIONS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:
    from apiusage.conventions.attributes import (
        ATTR_API_VERSION,
        ATTR_CLIENT_NAME,
        ATTR_CLIENT_VERSION,
        ATTR_CONSUMER_ID,
        ATTR_DEPRECATED,
        ATTR_FEATURE,
        ATTR_PLAN_TIER,
        ATTR_SCHEMA_VERSION,
        SCHEMA_VERSION,
    )
    from apiusage.conventions.catalog import Catalog, CatalogError, Endpoint, ServiceCatalog, load_catalog

    from ._auto import ApiUsageConfigurator, ApiUsageDistro, ApiUsageInstrumentor
    from ._config import ENVIRONMENT_VARIABLES, ConfigurationError, Settings
    from ._enrich import Enricher
    from ._errors import InstrumentationError
    from ._feedback import FeedbackError, record_feedback
    from ._middleware import ApiUsageMiddleware
    from ._openapi import catalog_from_openapi
    from ._redact import RedactingSpanProcessor
    from ._resolvers import (
        ApiKeyHeader,
        BearerSubject,
        PlanTierMapping,
        Pseudonymizer,
        RequestState,
    )
    from ._setup import instrument
