"""Settings (plus in-code overrides) turned into an Enricher: resolvers, pseudonymizer, catalog."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from apiusage.conventions.catalog import Catalog, CatalogError, load_catalog

from ._config import ConfigurationError, Settings, check_key
from ._enrich import Enricher
from ._resolvers import (
    ApiKeyHeader,
    BearerSubject,
    PlanTierMapping,
    Pseudonymizer,
    RequestState,
    import_callable,
)

_logger = logging.getLogger("apiusage.instrumentation")

_Source = str | Callable[..., Any]
ConsumerSpec = _Source | Sequence[_Source] | bool | None
PlanTierSpec = str | Path | Mapping[str, str] | Callable[..., Any] | Sequence[_Source] | None
# A built-in resolver's name -> its resolver (None: configured off, e.g. no mapping file).
_Builtins = Mapping[str, Callable[[], Callable[..., Any] | None]]


def build_enricher(
    settings: Settings,
    consumer: ConsumerSpec = None,
    plan_tier: PlanTierSpec = None,
    catalog: str | Path | Catalog | None = None,
) -> Enricher:
    """Turn settings (plus in-code overrides) into an enricher; ConfigurationError if unsafe."""
    consumers = _consumer_resolvers(settings, consumer)
    pseudonymizer = None
    if consumers:
        if consumer is None:
            value = ",".join(settings.consumer_resolver)
            default = " (the default)" if settings.consumer_resolver == ("header",) else ""
            why = f"consumer resolution is on: APIUSAGE_CONSUMER_RESOLVER={value}{default}"
        else:
            why = f"consumer resolution is on: instrument(consumer={_describe(consumers)})"
        pseudonymizer = Pseudonymizer(check_key(settings.pseudonym_key, settings.key_origin, why))
    elif settings.pseudonym_key is not None:
        pseudonymizer = Pseudonymizer(settings.pseudonym_key)
    tiers = _plan_tier_resolvers(settings, plan_tier, pseudonymizer)
    return Enricher(settings, consumers, tiers, pseudonymizer, _catalog(settings, catalog))


def _describe(resolvers: Iterable[Any]) -> str:
    return ", ".join(getattr(r, "__qualname__", None) or repr(r) for r in resolvers)


def _consumer_resolvers(settings: Settings, spec: ConsumerSpec) -> list[Callable[..., Any]]:
    if spec is False:
        return []
    builtins: _Builtins = {
        "header": lambda: ApiKeyHeader(settings.consumer_header),
        "bearer": lambda: BearerSubject(settings.bearer_claim),
        "state": lambda: RequestState(settings.consumer_state_attr),
    }
    items = settings.consumer_resolver if spec is None or spec is True else _items(spec)
    return _resolvers(items, builtins, "APIUSAGE_CONSUMER_RESOLVER")


def _plan_tier_resolvers(
    settings: Settings, spec: PlanTierSpec, pseudonymizer: Pseudonymizer | None
) -> list[Callable[..., Any]]:
    builtins: _Builtins = {
        "state": lambda: RequestState(settings.plan_tier_state_attr),
        "mapping": lambda: (
            _mapping_file(settings.plan_tiers_file, pseudonymizer) if settings.plan_tiers_file else None
        ),
    }
    items: Sequence[Any]
    if spec is None:
        items = settings.plan_tier_resolver
    elif isinstance(spec, Mapping):
        items = [PlanTierMapping(spec, pseudonymize=pseudonymizer)]
    elif isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith((".yaml", ".yml", ".json"))):
        items = [_mapping_file(str(spec), pseudonymizer)]
    else:
        items = _items(spec)
    return _resolvers(items, builtins, "APIUSAGE_PLAN_TIER_RESOLVER")


def _items(spec: Any) -> Sequence[Any]:
    """An in-code spec as a list of resolvers and names: "a,b", "none", a callable, a sequence."""
    if isinstance(spec, str):
        return () if spec.strip().lower() == "none" else [s.strip() for s in spec.split(",")]
    if callable(spec):
        return [spec]
    return list(spec)


def _resolvers(items: Iterable[Any], builtins: _Builtins, variable: str) -> list[Callable[..., Any]]:
    """Callables as they are, built-in names built, any other name imported (skipped if it fails)."""
    out = []
    for item in items:
        if callable(item):
            resolver = item
        elif isinstance(item, str) and item in builtins:
            resolver = builtins[item]()
        else:
            resolver = _import(item, variable)
        if resolver is not None:
            out.append(resolver)
    return out


def _mapping_file(path: str, pseudonymizer: Pseudonymizer | None) -> PlanTierMapping:
    mapping = PlanTierMapping.from_file(path)
    mapping.pseudonymize = pseudonymizer
    return mapping


def _import(reference: str, variable: str) -> Callable[..., Any] | None:
    try:
        return import_callable(reference)
    except Exception as exc:
        # Safe to skip: without it we export less, never a raw id.
        _logger.error("apiusage: ignoring %s entry %r: %s: %s", variable, reference, type(exc).__name__, exc)
        return None


def _catalog(settings: Settings, spec: str | Path | Catalog | None) -> Catalog | None:
    if isinstance(spec, Catalog):
        return spec
    path = spec if spec is not None else settings.catalog
    if path is None:
        return None
    try:
        return load_catalog(path)
    except CatalogError as exc:
        origin = "" if spec is not None else " (APIUSAGE_CATALOG)"
        raise ConfigurationError(f"apiusage: refusing to start: bad catalog{origin}: {exc}") from None
