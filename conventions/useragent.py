"""The client name and version a User-Agent names: the one parser of the instrumentation and the processor.

The instrumentation sets ``apiusage.client.name``/``version`` from it when a request sends no
SDK headers; the processor uses it for spans that carry no ``apiusage.client.*`` attributes.
Both call :func:`parse_user_agent`, so a client has one name whichever side read its header.

The rules (docs/attributes.md, "Client from the User-Agent"):

- The first product of the header, ``token ["/" token]`` (RFC 9110, section 10.1.5), after
  leading spaces and tabs.
- The name is lower-cased; it must start with a letter or digit and have at most
  ``MAX_NAME_LENGTH`` characters, else there is no client (``1password-cli`` is a name, a
  200-character token is not).
- The version is the token after ``/`` as written (``2.0.0-beta.1``, ``v2.1``); it must start
  with a letter or digit and have at most ``MAX_VERSION_LENGTH`` characters, else it is None.
- ``Mozilla`` and ``Opera`` (any case) are every browser's first product and name no client:
  the client is ``browser``, without a version.

Both results are printable ASCII without spaces, double quotes or backslashes (RFC 9110 token
characters; ``'`` and `` ` `` are among them), so they are safe label values as they are.
"""

from __future__ import annotations

import re

__all__ = ["BROWSER", "MAX_NAME_LENGTH", "MAX_VERSION_LENGTH", "parse_user_agent"]

MAX_NAME_LENGTH = 64
MAX_VERSION_LENGTH = 32
#: The client name of every web browser.
BROWSER = "browser"

_TCHAR = r"!#$%&'*+.^_`|~0-9A-Za-z-"
# Bounded repeats and a look-ahead for the token's end: a token one character too long fails
# to match (is not cut), and no input makes the match scan further than the bound.
_PRODUCT = re.compile(
    rf"([0-9A-Za-z][{_TCHAR}]{{0,{MAX_NAME_LENGTH - 1}}})(?![{_TCHAR}])"
    rf"(?:/([0-9A-Za-z][{_TCHAR}]{{0,{MAX_VERSION_LENGTH - 1}}})(?![{_TCHAR}]))?"
)
_BROWSER_PRODUCTS = frozenset(("mozilla", "opera"))
_NONE: tuple[None, None] = (None, None)
# Header values of distinct clients repeat; ids inside them (rare) would not, hence the reset.
_CACHE_LIMIT = 4096
_MAX_CACHED_LENGTH = 512

_cache: dict[str, tuple[str | None, str | None]] = {}


def parse_user_agent(user_agent: object) -> tuple[str | None, str | None]:
    """``("my-sdk", "1.2.3")`` for ``My-SDK/1.2.3 (linux)``, ``("browser", None)`` for a browser,
    ``(None, None)`` when it names no client (not a string, empty, no product)."""
    if not isinstance(user_agent, str):
        return _NONE
    cached = _cache.get(user_agent)
    if cached is not None:
        return cached
    match = _PRODUCT.match(user_agent.lstrip(" \t"))
    if match is None:
        result: tuple[str | None, str | None] = _NONE
    else:
        name = match.group(1).lower()
        result = (BROWSER, None) if name in _BROWSER_PRODUCTS else (name, match.group(2))
    if len(user_agent) <= _MAX_CACHED_LENGTH:  # a cache of 1 MiB keys would hold gigabytes
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[user_agent] = result
    return result
