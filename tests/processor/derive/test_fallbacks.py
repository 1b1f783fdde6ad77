"""Route templates and sampling weights: exact outputs for known inputs.

The User-Agent parser is tested in tests/conventions/test_useragent.py.
"""

from __future__ import annotations

import re

import pytest
from apiusage.conventions.routes import route_key
from apiusage.processor.derive.routes import normalize_path
from apiusage.processor.derive.sampling import adjusted_count


@pytest.mark.parametrize(
    ("raw", "route"),
    [
        ("/v1/orders/123", "/v1/orders/{id}"),
        ("/v1/orders/123?token=abc#frag", "/v1/orders/{id}"),
        (
            "https://api.example.com/v1/orders/550e8400-e29b-41d4-a716-446655440000/items",
            "/v1/orders/{uuid}/items",
        ),
        ("/v1/blobs/0123456789abcdef0123", "/v1/blobs/{hex}"),
        ("/v1/users/jane.doe@example.com", "/v1/users/{email}"),
        ("/v1/orders/ord_8f7a6b5c4d", "/v1/orders/{id}"),
        ("/v1/reports/2026-11-25", "/v1/reports/{date}"),
        ("/v1/orders/-12.5", "/v1/orders/{id}"),
        ("/v1/health", "/v1/health"),
        ("v1/no-leading-slash", "/v1/no-leading-slash"),
        ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/{rest}"),
        ("/" + "x" * 50, "/{value}"),
        # Template syntax in a raw path becomes a placeholder, so the label's only slots are
        # the placeholders; a `:` inside a segment (a custom method) stays text.
        ("/v1/:id", "/v1/{value}"),
        ("/v1/files/*", "/v1/files/{value}"),
        ("/v1/{x}/a-:b/(y)/<z>", "/v1/{value}/{value}/{value}/{value}"),
        ("/v1/things:batchGet", "/v1/things:batchGet"),
        ('/v1/:"user-id"', "/v1/{value}"),  # an Express 5 quoted parameter name
        ('/v1/a-:"b"', "/v1/{value}"),
        ("", "unknown"),
        (None, "unknown"),
        (42, "unknown"),
    ],
)
def test_normalize_path(raw: object, route: str) -> None:
    assert normalize_path(raw) == route
    if route != "unknown":
        # Its slots are exactly its placeholders, so a catalog entry in any syntax matches it.
        assert route_key(route) == re.sub(r"\{[a-z]+\}", "{}", route)


@pytest.mark.parametrize(
    ("tracestate", "weight"),
    [
        ("", 1.0),
        ("vendor=abc", 1.0),
        ("ot=th:0", 1.0),
        ("ot=th:8", 2.0),  # threshold 2**55: half rejected
        ("ot=th:c", 4.0),
        ("ot=th:f", 16.0),
        ("ot=rv:0123456789abcd;th:e668", 65536 / 6552),  # the spec's ~10% example
        ("dd=s:1,ot=th:8", 2.0),
        ("ot=p:3", 8.0),
        ("ot=th:zz", 1.0),  # malformed: counted once rather than guessed
        ("ot=th:123456789abcdef", 1.0),  # over 14 hex digits
    ],
)
def test_adjusted_count(tracestate: str, weight: float) -> None:
    assert adjusted_count(tracestate) == pytest.approx(weight, rel=1e-4)
