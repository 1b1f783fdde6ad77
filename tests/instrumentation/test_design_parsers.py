"""The cheap paths for names give what the plain ones give: msgspec's key-only JSON read
against json.loads, and the cache of query names against a fresh parse."""

from __future__ import annotations

import json
import random

import pytest
from apiusage.instrumentation import _design
from apiusage.instrumentation._design import INVALID, TRUNCATED, body_field_names, query_parameter_names
from hypothesis import given, settings
from hypothesis import strategies as st

STRIPE = "sk_live_51HxYzAbCdEfGhIjKlMnOpQr"


def with_json_only(body: bytes, depth: int, cap: int, monkeypatch: pytest.MonkeyPatch) -> tuple[str, ...]:
    with monkeypatch.context() as patch:
        patch.setattr(_design, "_RAW_OBJECT", None)
        return body_field_names(body, depth, cap)


BODIES = [
    b'{"a": {"b": {"c": {"d": 1}}, "e": []}, "f": 1}',
    b'{"a": 1, "a": {"x": 1}}',  # a repeated key: the last value wins in both
    b'{"a": {"x": 1}, "a": 5}',
    b'{"a": {}, "b": {"": 1, "c": null}}',
    b' \n\t{"a" : [ {"b": 1} ] , "c":{"d":{"e":"f"}}}  \r\n',
    b'{"a\\u002eb": 1, "caf\\u00e9": 2, "ok": {"a\\"b": 1}}',  # escapes: dots and quotes in keys
    b'{"a": NaN, "b": Infinity, "c": {"d": -Infinity}}',  # Python's json only
    b'\xef\xbb\xbf{"a": 1, "b": {"c": 2}}',  # a byte order mark: Python's json only
    '{"a": 1, "b": {"c": 2}}'.encode("utf-16"),  # Python's json only
    b'{"\\ud800": 1, "b": 2}',  # a lone surrogate escape: Python's json only
    b'{"a": "\xff\xfe", "b": {"c": "\xff"}}',  # not UTF-8 inside values
    '{"café": 1, "b": 1}'.encode("latin-1"),  # not UTF-8 in a key
    b'{"a": ' + b"9" * 5000 + b', "b": {"c": 1e999}}',  # more digits than int() converts
    b'{"a": [' + b"[" * 5000 + b"]" * 5000 + b"]}",  # deeper than either parser goes
    b'{"a": {"b": ' * 3000 + b"1" + b"}}" * 3000,
    b'{"a": 1',
    b'{"a": 1} {"b": 2}',
    b'{"a": tru}',
    b"[1, 2]",
    b'"text"',
    b"",
    b"\x00\x01",
    json.dumps({f"user{i}@example.com": {"x": i} for i in range(2000)} | {"sku": {"n": 1}}).encode(),
    json.dumps({STRIPE: {"nested": 1}, "scores": {"203.0.113.7": 1, "ok": {"deep": 2}}}).encode(),
    json.dumps({f"k{i:03d}": {f"c{j}": j for j in range(20)} for i in range(60)}).encode(),
]


@pytest.mark.parametrize("body", BODIES, ids=range(len(BODIES)))
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_msgspec_names_are_jsons_names(body, depth, monkeypatch):
    assert _design._RAW_OBJECT is not None, "msgspec is a dependency of the instrumentation extra"
    assert body_field_names(body, depth, 32) == with_json_only(body, depth, 32, monkeypatch)


def test_the_bodies_give_the_names_expected():
    assert body_field_names(BODIES[0], 3, 10) == ("a", "a.b", "a.b.c", "a.e", "f")
    assert body_field_names(BODIES[1], 2, 10) == ("a", "a.x")
    assert body_field_names(BODIES[2], 2, 10) == ("a",)
    assert body_field_names(BODIES[3], 2, 10) == ("a", "b", f"b.{INVALID}", "b.c")  # "" is no name
    assert body_field_names(BODIES[4], 3, 10) == ("a", "c", "c.d", "c.d.e")
    assert body_field_names(BODIES[5], 2, 10) == (INVALID, "ok", f"ok.{INVALID}")
    assert body_field_names(BODIES[6], 2, 10) == ("a", "b", "c", "c.d")
    assert body_field_names(BODIES[7], 2, 10) == ("a", "b", "b.c")
    assert body_field_names(BODIES[8], 2, 10) == ("a", "b", "b.c")
    assert body_field_names(BODIES[9], 1, 10) == (INVALID, "b")
    assert body_field_names(BODIES[10], 2, 10) == ("a", "b", "b.c")
    assert body_field_names(BODIES[11], 1, 10) == (INVALID, "b")
    assert body_field_names(BODIES[12], 2, 10) == ("a", "b", "b.c")
    for body in BODIES[13:22]:
        assert body_field_names(body, 2, 10) == ()
    assert body_field_names(BODIES[22], 2, 10) == (INVALID, "sku", "sku.n")
    first = ("k000", "k000.c0", "k000.c1", "k000.c10", "k000.c11")
    assert body_field_names(BODIES[24], 2, 5) == (*first, TRUNCATED)


def test_an_ordinary_body_is_not_parsed_by_json(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("json.loads was called")

    monkeypatch.setattr(_design.json, "loads", refuse)
    assert body_field_names(b'{"sku": "A", "lines": [{"q": 1}], "ship": {"city": "Oslo"}}', 2, 32) == (
        "lines",
        "ship",
        "ship.city",
        "sku",
    )


KEYS = ["a", "b", "c.d", "x_1", "", STRIPE, "é", 'a"b']
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(KEYS), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    document=st.dictionaries(
        st.sampled_from(["a", "b", "id", "user@x.io", "n-1", "é"]), json_values, max_size=6
    ),
    depth=st.integers(1, 4),
    cap=st.integers(1, 8),
    ascii_only=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_any_object_and_any_damage_to_it_give_the_same_names_either_way(
    document, depth, cap, ascii_only, seed
):
    body = json.dumps(document, ensure_ascii=ascii_only).encode()
    rng = random.Random(seed)
    damaged = bytearray(body)
    for _ in range(rng.randint(0, 3)):  # a few bytes changed: broken JSON must agree too
        damaged[rng.randrange(len(damaged))] = rng.choice(b'{}[]",:\\ 0a\xff')
    for candidate in (body, bytes(damaged)):
        saved = _design._RAW_OBJECT
        fast = body_field_names(candidate, depth, cap)
        _design._RAW_OBJECT = None
        try:
            plain = body_field_names(candidate, depth, cap)
        finally:
            _design._RAW_OBJECT = saved
        assert fast == plain, candidate


# -- the query names cache -----------------------------------------------------------------------


def uncached(query: bytes, cap: int) -> tuple[str, ...]:
    return _design._query_names(query, cap)


QUERIES = [
    b"q=shoes+1&limit=20&page=2",
    b"page=3&q=boots&limit=5",
    b"limit=1&q=&page=",
    b"a=1&a=2&&b&=x&c=d=e",
    b"filter%5Bstatus%5D=open&na%C3%AFve=1&sp+ace=2",
    STRIPE.encode() + b"&limit=1",
    f"{TRUNCATED}=1&a=1".encode(),
    b"&".join(b"p%d=1" % i for i in range(40)),
    b"x" * 5000 + b"=1&y=2",
]


@pytest.mark.parametrize("query", QUERIES, ids=range(len(QUERIES)))
@pytest.mark.parametrize("cap", [1, 3, 32])
def test_cached_query_names_are_a_fresh_parses_names(query, cap):
    _design._QUERY_CACHE.clear()
    first = query_parameter_names(query, cap)
    second = query_parameter_names(query, cap)  # from the cache, if it was kept
    assert first == second == uncached(query, cap)


def test_the_cache_key_is_the_names_and_the_cap_not_the_values():
    _design._QUERY_CACHE.clear()
    assert query_parameter_names(b"q=a&limit=1", 32) == ("limit", "q")
    assert query_parameter_names(b"q=zzz&limit=99", 32) == ("limit", "q")
    assert query_parameter_names(b"q=zzz&limit=99", 1) == ("limit", TRUNCATED)
    assert query_parameter_names(b"q=a&limit=1&extra", 32) == ("extra", "limit", "q")
    assert query_parameter_names(b"q&limit=1", 32) == ("limit", "q")
    assert set(_design._QUERY_CACHE) == {
        (b"q&limit", 32),
        (b"q&limit", 1),
        (b"q&limit&extra", 32),
    }
    # Values never reach the cache: only the names part of a query is its key.
    assert not any(b"zzz" in key for key, _ in _design._QUERY_CACHE)


def test_the_cache_stays_bounded_under_a_hundred_thousand_distinct_name_sets():
    _design._QUERY_CACHE.clear()
    for i in range(100_000):
        assert query_parameter_names(b"q=1&p%d=2" % i, 32) == (f"p{i}", "q")
        assert len(_design._QUERY_CACHE) <= _design._QUERY_CACHE_LIMIT
    long_names = b"&".join(b"name_%04d" % i for i in range(100))  # its key is over the bound
    assert len(long_names) > _design._QUERY_KEY_BYTES
    _design._QUERY_CACHE.clear()
    assert query_parameter_names(long_names, 200)[:2] == ("name_0000", "name_0001")
    assert _design._QUERY_CACHE == {}


def test_a_query_over_the_read_bound_is_cut_and_not_cached():
    _design._QUERY_CACHE.clear()
    query = b"&".join(b"n%06d=1" % i for i in range(10_000))
    assert len(query) > _design.MAX_QUERY_BYTES
    names = query_parameter_names(query, 100_000)
    assert names[-1] == TRUNCATED and names == uncached(query, 100_000)
    assert _design._QUERY_CACHE == {}
