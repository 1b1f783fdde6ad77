"""The one User-Agent parser: exact answers, properties, and its two call sites agreeing.

The call sites are the real ones: the instrumentation's Enricher setting attributes on a real
SDK span from a request's raw header bytes, and the processor's Deriver reading a span.
"""

from __future__ import annotations

import string

import pytest
from apiusage.conventions.useragent import (
    BROWSER,
    MAX_NAME_LENGTH,
    MAX_VERSION_LENGTH,
    parse_user_agent,
)
from apiusage.instrumentation import instrument
from apiusage.processor.config import UsageConfig
from apiusage.processor.derive.requests import SPAN_FIELDS, Deriver
from apiusage.processor.telemetry import PipelineStats
from fastapi import FastAPI
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind

TCHAR = "!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits
ALNUM = string.ascii_letters + string.digits


@pytest.mark.parametrize(
    ("ua", "client"),
    [
        ("orders-sdk/1.2.3 (python 3.11)", ("orders-sdk", "1.2.3")),
        ("Orders-SDK/2.0.0-beta.1", ("orders-sdk", "2.0.0-beta.1")),
        ("python-httpx/0.28.1", ("python-httpx", "0.28.1")),
        ("Apache-HttpClient/4.5.14 (Java/17)", ("apache-httpclient", "4.5.14")),
        # The three answers the two old parsers disagreed on (issue 14).
        ("mozilla/5.0 (x)", ("browser", None)),
        ("1password-cli/2.0", ("1password-cli", "2.0")),
        ("sdk/v2.1", ("sdk", "v2.1")),
        ("Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0", ("browser", None)),
        ("OPERA/9.80 (Windows NT 6.1)", ("browser", None)),
        ("my-cron-job", ("my-cron-job", None)),
        ("  \tcurl/8.5.0", ("curl", "8.5.0")),
        ("sdk/1.0/2.0", ("sdk", "1.0")),
        ("sdk/1.0é", ("sdk", "1.0")),
        ("sdk/", ("sdk", None)),
        ("sdk/-1", ("sdk", None)),
        ("x" * MAX_NAME_LENGTH + "/1", ("x" * MAX_NAME_LENGTH, "1")),
        ("x" * (MAX_NAME_LENGTH + 1) + "/1", (None, None)),  # too long to be a name: not cut
        ("a/" + "1" * MAX_VERSION_LENGTH, ("a", "1" * MAX_VERSION_LENGTH)),
        ("a/" + "1" * (MAX_VERSION_LENGTH + 1), ("a", None)),
        ("-sdk/1.0", (None, None)),
        ("(compatible)", (None, None)),
        ("ünïcode/1.0", (None, None)),
        ("", (None, None)),
        ("   ", (None, None)),
        (None, (None, None)),
        (3, (None, None)),
        (b"sdk/1.0", (None, None)),
    ],
)
def test_parse_user_agent(ua: object, client: tuple[str | None, str | None]) -> None:
    assert parse_user_agent(ua) == client
    assert parse_user_agent(ua) == client  # the cached answer is the same


def test_huge_and_hostile_values_are_fast_and_clean() -> None:
    assert parse_user_agent("a" * 10_000_000) == (None, None)
    assert parse_user_agent(" " * 1_000_000 + "sdk/1") == ("sdk", "1")
    assert parse_user_agent("sdk/1.0" + "\x00" * 1000) == ("sdk", "1.0")
    assert parse_user_agent("\x00sdk/1.0") == (None, None)
    assert parse_user_agent("sdk\r\nx-evil: 1/2") == ("sdk", None)


def _is_clean(value: str | None, limit: int) -> bool:
    return value is None or (0 < len(value) <= limit and set(value) <= set(TCHAR))


@given(st.text())
@example("\x00\x85\u2028")
@settings(max_examples=500)
def test_never_raises_and_labels_are_bounded_printable_tokens(ua: str) -> None:
    name, version = parse_user_agent(ua)
    assert _is_clean(name, MAX_NAME_LENGTH) and _is_clean(version, MAX_VERSION_LENGTH)
    assert name is None or name == name.lower()
    assert name is not None or version is None  # a version belongs to a named client


_NAME = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(ALNUM),
    st.text(TCHAR, max_size=MAX_NAME_LENGTH - 1),
).filter(lambda n: n.lower() not in ("mozilla", "opera"))
_VERSION = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from(ALNUM),
    st.text(TCHAR, max_size=MAX_VERSION_LENGTH - 1),
)
_COMMENT = st.sampled_from(["", " (linux)", " (Java/17) extra/2", "; x", "\t"])


@given(_NAME, _VERSION, _COMMENT)
@settings(max_examples=300)
def test_well_formed_products_round_trip(name: str, version: str, comment: str) -> None:
    assert parse_user_agent(f"{name}/{version}{comment}") == (name.lower(), version)
    assert parse_user_agent(f"{name}{comment}") == (name.lower(), None)


@given(st.sampled_from(["Mozilla", "mozilla", "MOZILLA", "Opera", "opera"]), _VERSION, _COMMENT)
def test_every_browser_is_one_client(product: str, version: str, comment: str) -> None:
    assert parse_user_agent(f"{product}/{version}{comment}") == (BROWSER, None)


# -- the two call sites ---------------------------------------------------------------------

_APP = FastAPI()


@_APP.get("/v1/orders/{order_id}")
def _order(order_id: int) -> dict:
    return {}


_PROVIDER = TracerProvider()
_ENRICHER = instrument(_APP, tracer_provider=_PROVIDER, pseudonym_key="test-pseudonym-key-0123456789")
_TRACER = _PROVIDER.get_tracer("test")


def _instrumentation_attributes(raw: bytes) -> dict:
    """The client attributes the Enricher sets on a real SDK span for this User-Agent value."""
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/orders/1",
        "root_path": "",
        "app": _APP,
        "headers": [(b"x-api-key", b"k"), (b"user-agent", raw)],
    }
    span = _TRACER.start_span("GET", kind=SpanKind.SERVER, attributes={"http.route": "/v1/orders/{order_id}"})
    _ENRICHER.on_response(scope, span, _APP)
    span.end()
    attrs = dict(span.attributes or {})
    return {k: v for k, v in attrs.items() if k.startswith("apiusage.client.")}


def _processor_client(**fields: object) -> tuple[str, str]:
    """(client_name, client_version) labels the Deriver gives a span with these fields."""
    values = {"method": "GET", "route": "/v1/orders/{order_id}", "status_code": 200, **fields}
    span = (0, 2, 1, 2, b"t" * 16, b"s" * 8, "", 0, *(values.get(f) for f in SPAN_FIELDS))
    # A span ending in 1970 is counted as too old and still derived.
    [request] = Deriver(UsageConfig(), PipelineStats()).derive([("orders-api",)], [span])
    return request.client_name, request.client_version


@given(st.binary(max_size=200).filter(lambda b: b"\r" not in b and b"\n" not in b))
@example(b"mozilla/5.0 (x)")
@example(b"1password-cli/2.0")
@example(b"sdk/v2.1")
@example(b"Orders-SDK/2.0.0-beta.1 (linux)")
@example(b"\xff\xfe/1")
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow], deadline=None)
def test_instrumentation_and_processor_name_the_same_client(raw: bytes) -> None:
    ua = raw.decode("latin-1")
    direct = _processor_client(user_agent=ua)  # a span from a service without apiusage
    attrs = _instrumentation_attributes(raw)
    name, version = parse_user_agent(ua)
    # The instrumentation did set them (else the comparison below would hold trivially).
    want = {"apiusage.client.name": name, "apiusage.client.version": version}
    assert attrs == {k: v for k, v in want.items() if v is not None}
    via_instrumentation = _processor_client(
        user_agent=ua,
        client_name=attrs.get("apiusage.client.name"),
        client_version=attrs.get("apiusage.client.version"),
    )
    assert via_instrumentation == direct
    assert direct == (name or "unknown", version or "unknown")
