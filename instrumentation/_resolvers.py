"""Who is calling, on which plan, with which client: resolvers and the pseudonymizer.

A consumer resolver is any ``callable(request) -> str | None``; a plan-tier resolver is
any ``callable(request, consumer) -> str | None`` where ``consumer`` is the raw consumer
id found for the request (never exported). The built-in resolvers accept both call
forms, so e.g. :class:`RequestState` serves either role.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib
import json
import logging
import re
from collections.abc import Callable, Mapping, MutableMapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import yaml
from starlette.requests import Request

from ._config import ConfigurationError

_logger = logging.getLogger("apiusage.instrumentation")

#: Attribute values we derive from request data are capped: they are labels downstream.
MAX_VALUE_LENGTH = 64


class ConsumerResolver(Protocol):
    def __call__(self, request: Request, /) -> str | None: ...


class PlanTierResolver(Protocol):
    def __call__(self, request: Request, consumer: str | None, /) -> str | None: ...


class Pseudonymizer:
    """Keyed HMAC-SHA256 of a raw id: stable across restarts and replicas sharing the key."""

    def __init__(self, key: bytes) -> None:
        self._base = hmac.new(key, digestmod=hashlib.sha256)
        # Raw ids repeat a lot (the same API key on every request); keep the last few.
        self._cached = lru_cache(maxsize=8192)(self._compute)

    def _compute(self, raw: str) -> str:
        mac = self._base.copy()
        mac.update(raw.encode("utf-8"))
        # 128 bits is plenty to keep consumers apart and keeps the id short.
        return mac.hexdigest()[:32]

    def __call__(self, raw: str) -> str:
        return self._cached(raw)


# The ``_fast`` methods of the built-in resolvers are what the enricher calls on every
# request instead of building a Request: ``headers`` maps raw ASGI header names (lower-case
# bytes) to the first raw value sent, and every ``_fast`` takes the same arguments.
_RawHeaders = Mapping[bytes, bytes]


class ApiKeyHeader:
    """The value of an API-key header (``X-API-Key`` by default)."""

    def __init__(self, header: str = "X-API-Key") -> None:
        self.header = header

    @property
    def header(self) -> str:
        return self._header

    @header.setter
    def header(self, name: str) -> None:
        self._header = name.lower()
        self._raw = self._header.encode("latin-1")

    def __call__(self, request: Request, consumer: str | None = None) -> str | None:
        return request.headers.get(self.header) or None

    def _fast(
        self, headers: _RawHeaders, scope: MutableMapping[str, Any], consumer: str | None = None
    ) -> str | None:
        value = headers.get(self._raw)
        return value.decode("latin-1") if value else None

    @property
    def _headers(self) -> tuple[str, ...]:
        return (self.header,)

    def __repr__(self) -> str:
        return f"ApiKeyHeader({self.header!r})"


class BearerSubject:
    """The subject of an ``Authorization: Bearer`` token.

    For a JWT the claim (``sub`` by default) is read from the payload. The signature is
    not checked: authenticating is the service's job, this only names the caller for
    analytics. An opaque (non-JWT) token is itself the consumer's credential, so the
    token is used as the raw id (and, like every raw id, only leaves as an HMAC).
    """

    def __init__(self, claim: str = "sub") -> None:
        self.claim = claim

    def __call__(self, request: Request, consumer: str | None = None) -> str | None:
        return self._parse(request.headers.get("authorization"))

    def _fast(
        self, headers: _RawHeaders, scope: MutableMapping[str, Any], consumer: str | None = None
    ) -> str | None:
        value = headers.get(b"authorization")
        return self._parse(value.decode("latin-1")) if value else None

    _headers = ("authorization",)

    def _parse(self, value: str | None) -> str | None:
        if not value:
            return None
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return _jwt_claim(token, self.claim) if token.count(".") == 2 else token

    def __repr__(self) -> str:
        return f"BearerSubject({self.claim!r})"


@lru_cache(maxsize=4096)
def _jwt_claim(token: str, claim: str) -> str | None:
    payload = token.split(".")[1]
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        # Not a JWT after all: treat it as an opaque token.
        return token
    if not isinstance(data, dict):
        return token
    value = data.get(claim)
    if value is None or isinstance(value, (dict, list)):
        return None
    return str(value)


class RequestState:
    """An attribute of ``request.state`` that the service's own auth code set."""

    def __init__(self, attribute: str) -> None:
        self.attribute = attribute

    def __call__(self, request: Request, consumer: str | None = None) -> str | None:
        return self._fast({}, request.scope)

    def _fast(
        self, headers: _RawHeaders, scope: MutableMapping[str, Any], consumer: str | None = None
    ) -> str | None:
        value = scope.get("state", {}).get(self.attribute)
        return None if value is None else str(value)

    _headers = ()

    def __repr__(self) -> str:
        return f"RequestState({self.attribute!r})"


class PlanTierMapping:
    """Plan tier from a static mapping of consumer id (raw or pseudonymous) to tier."""

    def __init__(
        self,
        tiers: Mapping[str, str],
        default: str | None = None,
        pseudonymize: Callable[[str], str] | None = None,
    ) -> None:
        self.tiers = dict(tiers)
        self.default = default
        self.pseudonymize = pseudonymize

    @classmethod
    def from_file(cls, path: str | Path) -> PlanTierMapping:
        """Read ``{default: TIER, consumers: {ID: TIER}}`` from YAML or JSON."""
        source = str(path)
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigurationError(
                f"apiusage: refusing to start: cannot read the plan tier file {source}: {exc.strerror or exc}"
            ) from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"{source}: not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigurationError(f"{source}: expected a mapping with a 'consumers' key")
        unknown = set(data) - {"default", "consumers"}
        if unknown:
            raise ConfigurationError(
                f"{source}: {sorted(unknown)[0]}: unknown key (allowed: default, consumers)"
            )
        consumers = data.get("consumers") or {}
        if not isinstance(consumers, dict):
            raise ConfigurationError(f"{source}: consumers: expected a mapping of id to tier")
        tiers = {}
        for key, tier in consumers.items():
            if not isinstance(tier, str) or not tier:
                raise ConfigurationError(f"{source}: consumers.{key}: expected a tier name")
            tiers[str(key)] = tier
        default = data.get("default")
        if default is not None and not isinstance(default, str):
            raise ConfigurationError(f"{source}: default: expected a tier name")
        return cls(tiers, default)

    def __call__(self, request: Request | None, consumer: str | None = None) -> str | None:
        if consumer is None:
            return self.default
        tier = self.tiers.get(consumer)
        if tier is None and self.pseudonymize is not None:
            tier = self.tiers.get(self.pseudonymize(consumer))
        return tier if tier is not None else self.default

    def _fast(
        self, headers: _RawHeaders, scope: MutableMapping[str, Any], consumer: str | None = None
    ) -> str | None:
        return self(None, consumer)

    def __repr__(self) -> str:
        return f"PlanTierMapping({len(self.tiers)} consumers, default={self.default!r})"


def import_callable(reference: str) -> Callable[..., Any]:
    """``package.module:attribute`` → the callable it names."""
    module_name, _, attr = reference.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected module:function, got {reference!r}")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{reference} is not callable")
    return obj


_API_VERSION_PREFIX = re.compile(r"^/(v\d+(?:\.\d+)*)(?:/|$)", re.IGNORECASE)


@lru_cache(maxsize=1024)
def api_version_from_route(route: str) -> str | None:
    """``v1`` for ``/v1/orders/{id}``."""
    match = _API_VERSION_PREFIX.match(route)
    return match.group(1).lower() if match else None


def clip(value: str | None) -> str | None:
    """A trimmed, bounded attribute value, or None for an empty one."""
    if value is None:
        return None
    value = value.strip()
    return value[:MAX_VALUE_LENGTH] if value else None
