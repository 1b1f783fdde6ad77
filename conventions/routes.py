"""Route templates compared by their parameter slots, whatever the framework's syntax.

``/v1/reports/{report_id}`` (OpenAPI, FastAPI), ``/v1/reports/:reportId`` (Express, Rails,
Gin), ``/v1/reports/<int:report_id>`` (Flask, Django) and ``/v1/reports/{id:[0-9]+}``
(gorilla/mux) name one route: the same literal text with one parameter in the same place.
:func:`route_key` reduces a template to that shape, the literal text with every parameter
slot written ``{}``, so the catalog (written in one syntax) matches the ``http.route`` of
spans (written in another). Labels keep the template as the framework wrote it; the key is
only for comparing.

A slot is any of (docs/catalog.md has the table):

- ``{name}``, ``{name:constraint}`` (ASP.NET ``{id:int}``, ``{*path}``; gorilla's regex
  constraints may themselves hold balanced braces, ``{id:[0-9]{3}}``);
- ``:name`` at the start of a segment or after ``-`` or ``.`` (Express ``:from-:to``), with an
  optional Express ``(regex)`` and ``?``/``*``/``+`` after it; a ``:`` elsewhere is text, so
  ``/v1/{name}:cancel`` (Google's custom methods) keeps its verb;
- ``<name>`` and ``<converter:name>`` (Flask, Django, Werkzeug's ``<any(a,b):x>``);
- ``*`` and ``**`` (Spring, Express 4), ``*name`` at the start of a segment (Gin, Rails,
  Express 5), and an Express ``(regex)`` group such as ``(.*)``;
- Express 5's quoted names, ``:"user-id"`` and ``*"path"``.

Optional groups read as their content, as an optional parameter reads as its slot: Express 5's
``{/:id}`` and ``{.:ext}`` (a ``{`` followed by ``/``, ``.`` or ``-``) and Rails' ``(/:id)`` (a
``(`` followed by ``/`` or ``.`` and a name). Rails' ``(.:format)``, on every Rails route and in
no other spelling, is dropped. Django's routes come without a leading ``/``, which the key
adds, and a ``re_path()`` regex (``^users/(?P<pk>[0-9]+)/$``) loses its ``^`` and ``$``. Go
1.22's ``Request.Pattern`` (``GET /items/{id}``, which many Go services report as ``http.route``)
loses its method, and its end anchor ``{$}`` is no slot.

A catch-all counts as one slot, like a parameter: FastAPI's ``{p:path}`` is ``{p}`` in its
own OpenAPI document, so the two must match.

Constraints and regexes are skipped, never compiled: a template cannot make matching slow.
Unbalanced brackets, control characters and templates longer than ``MAX_ROUTE_LENGTH`` are
:class:`RouteTemplateError` for :func:`parse_route` (the catalog reports them at load time)
and None for :func:`route_key` (a span's route that matches nothing).

Standard library only.
"""

from __future__ import annotations

import re
from functools import lru_cache

from .errors import ConventionsError

__all__ = ["MAX_ROUTE_LENGTH", "SLOT", "RouteTemplateError", "parse_route", "route_key"]

#: Longest template accepted; real ones are well under 200 characters.
MAX_ROUTE_LENGTH = 2048
#: How a parameter slot is written in a key.
SLOT = "{}"

_NAME_START = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_")
_NAME_CHARS = _NAME_START | frozenset("0123456789")
# Characters after which ``:name`` starts a parameter (Express allows ``:from-:to``, ``:a.:b``).
_COLON_AFTER = frozenset("/-.")
_MODIFIERS = frozenset("?*+")
# After `{`, these start an Express 5 optional group (`{.:ext}`, `{/:id}`), not a parameter;
# Ktor's tailcard `{...}` is a parameter.
_GROUP_START = frozenset("/.-")
_RAILS_FORMAT = "(.:format)"
_TEXT = re.compile(r"[^{}<>()*:]+")
_METHOD_PREFIX = re.compile(r"(?:GET|HEAD|POST|PUT|DELETE|CONNECT|OPTIONS|TRACE|PATCH)[ \t]+(?=/)")


class RouteTemplateError(ConventionsError, ValueError):
    """A route template that cannot be read; the message says what is wrong and where."""


def parse_route(template: str) -> str:
    """The key of ``template``: its literal text with each parameter slot as ``{}``.

    Raises RouteTemplateError for an unbalanced bracket, a control character, or a template
    longer than MAX_ROUTE_LENGTH.
    """
    if not isinstance(template, str):
        raise RouteTemplateError(f"expected a string (got {type(template).__name__})")
    if len(template) > MAX_ROUTE_LENGTH:
        raise RouteTemplateError(f"longer than {MAX_ROUTE_LENGTH} characters ({len(template)})")
    out: list[str] = []
    i = 0
    n = len(template)
    method = _METHOD_PREFIX.match(template)
    if method is not None:  # Go 1.22's Request.Pattern, `GET /items/{id}`
        i = method.end()
    elif template.startswith("^") or "(?P<" in template:
        # A Django re_path() route: its anchors are regex syntax, not part of the path.
        i = 1 if template.startswith("^") else 0
        if n > i and template.endswith("$") and not template.endswith("\\$"):
            n -= 1
    start = i
    # Optional groups read as their content (Express 5 `{/:id}`, Rails `(/:id)`), the way an
    # optional parameter reads as its slot: (closer, position of the opener).
    groups: list[tuple[str, int]] = []
    while i < n:
        c = template[i]
        if c == "{":
            if template.startswith("{$}", i):  # Go's end anchor: `/posts/{$}` is `/posts/`
                i += 3
                continue
            if i + 1 < n and template[i + 1] in _GROUP_START and not template.startswith("{...}", i):
                groups.append(("}", i))
                i += 1
                continue
            i = _closing(template, i, "{", "}")
        elif c == "<":
            end = template.find(">", i + 1)
            slash = template.find("/", i + 1, end if end >= 0 else n)
            if end < 0 or slash >= 0:
                raise RouteTemplateError(f"unbalanced '<' at position {i}")
            _check_printable(template, i + 1, end)
            i = end + 1
        elif c == "(":
            if template.startswith(_RAILS_FORMAT, i):
                i += len(_RAILS_FORMAT)  # on every Rails route, in no other spelling of it
                continue
            if _path_group_at(template, i):
                groups.append((")", i))
                i += 1
                continue
            i = _skip_modifier(template, _closing(template, i, "(", ")"))
        elif c in "})" and groups and groups[-1][0] == c:
            groups.pop()
            i += 1
            continue
        elif c == ":" and (i == start or template[i - 1] in _COLON_AFTER) and _param_at(template, i + 1):
            i = _param_end(template, i + 1)
            if i < n and template[i] == "(" and not _path_group_at(template, i):
                i = _closing(template, i, "(", ")")
            i = _skip_modifier(template, i)
        elif c == "*":
            at_segment_start = i == start or template[i - 1] == "/"
            while i < n and template[i] == "*":
                i += 1
            if at_segment_start and _param_at(template, i):
                i = _param_end(template, i)
        elif c in "})>":
            raise RouteTemplateError(f"unbalanced {c!r} at position {i}")
        elif not c.isprintable():
            raise RouteTemplateError(f"control character U+{ord(c):04X} at position {i}")
        else:
            # A run of literal text found and checked in C: most templates are mostly text, and
            # a span's route that misses the cache is parsed on the hot path.
            run = _TEXT.match(template, i, n)
            text = run.group() if run is not None else c  # c is a ':' that starts no parameter
            if not text.isprintable():
                j = next(j for j, ch in enumerate(text, i) if not ch.isprintable())
                raise RouteTemplateError(f"control character U+{ord(template[j]):04X} at position {j}")
            out.append(text)
            i += len(text)
            continue
        out.append(SLOT)
    if groups:
        closer, at = groups[-1]
        raise RouteTemplateError(f"unbalanced {'{' if closer == '}' else '('!r} at position {at}")
    key = "".join(out)
    # Django reports routes without their leading slash (`users/<int:id>/`).
    return key if not key or key.startswith("/") else "/" + key


@lru_cache(maxsize=4096)
def _cached_key(template: str) -> str | None:
    try:
        return parse_route(template)
    except RouteTemplateError:
        return None


def route_key(template: object) -> str | None:
    """The key of ``template`` (see parse_route), or None when it is not a readable template."""
    if not isinstance(template, str) or len(template) > MAX_ROUTE_LENGTH:
        return None
    return _cached_key(template)


def _closing(text: str, start: int, opener: str, closer: str) -> int:
    """The index after the bracket that closes the one at ``start`` (nested pairs balanced)."""
    depth = 0
    i = start
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\\" and opener == "(":  # an escaped parenthesis in an Express regex
            i += 2
            continue
        if c == opener:
            depth += 1
        elif c == closer:
            depth -= 1
            if depth == 0:
                _check_printable(text, start, i)
                return i + 1
        i += 1
    raise RouteTemplateError(f"unbalanced {opener!r} at position {start}")


def _check_printable(text: str, start: int, end: int) -> None:
    for j in range(start, end):
        if not text[j].isprintable():
            raise RouteTemplateError(f"control character U+{ord(text[j]):04X} at position {j}")


def _name_at(text: str, i: int) -> bool:
    return i < len(text) and text[i] in _NAME_START


def _name_end(text: str, i: int) -> int:
    n = len(text)
    while i < n and text[i] in _NAME_CHARS:
        i += 1
    return i


def _param_at(text: str, i: int) -> bool:
    """A parameter name at ``i``: an identifier, or an Express 5 quoted one closed in its segment."""
    if _name_at(text, i):
        return True
    if i < len(text) and text[i] == '"':
        end = text.find('"', i + 1)
        return end > i + 1 and "/" not in text[i + 1 : end]
    return False


def _param_end(text: str, i: int) -> int:
    if text[i] != '"':
        return _name_end(text, i)
    end = text.index('"', i + 1)
    _check_printable(text, i + 1, end)
    return end + 1


def _path_group_at(text: str, i: int) -> bool:
    """A Rails optional group at ``i`` (`(/:id)`, `(/page/:page)`), not an Express regex (`(.*)`)."""
    if not text.startswith(("(/", "(."), i):
        return False
    j = i + 2
    if j < len(text) and text[j] in ":*":
        j += 1
    return _name_at(text, j)


def _skip_modifier(text: str, i: int) -> int:
    return i + 1 if i < len(text) and text[i] in _MODIFIERS else i
