"""Route templates compared by their parameter slots: every framework's syntax, hostile input."""

from __future__ import annotations

import string
import time

import pytest
from apiusage.conventions.routes import MAX_ROUTE_LENGTH, RouteTemplateError, parse_route, route_key
from hypothesis import example, given, settings
from hypothesis import strategies as st


@pytest.mark.parametrize(
    "template",
    [
        "/v1/reports/{report_id}",  # OpenAPI, FastAPI, Spring
        "/v1/reports/{id}",
        "/v1/reports/{}",
        "/v1/reports/{id:int}",  # ASP.NET, Starlette convertors
        "/v1/reports/{id?}",  # ASP.NET optional
        "/v1/reports/{*rest}",  # ASP.NET catch-all
        "/v1/reports/{**rest}",
        "/v1/reports/{p:path}",  # Starlette catch-all; its OpenAPI document says {p}
        "/v1/reports/{id:[0-9]+}",  # gorilla/mux
        "/v1/reports/{id:[0-9]{3}}",  # a regex holding braces
        "/v1/reports/{id:(?:a|b){1,2}}",
        "/v1/reports/:id",  # Express, Rails, Gin
        "/v1/reports/:reportId",
        "/v1/reports/:report_id(\\d+)",  # Express regex constraint
        "/v1/reports/:id?",  # Express optional
        "/v1/reports/<id>",  # Flask, Django
        "/v1/reports/<int:id>",
        "/v1/reports/<any(a, b):kind>",  # Werkzeug converter arguments
        "/v1/reports/*",  # Spring, Express 4
        "/v1/reports/**",
        "/v1/reports/*filepath",  # Gin, Rails glob, Express 5
        "/v1/reports/(.*)",  # Express unnamed regex parameter
        "/v1/reports/(\\d+)",
    ],
)
def test_every_syntax_is_one_slot(template: str) -> None:
    assert parse_route(template) == "/v1/reports/{}"
    assert route_key(template) == "/v1/reports/{}"


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("/v1/users/{user_id}/orders", "/v1/users/{}/orders"),
        ("/v1/users/:userId/orders", "/v1/users/{}/orders"),
        ("/v1/users/<int:user_id>/orders/<order_id>", "/v1/users/{}/orders/{}"),
        ("/flights/:from-:to", "/flights/{}-{}"),  # Express: after '-' and '.'
        ("/plantae/:genus.:species", "/plantae/{}.{}"),
        ("/v1/files/{name}.{ext}", "/v1/files/{}.{}"),
        ("/v1/{a}{b}", "/v1/{}{}"),
        ("/v1/{name}:cancel", "/v1/{}:cancel"),  # Google custom methods keep their verb
        ("/v1/things:batchGet", "/v1/things:batchGet"),
        ("/v1/a:b/:c", "/v1/a:b/{}"),
        ("/v1/:", "/v1/:"),  # no name after ':': text
        ("/v1/:1", "/v1/:1"),
        ("/ab*cd", "/ab{}cd"),  # a wildcard inside a segment takes no name
        ("/a/*.*", "/a/{}.{}"),
        ("/", "/"),
        ("", ""),
        ("/v1/health", "/v1/health"),
        ("/v1/ünïcode/{x}", "/v1/ünïcode/{}"),
    ],
)
def test_keys(template: str, key: str) -> None:
    assert parse_route(template) == key


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/v1/{id", "unbalanced '{' at position 4"),
        ("/v1/id}", "unbalanced '}' at position 6"),
        ("/v1/{id:[0-9]{3}", "unbalanced '{' at position 4"),
        ("/v1/<id", "unbalanced '<' at position 4"),
        ("/v1/<id/x>", "unbalanced '<' at position 4"),
        ("/v1/id>", "unbalanced '>' at position 6"),
        ("/v1/(.*", "unbalanced '(' at position 4"),
        ("/v1/.*)", "unbalanced ')' at position 6"),
        ("/v1/:id(\\d+", "unbalanced '(' at position 7"),
        ("/v1/\x00", "control character U+0000 at position 4"),
        ("/v1/x\ty", "control character U+0009 at position 5"),
        ("/v1/{id\x1b}", "control character U+001B at position 7"),
        ("/v1/<\x7f>", "control character U+007F at position 5"),
        ("/" + "a" * MAX_ROUTE_LENGTH, f"longer than {MAX_ROUTE_LENGTH} characters ({MAX_ROUTE_LENGTH + 1})"),
    ],
)
def test_unreadable_templates(template: str, message: str) -> None:
    with pytest.raises(RouteTemplateError) as info:
        parse_route(template)
    assert str(info.value) == message
    assert route_key(template) is None  # at span time: a safe non-match


@pytest.mark.parametrize("value", [None, 42, b"/v1", ["/v1"]])
def test_not_a_string(value: object) -> None:
    assert route_key(value) is None
    with pytest.raises(RouteTemplateError, match="expected a string"):
        parse_route(value)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "template",
    [
        "/" + "{" * 2000,
        "/" + "{" * 1000 + "}" * 1000,
        "/" + "(" * 2000,
        "/" + "(a+)+" * 400,  # a regex bomb, skipped and never compiled
        "/{id:" + "(a|aa)*" * 280 + "}",
        "/" + "<" * 2000,
        "/" + "*" * 2000,
        "/" + ":a-" * 680,
        "/" + "\\(" * 1000,
    ],
)
def test_hostile_templates_are_fast(template: str) -> None:
    started = time.perf_counter()
    for _ in range(20):
        try:
            parse_route(template)
        except RouteTemplateError:
            pass
        route_key(template)
    assert time.perf_counter() - started < 1.0


@given(st.text(max_size=300))
@example("{}{}}")
@example("/:a(\\")
@settings(max_examples=1000)
def test_any_text_gives_a_key_or_a_clear_error(template: str) -> None:
    try:
        key = parse_route(template)
    except RouteTemplateError as exc:
        assert str(exc) and "\n" not in str(exc)
        assert route_key(template) is None
        return
    assert route_key(template) == key
    assert parse_route(key) == key  # a key is its own key
    assert key.isprintable()


NAME = st.text(string.ascii_letters + "_", min_size=1, max_size=12).filter(lambda n: n[0] != "_")
LITERAL = st.text(string.ascii_lowercase + string.digits + "-_.", min_size=1, max_size=10)
SEGMENT = st.one_of(LITERAL.map(lambda s: ("text", s)), NAME.map(lambda s: ("param", s)))
# Every framework's spelling of a parameter that fills one whole segment.
SPELLINGS = [
    "{%s}",
    "{%s:int}",
    "{%s:[0-9]{1,3}}",
    ":%s",
    ":%s(\\d+)",
    "<%s>",
    "<int:%s>",
    "*%s",
]


@given(
    st.lists(SEGMENT, min_size=1, max_size=8), st.lists(st.sampled_from(SPELLINGS), min_size=8, max_size=8)
)
@settings(max_examples=300)
def test_a_route_in_any_syntax_has_one_key(segments: list[tuple[str, str]], spellings: list[str]) -> None:
    """Same literal text and slots, any parameter names and syntaxes: the same key."""
    canonical = "/" + "/".join("{}" if kind == "param" else text for kind, text in segments)
    written = "/" + "/".join(
        spellings[i] % text if kind == "param" else text for i, (kind, text) in enumerate(segments)
    )
    assert route_key(written) == canonical
    renamed = "/" + "/".join(f"{{{text}_other}}" if kind == "param" else text for kind, text in segments)
    assert route_key(renamed) == canonical


@given(st.lists(LITERAL, min_size=1, max_size=6), st.integers(0, 5))
def test_literal_text_is_never_a_slot(parts: list[str], where: int) -> None:
    """Changing literal text changes the key: different routes stay apart."""
    template = "/" + "/".join(parts)
    other = list(parts)
    other[where % len(parts)] += "x"
    assert route_key(template) == template
    assert route_key("/" + "/".join(other)) != route_key(template)


# Templates as other frameworks' instrumentations report them in `http.route`, each with the
# key of its OpenAPI spelling: the two must meet, or the catalog silently misses the endpoint.
@pytest.mark.parametrize(
    ("template", "key"),
    [
        # Rails (action_pack reports the journey pattern): every route carries an optional
        # `(.:format)` that no other spelling has; other optional groups read as their content,
        # as an optional parameter (`:id?`, `{id?}`) reads as its slot.
        ("/posts(.:format)", "/posts"),
        ("/posts/:id(.:format)", "/posts/{}"),
        ("/posts/:post_id/comments(.:format)", "/posts/{}/comments"),
        ("/posts/:id/edit(.:format)", "/posts/{}/edit"),
        ("/photos(/:id)(.:format)", "/photos/{}"),
        ("(/:locale)/posts(.:format)", "/{}/posts"),
        ("/files/*path(.:format)", "/files/{}"),
        # Express 5 (path-to-regexp 8): braces are optional groups, names may be quoted.
        ("/files/:name{.:ext}", "/files/{}.{}"),  # = Express 4 /files/:name.:ext?
        ("/users{/:id}/delete", "/users/{}/delete"),  # = Express 4 /users/:id?/delete
        ("/files{/*path}", "/files/{}"),
        ("/users{/:id{/:action}}", "/users/{}/{}"),
        ('/users/:"user-id"', "/users/{}"),
        ('/files/*"file path"', "/files/{}"),
        # Django: `ResolverMatch.route` has no leading slash; re_path routes are regexes.
        ("users/<int:id>/", "/users/{}/"),
        ("api/v1/users/<uuid:pk>/orders/", "/api/v1/users/{}/orders/"),
        ("^users/(?P<pk>[^/.]+)/$", "/users/{}/"),
        ("api/users/(?P<pk>[0-9]+)/$", "/api/users/{}/"),
        # ASP.NET Core controllers: RoutePattern.RawText, without a leading slash.
        ("api/Products/{id:int:min(1)}", "/api/Products/{}"),
        # Go 1.22 ServeMux: services set http.route to Request.Pattern, `[METHOD ]/path`, where
        # `{$}` anchors the end (no slot) and `{path...}` is a catch-all.
        ("GET /items/{id}", "/items/{}"),
        ("DELETE  /items/{id}", "/items/{}"),
        ("GET /posts/{$}", "/posts/"),
        ("/files/{path...}", "/files/{}"),
        # Ktor: `{...}` is the tailcard, a catch-all parameter (an Express 5 group needs a name).
        ("/files/{...}", "/files/{}"),
    ],
)
def test_other_frameworks_meet_their_openapi_spelling(template: str, key: str) -> None:
    assert route_key(template) == key
    assert parse_route(template) == key


@pytest.mark.parametrize(
    ("template", "key"),
    [
        ("/v1/reports/(.*)", "/v1/reports/{}"),  # an Express regex, not a Rails group
        ("/v1/reports/(.+)", "/v1/reports/{}"),
        ("/v1/reports/:id(\\d+)", "/v1/reports/{}"),
        ("/v1/reports/{*rest}", "/v1/reports/{}"),  # ASP.NET catch-all, not an Express 5 group
        ("/v1/price$", "/v1/price$"),  # a '$' is text unless the route is a Django regex
        ("/v1/a^b", "/v1/a^b"),
        ('/v1/a:"b"', '/v1/a:"b"'),  # mid-segment ':' is text, quoted or not
        ('/v1/:"unclosed', '/v1/:"unclosed'),
        ("/v1/GET /x", "/v1/GET /x"),  # a method only at the very start is Go's prefix
        ("FETCH /x", "/FETCH /x"),  # not an HTTP method: text
        ("/v1/{$}x", "/v1/x"),
    ],
)
def test_groups_and_quotes_do_not_change_other_syntax(template: str, key: str) -> None:
    assert parse_route(template) == key


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("/users{/:id", "unbalanced '{' at position 6"),
        ("/posts(.:format", "unbalanced '(' at position 6"),
        ("/photos(/:id", "unbalanced '(' at position 7"),
        ("/users{/:id)", "unbalanced ')' at position 11"),
        ('/users/:"user\x00id"', "control character U+0000 at position 13"),  # inside a quoted name
    ],
)
def test_unclosed_groups(template: str, message: str) -> None:
    with pytest.raises(RouteTemplateError) as info:
        parse_route(template)
    assert str(info.value) == message


@pytest.mark.parametrize(
    "template",
    ["/" + "{/" * 1000, "/" + "{/a" * 680 + "}" * 680, "/" + "(/a" * 680 + ")" * 680, "/:a(/:a" * 300],
)
def test_nested_groups_are_fast(template: str) -> None:
    started = time.perf_counter()
    for _ in range(20):
        route_key(template + "x")  # a new string each time: no cache hit
        try:
            parse_route(template)
        except RouteTemplateError:
            pass
    assert time.perf_counter() - started < 1.0
