"""The endpoint catalog, now defined in `apiusage.conventions.catalog`; this module keeps its old import path.

The instrumentation and the processor read one model: see that module and docs/catalog.md.
"""

from apiusage.conventions.catalog import (
    HTTP_METHODS,
    Catalog,
    CatalogError,
    Endpoint,
    ServiceCatalog,
    dump_catalog,
    load_catalog,
    merge_endpoint,
    parse_catalog,
    route_key,
)

__all__ = [
    "Catalog",
    "CatalogError",
    "Endpoint",
    "HTTP_METHODS",
    "ServiceCatalog",
    "dump_catalog",
    "load_catalog",
    "merge_endpoint",
    "parse_catalog",
    "route_key",
]
