"""Settings from ``APIUSAGE_*`` environment variables (documented in docs/instrumentation.md).

Rule for bad values: a value we can safely ignore is logged and replaced by its
default, so a typo never takes the host service down. The two things that are not
safe to ignore fail at start-up with :class:`ConfigurationError`: a missing or short
pseudonymization key while a consumer resolver is active (we would otherwise have to
export raw ids or silently drop them), and a catalog or plan-tier file that cannot be
read or parsed (we would otherwise silently mislabel deprecations).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ._errors import InstrumentationError

_logger = logging.getLogger("apiusage.instrumentation")

ENV_PREFIX = "APIUSAGE_"
MIN_KEY_BYTES = 16
CONSUMER_SOURCES = ("header", "bearer", "state")
PLAN_TIER_SOURCES = ("state", "mapping")
FEATURE_SOURCES = ("catalog", "openapi", "tags")

#: Every variable this package reads, with its default (None: unset).
ENVIRONMENT_VARIABLES: dict[str, str | None] = {
    "APIUSAGE_PSEUDONYM_KEY": None,
    "APIUSAGE_PSEUDONYM_KEY_FILE": None,
    "APIUSAGE_CONSUMER_RESOLVER": "header",
    "APIUSAGE_CONSUMER_HEADER": "X-API-Key",
    "APIUSAGE_CONSUMER_STATE_ATTR": "consumer_id",
    "APIUSAGE_BEARER_CLAIM": "sub",
    "APIUSAGE_PLAN_TIER_RESOLVER": "state,mapping",
    "APIUSAGE_PLAN_TIER_STATE_ATTR": "plan_tier",
    "APIUSAGE_PLAN_TIERS": None,
    "APIUSAGE_DEFAULT_PLAN_TIER": "unknown",
    "APIUSAGE_CLIENT_NAME_HEADER": "X-Client-Name",
    "APIUSAGE_CLIENT_VERSION_HEADER": "X-Client-Version",
    "APIUSAGE_CLIENT_FROM_USER_AGENT": "true",
    "APIUSAGE_API_VERSION_HEADER": None,
    "APIUSAGE_API_VERSION": None,
    "APIUSAGE_FEATURE_SOURCES": "catalog,openapi,tags",
    "APIUSAGE_FEATURE_OPENAPI_KEY": "x-feature",
    "APIUSAGE_CATALOG": None,
    "APIUSAGE_SERVICE_NAME": None,
    "APIUSAGE_DEPRECATION_HEADERS": "true",
    # Schema version 2: names and shapes of what a request carried (never values).
    "APIUSAGE_PARAMETERS": "true",
    "APIUSAGE_BODY_FIELD_DEPTH": "1",
    "APIUSAGE_MAX_PARAMETER_NAMES": "32",
    "APIUSAGE_MAX_BODY_BYTES": "1048576",
    "APIUSAGE_BODY_SIZES": "true",
    "APIUSAGE_VALIDATION_ERRORS": "true",
    "APIUSAGE_MAX_VALIDATION_ERRORS": "10",
    "APIUSAGE_REGION_HEADERS": "",
}

#: (minimum, maximum) of each integer setting.
INTEGER_RANGES: dict[str, tuple[int, int]] = {
    "body_field_depth": (0, 16),
    "max_parameter_names": (0, 1000),
    "max_body_bytes": (0, 64 * 1024 * 1024),
    "max_validation_errors": (0, 1000),
}


class ConfigurationError(InstrumentationError, ValueError):
    """Configuration the instrumentation refuses to run with; the message says how to fix it."""


@dataclass(frozen=True)
class Settings:
    """Plain settings, as strings and flags; resolvers are built from them by the enricher."""

    pseudonym_key: bytes | None = field(default=None, repr=False)
    key_origin: str = "APIUSAGE_PSEUDONYM_KEY"
    consumer_resolver: tuple[str, ...] = ("header",)
    consumer_header: str = "X-API-Key"
    consumer_state_attr: str = "consumer_id"
    bearer_claim: str = "sub"
    plan_tier_resolver: tuple[str, ...] = PLAN_TIER_SOURCES
    plan_tier_state_attr: str = "plan_tier"
    plan_tiers_file: str | None = None
    default_plan_tier: str = "unknown"
    client_name_header: str | None = "X-Client-Name"
    client_version_header: str | None = "X-Client-Version"
    client_from_user_agent: bool = True
    api_version_header: str | None = None
    api_version: str | None = None
    feature_sources: tuple[str, ...] = FEATURE_SOURCES
    feature_openapi_key: str = "x-feature"
    catalog: str | None = None
    service_name: str | None = None
    deprecation_headers: bool = True
    parameters: bool = True
    body_field_depth: int = 1
    max_parameter_names: int = 32
    max_body_bytes: int = 1024 * 1024
    body_sizes: bool = True
    validation_errors: bool = True
    max_validation_errors: int = 10
    region_headers: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``APIUSAGE_*`` variables; unsafe problems raise ConfigurationError."""
        env = os.environ if environ is None else environ
        reader = _EnvReader(env)
        key, origin = _read_key(env)
        settings = cls(
            pseudonym_key=key,
            key_origin=origin,
            consumer_resolver=reader.sources(
                "APIUSAGE_CONSUMER_RESOLVER", CONSUMER_SOURCES, allow_callables=True
            ),
            consumer_header=reader.text("APIUSAGE_CONSUMER_HEADER"),
            consumer_state_attr=reader.text("APIUSAGE_CONSUMER_STATE_ATTR"),
            bearer_claim=reader.text("APIUSAGE_BEARER_CLAIM"),
            plan_tier_resolver=reader.sources(
                "APIUSAGE_PLAN_TIER_RESOLVER", PLAN_TIER_SOURCES, allow_callables=True
            ),
            plan_tier_state_attr=reader.text("APIUSAGE_PLAN_TIER_STATE_ATTR"),
            plan_tiers_file=reader.optional("APIUSAGE_PLAN_TIERS"),
            default_plan_tier=reader.text("APIUSAGE_DEFAULT_PLAN_TIER"),
            client_name_header=reader.optional_header("APIUSAGE_CLIENT_NAME_HEADER"),
            client_version_header=reader.optional_header("APIUSAGE_CLIENT_VERSION_HEADER"),
            client_from_user_agent=reader.flag("APIUSAGE_CLIENT_FROM_USER_AGENT"),
            api_version_header=reader.optional_header("APIUSAGE_API_VERSION_HEADER"),
            api_version=reader.optional("APIUSAGE_API_VERSION"),
            feature_sources=reader.sources("APIUSAGE_FEATURE_SOURCES", FEATURE_SOURCES),
            feature_openapi_key=reader.text("APIUSAGE_FEATURE_OPENAPI_KEY"),
            catalog=reader.optional("APIUSAGE_CATALOG"),
            service_name=reader.optional("APIUSAGE_SERVICE_NAME"),
            deprecation_headers=reader.flag("APIUSAGE_DEPRECATION_HEADERS"),
            parameters=reader.flag("APIUSAGE_PARAMETERS"),
            body_field_depth=reader.integer("APIUSAGE_BODY_FIELD_DEPTH", "body_field_depth"),
            max_parameter_names=reader.integer("APIUSAGE_MAX_PARAMETER_NAMES", "max_parameter_names"),
            max_body_bytes=reader.integer("APIUSAGE_MAX_BODY_BYTES", "max_body_bytes"),
            body_sizes=reader.flag("APIUSAGE_BODY_SIZES"),
            validation_errors=reader.flag("APIUSAGE_VALIDATION_ERRORS"),
            max_validation_errors=reader.integer("APIUSAGE_MAX_VALIDATION_ERRORS", "max_validation_errors"),
            region_headers=reader.names("APIUSAGE_REGION_HEADERS"),
        )
        return settings

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with the given fields replaced; ``None`` values mean "keep".

        The schema version 2 settings are checked (ConfigurationError naming the argument):
        unlike a typo in the environment, a wrong value in code is a bug to report at once.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        for name, value in given.items():
            if name in INTEGER_RANGES:
                low, high = INTEGER_RANGES[name]
                if type(value) is not int or not low <= value <= high:
                    raise ConfigurationError(
                        f"apiusage: instrument({name}={value!r}): expected an integer from {low} to {high}"
                    )
            elif name == "region_headers":
                if isinstance(value, str):
                    value = tuple(h.strip() for h in value.split(",") if h.strip())
                if not all(isinstance(h, str) and _is_header_name(h) for h in value):
                    raise ConfigurationError(
                        f"apiusage: instrument(region_headers={value!r}): expected HTTP header names"
                    )
                given[name] = tuple(value)
        return replace(self, **given)


def _is_header_name(name: str) -> bool:
    """An HTTP field name (RFC 9110 token)."""
    return bool(name) and all(c.isascii() and (c.isalnum() or c in "!#$%&'*+-.^_`|~") for c in name)


def parse_key(raw: str | bytes | None, origin: str) -> bytes | None:
    """The key as bytes; an empty value counts as missing."""
    if raw is None:
        return None
    key = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    key = key.strip()
    return key or None


def check_key(key: bytes | None, origin: str, why: str) -> bytes:
    """The key, or ConfigurationError saying exactly which variable to set."""
    if key is None:
        raise ConfigurationError(
            f"apiusage: refusing to start: {why}, but no pseudonymization key is set. "
            "Consumer ids are only ever exported as keyed HMACs, never raw. "
            f"Set APIUSAGE_PSEUDONYM_KEY (or APIUSAGE_PSEUDONYM_KEY_FILE) to a secret of at "
            f"least {MIN_KEY_BYTES} bytes shared by all replicas, or set "
            "APIUSAGE_CONSUMER_RESOLVER=none to export no consumer ids."
        )
    if len(key) < MIN_KEY_BYTES:
        raise ConfigurationError(
            f"apiusage: refusing to start: the pseudonymization key from {origin} is "
            f"{len(key)} bytes; use a secret of at least {MIN_KEY_BYTES} bytes "
            "(for example: python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    return key


def _read_key(env: Mapping[str, str]) -> tuple[bytes | None, str]:
    inline = parse_key(env.get("APIUSAGE_PSEUDONYM_KEY"), "APIUSAGE_PSEUDONYM_KEY")
    path = (env.get("APIUSAGE_PSEUDONYM_KEY_FILE") or "").strip()
    if inline is not None:
        if path:
            _logger.warning(
                "apiusage: both APIUSAGE_PSEUDONYM_KEY and APIUSAGE_PSEUDONYM_KEY_FILE are set; "
                "using APIUSAGE_PSEUDONYM_KEY"
            )
        return inline, "APIUSAGE_PSEUDONYM_KEY"
    if not path:
        return None, "APIUSAGE_PSEUDONYM_KEY"
    origin = f"APIUSAGE_PSEUDONYM_KEY_FILE ({path})"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        # A key file that was asked for but cannot be read is never silently ignored.
        raise ConfigurationError(
            f"apiusage: refusing to start: cannot read the pseudonymization key file "
            f"APIUSAGE_PSEUDONYM_KEY_FILE={path}: {exc.strerror or exc}"
        ) from None
    key = parse_key(data, origin)
    if key is None:
        raise ConfigurationError(
            f"apiusage: refusing to start: the key file APIUSAGE_PSEUDONYM_KEY_FILE={path} is empty"
        )
    return key, origin


class _EnvReader:
    _TRUE = frozenset({"1", "true", "yes", "on"})
    _FALSE = frozenset({"0", "false", "no", "off"})

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def _raw(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def _default(self, name: str) -> str:
        default = ENVIRONMENT_VARIABLES[name]
        assert default is not None
        return default

    def text(self, name: str) -> str:
        return self._raw(name) or self._default(name)

    def optional(self, name: str) -> str | None:
        return self._raw(name)

    def optional_header(self, name: str) -> str | None:
        value = self._raw(name)
        if value is None:
            return ENVIRONMENT_VARIABLES[name]
        # "none" turns a header source off.
        return None if value.lower() == "none" else value

    def flag(self, name: str) -> bool:
        default = self._default(name) == "true"
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in self._TRUE:
            return True
        if value.lower() in self._FALSE:
            return False
        _logger.warning(
            "apiusage: ignoring %s=%r (expected true or false); using %s",
            name,
            value,
            str(default).lower(),
        )
        return default

    def integer(self, name: str, field_name: str) -> int:
        default = int(self._default(name))
        value = self._raw(name)
        if value is None:
            return default
        low, high = INTEGER_RANGES[field_name]
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            _logger.warning(
                "apiusage: ignoring %s=%r (expected an integer from %d to %d); using %d",
                name,
                value,
                low,
                high,
                default,
            )
            return default
        return number

    def names(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of header names; malformed ones are logged and skipped."""
        value = self._raw(name)
        if value is None:
            return ()
        result = []
        for item in (s.strip() for s in value.split(",")):
            if not item:
                continue
            if _is_header_name(item):
                result.append(item)
            else:
                _logger.warning("apiusage: ignoring %r in %s: not an HTTP header name", item, name)
        return tuple(result)

    def sources(self, name: str, known: tuple[str, ...], allow_callables: bool = False) -> tuple[str, ...]:
        value = self._raw(name)
        if value is None:
            return tuple(s.strip() for s in self._default(name).split(","))
        if value.lower() == "none":
            return ()
        result = []
        for item in (s.strip() for s in value.split(",")):
            if not item:
                continue
            if item.lower() in known:
                result.append(item.lower())
            elif allow_callables and ":" in item:
                result.append(item)
            else:
                hint = " or module:function" if allow_callables else ""
                _logger.warning(
                    "apiusage: ignoring unknown source %r in %s (known: %s%s, or none)",
                    item,
                    name,
                    ", ".join(known),
                    hint,
                )
        return tuple(result)
