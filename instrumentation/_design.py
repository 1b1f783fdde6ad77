"""Schema version 2: what a request carried, as names and sizes, never values.

One :class:`Exchange` per request (made by the middleware) counts the body bytes that pass
through ``receive`` and ``send``, keeps a JSON request body of at most ``max_body_bytes``
to read its field names, and holds the request validation errors the framework reported;
:meth:`Exchange.attributes` turns that into span attributes once the response is complete.

A list that was cut at its cap ends with one extra entry, :data:`TRUNCATED`, after the
kept names: "more than these were sent". No real name is ever that string (a name equal to
it is dropped), so a reader can tell a cut list from one that happens to be full.
"""

from __future__ import annotations

import heapq
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote_plus

try:  # reads a JSON object's keys without building its values: ~7x cheaper than json.loads
    import msgspec
except ImportError:  # pragma: no cover - a dependency of the instrumentation extra
    msgspec = None  # type: ignore[assignment]

from apiusage.conventions.attributes import (
    ATTR_BODY_FIELDS,
    ATTR_CLIENT_REGION,
    ATTR_QUERY_PARAMETERS,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
    ERROR_TYPE,
    HTTP_REQUEST_BODY_SIZE,
    HTTP_RESPONSE_BODY_SIZE,
    INVALID,
    TRUNCATED,
)

from ._config import Settings, _is_header_name

_logger = logging.getLogger("apiusage.instrumentation")

#: Longer names (and validation locations and types) are cut to this many characters.
MAX_NAME_LENGTH = 128
#: Only this much of a query string is read for names (servers refuse far shorter URLs;
#: this bounds the work on a hostile one); a longer one counts as cut.
MAX_QUERY_BYTES = 64 * 1024
#: A query parameter or JSON key longer than this is not a name (it is recorded as INVALID).
MAX_NAME_CHARS = 40
# A name: a letter, "_", "$" (OData's $filter) or "@" (JSON-LD's @id) first, then ASCII
# letters, digits and _ - . [ ] (filter[status], a.b, x-y); at most MAX_NAME_CHARS.
_NAME = re.compile(rf"[A-Za-z_$@][A-Za-z0-9_.\-\[\]]{{0,{MAX_NAME_CHARS - 1}}}")
# Runs of letters and digits inside a name-shaped string that look like a key or token:
# 16 or more with a digit among them (sk_live_51H..., hex digests), or more than 32.
_RUN = re.compile(r"[A-Za-z0-9]{16,}")
_DIGIT = re.compile(r"[0-9]")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-")
# Region values a CDN sends that are not a country: Cloudflare's XX (no country known),
# and ZZ, the ISO 3166 user-assigned code conventionally used for "unknown". (Cloudflare's
# T1, Tor, is not two letters and fails the shape check.)
_NOT_A_COUNTRY = frozenset({"XX", "ZZ"})
_LETTERS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
# A query string with its values removed ("q=a&limit=2" -> "q&limit"): the cache key of
# its names, which repeat across requests while the values do not.
_QUERY_VALUES = re.compile(rb"=[^&]*")
#: Query strings whose names part is longer than this are not cached.
_QUERY_KEY_BYTES = 512
_QUERY_CACHE: dict[tuple[bytes, int], tuple[str, ...]] = {}
_QUERY_CACHE_LIMIT = 1024


class Design:
    """The schema version 2 settings, looked up once; None-like when everything is off."""

    def __init__(self, settings: Settings) -> None:
        s = settings
        self.query_names = s.parameters and s.max_parameter_names > 0
        self.body_depth = s.body_field_depth if s.parameters and s.max_parameter_names > 0 else 0
        self.max_names = s.max_parameter_names
        self.max_body = s.max_body_bytes
        self.sizes = s.body_sizes
        self.validation = s.validation_errors and s.max_validation_errors > 0
        self.max_errors = s.max_validation_errors
        self.region_headers = _header_names(s.region_headers)
        # Whether receive() must be wrapped at all.
        self.wrap_receive = self.sizes or self.body_depth > 0

    def json_body_wanted(self, headers: Mapping[bytes, bytes]) -> bool:
        """Whether to keep the body to read its field names: JSON, and not declared too large."""
        if self.body_depth <= 0:
            return False
        content_type = headers.get(b"content-type")
        if content_type is None or not is_json(content_type):
            return False
        length = headers.get(b"content-length")
        if length is not None:
            try:
                return int(length) <= self.max_body
            except ValueError:
                return False
        return True


def _header_names(value: Any) -> tuple[bytes, ...]:
    """Trusted header names, lower-case bytes; from a Settings made directly too, where a
    plain string (``"CF-IPCountry"``) would otherwise be read as its letters and a name
    that is not ASCII would fail every request's middleware construction."""
    names = value.split(",") if isinstance(value, str) else value
    result = []
    for name in names or ():
        name = name.strip() if isinstance(name, str) else ""
        if _is_header_name(name):
            result.append(name.lower().encode("ascii"))
        elif name:
            _logger.warning("apiusage: ignoring region header %r: not an HTTP header name", name)
    return tuple(result)


def header_map(raw: Iterable[tuple[bytes, bytes]] | None) -> dict[bytes, bytes]:
    """Raw header name -> the first value sent under it (as Starlette's ``headers.get``)."""
    items = raw if type(raw) is list else list(raw or ())
    headers = dict(items)  # one C call; only a repeated name needs the loop
    if len(headers) != len(items):
        headers = {}
        for name, value in items:
            headers.setdefault(name, value)
    return headers


def is_json(content_type: bytes) -> bool:
    """``application/json`` and structured-syntax ``+json`` types, any parameters."""
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (media.startswith(b"application/") and media.endswith(b"+json"))


class Exchange:
    """One request's counts, kept body and validation errors (the middleware fills them)."""

    __slots__ = (
        "scope",
        "app",
        "headers",
        "enricher",
        "received",
        "complete",
        "disconnected",
        "buffer",
        "sent",
        "status",
        "validation",
        "finished",
    )

    def __init__(self, scope: dict[str, Any], enricher: Any) -> None:
        self.scope = scope
        # The app the middleware serves, whose routes name the spans: a mounted app sets
        # scope["app"] to itself while it runs.
        self.app = scope.get("app")
        self.headers = header_map(scope.get("headers"))
        self.enricher = enricher
        self.received = 0
        self.complete = False  # the last request body message arrived
        self.disconnected = False  # the client left before the body was complete
        self.buffer: bytearray | None = None  # the JSON body so far, while within the bound
        self.sent = -1  # response body bytes; -1: no response started through us
        self.status = 0
        self.validation: list[tuple[str, str]] | None = None
        self.finished = False

    def attributes(
        self, design: Design, existing: Mapping[str, Any], error: BaseException | None
    ) -> dict[str, Any]:
        """The schema version 2 attributes; ``existing`` are the span's (OpenTelemetry's win)."""
        scope = self.scope
        out: dict[str, Any] = {}
        if design.query_names:
            query = scope.get("query_string")
            if query:
                names = query_parameter_names(query, design.max_names)
                if names:
                    out[ATTR_QUERY_PARAMETERS] = names
        if design.body_depth > 0 and self.complete and self.buffer:
            fields = body_field_names(bytes(self.buffer), design.body_depth, design.max_names)
            if fields:
                out[ATTR_BODY_FIELDS] = fields
        if design.sizes:
            if existing.get(HTTP_REQUEST_BODY_SIZE) is None:
                size = self._request_size()
                if size is not None:
                    out[HTTP_REQUEST_BODY_SIZE] = size
            if self.sent >= 0 and existing.get(HTTP_RESPONSE_BODY_SIZE) is None:
                out[HTTP_RESPONSE_BODY_SIZE] = self.sent
        if self.validation:
            locations, types = validation_lists(self.validation, design.max_errors)
            out[ATTR_VALIDATION_LOCATIONS] = locations
            out[ATTR_VALIDATION_TYPES] = types
        if existing.get(ERROR_TYPE) is None:
            if error is not None:
                out[ERROR_TYPE] = type(error).__qualname__
            elif self.status >= 500:
                out[ERROR_TYPE] = str(self.status)
        if design.region_headers:
            region = client_region(self.headers, design.region_headers)
            if region:
                out[ATTR_CLIENT_REGION] = region
        return out

    def _request_size(self) -> int | None:
        if self.complete or self.disconnected:
            # What the app actually read; after a disconnect mid-body, what the client sent
            # (not the Content-Length it promised).
            return self.received
        # The app did not read the whole body: what the client declared, if it did.
        declared = self.headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                return None
            return size if size >= 0 else None
        if b"transfer-encoding" in self.headers or self.scope.get("http_version") not in ("1.0", "1.1"):
            # A body of unknown length the app did not read (HTTP/2 may send one without
            # Content-Length): not known, not guessed.
            return self.received or None
        return 0  # HTTP/1.x without Content-Length or Transfer-Encoding: no body


def is_name(text: str) -> bool:
    """Whether a client-chosen key is shaped like a name a schema declares, not like a value.

    Clients put values where names go (``?sk_live_51H...`` without ``=``, a JWT as the
    name, a JSON object keyed by emails, ids or IP addresses): such a "name" must not leave
    the service, so only identifier-shaped names are recorded, and every other one counts
    as :data:`INVALID`. The rule is deliberately narrow (ASCII, at most 40 characters, no
    token-like run of letters and digits, no UUID); a real name it refuses still shows up
    as INVALID, never as its text.
    """
    if text in _NAMES_SEEN:  # names repeat across requests; one dict lookup then
        return True
    if _NAME.fullmatch(text) is None:
        return False
    if len(text) >= 16:
        for run in _RUN.findall(text):
            if len(run) > 32 or _DIGIT.search(run):
                return False
        if _UUID.search(text):
            return False
    if len(_NAMES_SEEN) >= _NAMES_SEEN_LIMIT:
        _NAMES_SEEN.clear()  # many distinct names: a reset is cheaper than an LRU
    _NAMES_SEEN.add(text)
    return True


# Names that passed is_name(), at most _NAMES_SEEN_LIMIT of them (a few hundred KiB).
_NAMES_SEEN: set[str] = set()
_NAMES_SEEN_LIMIT = 4096


def _clip(name: str) -> str:
    return name if len(name) <= MAX_NAME_LENGTH else name[:MAX_NAME_LENGTH]


def _capped(names: set[str], cap: int, cut: bool = False) -> tuple[str, ...]:
    """The names sorted, the first ``cap`` of them, then TRUNCATED if there were more."""
    names.discard(TRUNCATED)
    names.discard("")
    if len(names) <= cap:
        kept = tuple(sorted(names))
        return (*kept, TRUNCATED) if cut and kept else kept
    return (*heapq.nsmallest(cap, names), TRUNCATED)


def query_parameter_names(query: bytes, cap: int) -> tuple[str, ...]:
    """The distinct names of a raw query string, percent-decoded (UTF-8), sorted and capped."""
    if len(query) <= MAX_QUERY_BYTES:
        key = (_QUERY_VALUES.sub(b"", query), cap)
        names = _QUERY_CACHE.get(key)
        if names is None:
            names = _query_names(query, cap)
            if len(key[0]) <= _QUERY_KEY_BYTES:
                if len(_QUERY_CACHE) >= _QUERY_CACHE_LIMIT:
                    _QUERY_CACHE.clear()  # as _NAMES_SEEN: a reset is cheaper than an LRU
                _QUERY_CACHE[key] = names
        return names
    return _query_names(query, cap)


def _query_names(query: bytes, cap: int) -> tuple[str, ...]:
    cut = len(query) > MAX_QUERY_BYTES
    if cut:  # the last pair may be cut in the middle of its name: not a name
        query = query[:MAX_QUERY_BYTES].rpartition(b"&")[0]
    names: set[str] = set()
    for pair in query.split(b"&"):
        raw = pair.partition(b"=")[0]
        if not raw:
            continue
        if b"%" in raw or b"+" in raw:
            name = unquote_plus(raw.decode("latin-1"), encoding="utf-8", errors="replace")
        else:
            name = raw.decode("utf-8", errors="replace")
        names.add(name if is_name(name) else INVALID)
    return _capped(names, cap, cut)


def body_field_names(body: bytes, depth: int, cap: int) -> tuple[str, ...]:
    """The field names of a JSON object body down to ``depth`` ("a", "a.b"); () if not one.

    Names at every level are kept (a nested object's own name too); array items are not
    expanded (``{"items": [{"sku": 1}]}`` gives ``("items",)``).
    """
    if depth <= 0:
        return ()
    names: set[str] = set()
    if _RAW_OBJECT is not None:
        try:
            _walk_raw(_RAW_OBJECT.decode(body), "", depth, names)
            return _capped(names, cap)
        except msgspec.ValidationError:  # JSON, but not an object
            return ()
        except (msgspec.DecodeError, RecursionError):
            # What msgspec refuses and Python's json may still read (NaN, a BOM, UTF-16,
            # a lone surrogate, bytes that are not UTF-8 in a key): read as below.
            names.clear()
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, RecursionError):  # not JSON: no second parse of it
        return ()
    except ValueError:  # JSON the strict parse refuses only for its values (see _lenient)
        document = _lenient(body)
    if type(document) is not dict:
        return ()
    _walk(document, "", depth, names)
    return _capped(names, cap)


# A JSON object decoded to its keys, each value kept as its raw bytes (not converted).
_RAW_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw]) if msgspec is not None else None
_OPEN_BRACE = ord("{")


def _walk_raw(obj: dict[str, Any], prefix: str, depth: int, names: set[str]) -> None:
    """:func:`_walk` over msgspec's raw values: a nested object is decoded only if walked."""
    for key, value in obj.items():
        if "." in key or not is_name(key):
            names.add(_clip(prefix + INVALID))
            continue
        name = prefix + key
        names.add(name if len(name) <= MAX_NAME_LENGTH else name[:MAX_NAME_LENGTH])
        if depth > 1 and memoryview(value)[0] == _OPEN_BRACE:
            _walk_raw(_RAW_OBJECT.decode(value), name + ".", depth - 1, names)


def _skip(_: str) -> None:
    return None


def _lenient(body: bytes) -> Any:
    """The body parsed for its keys alone, or None: values are never converted, so a number
    of more than 4300 digits (int's limit) does not hide the names, and bytes that are not
    UTF-8 (a ``charset=latin-1`` body, a broken value) only spoil the strings they are in
    (a key with one is not name-shaped)."""
    try:
        text = body.decode("utf-8-sig", errors="replace")
        return json.loads(text, parse_int=_skip, parse_float=_skip, parse_constant=_skip)
    except (ValueError, RecursionError):
        return None


def _walk(obj: dict[str, Any], prefix: str, depth: int, names: set[str]) -> None:
    for key, value in obj.items():
        if "." in key or not is_name(key):
            # A key that is a value (an email, an id, a host name: "." also joins nested
            # names, so a JSON key never has one): one marker, and nothing below it.
            names.add(_clip(prefix + INVALID))
            continue
        name = prefix + key
        names.add(name if len(name) <= MAX_NAME_LENGTH else name[:MAX_NAME_LENGTH])
        if depth > 1 and type(value) is dict and value:
            _walk(value, name + ".", depth - 1, names)


def validation_errors(errors: Sequence[Any]) -> list[tuple[str, str]]:
    """(location, type) of each error of a FastAPI/pydantic error list: ("body.quantity", "missing").

    A list index in the location becomes ``*`` (``body.items.*.qty``): the field clients get
    wrong is the same whichever item it was in, and indexes would be label values without bound.
    So does any part that is not name-shaped (:func:`is_name`): a key of a ``dict`` body
    field is the client's value (``body.scores.*``, never ``body.scores.alice@example.com``).
    """
    result = []
    for error in errors:
        if not isinstance(error, Mapping):
            continue
        loc = error.get("loc")
        if isinstance(loc, (list, tuple)):
            location = ".".join(
                part if type(part) is str and "." not in part and is_name(part) else "*" for part in loc
            )
        else:
            location = "" if loc is None else loc if type(loc) is str and is_name(loc) else "*"
        result.append((_clip(location), _clip(str(error.get("type") or ""))))
    return result


def validation_lists(errors: Sequence[tuple[str, str]], cap: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The two parallel lists, in the framework's order, cut at ``cap`` with TRUNCATED in both."""
    kept = errors[:cap]
    locations = tuple(location for location, _ in kept)
    types = tuple(kind for _, kind in kept)
    if len(errors) > cap:
        return (*locations, TRUNCATED), (*types, TRUNCATED)
    return locations, types


def client_region(headers: Mapping[bytes, bytes], wanted: tuple[bytes, ...]) -> str | None:
    """The country code of the first trusted header present, if it is one (else None)."""
    for name in wanted:
        raw = headers.get(name)
        if raw is None:
            continue
        value = raw.strip()
        if len(value) != 2 or not (value[0] in _LETTERS and value[1] in _LETTERS):
            return None
        code = value.decode("ascii").upper()
        return None if code in _NOT_A_COUNTRY else code
    return None


#: The current request's Exchange, for record_feedback() and the validation-error hook.
CURRENT: ContextVar[Exchange | None] = ContextVar("apiusage_exchange", default=None)
