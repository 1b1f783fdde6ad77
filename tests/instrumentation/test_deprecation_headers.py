"""Deprecated routes answer with RFC 9745 Deprecation, RFC 8594 Sunset and RFC 8288 Link headers."""

from __future__ import annotations

import calendar
import datetime as dt
import re
from email.utils import parsedate_to_datetime

from apiusage.instrumentation import instrument
from apiusage.instrumentation._headers import deprecation_value, expand_target, sunset_value
from instr_support import KEY, SERVICE
from orders_app import build_app

# RFC 9651 sf-date: "@" followed by an sf-integer.
SF_DATE = re.compile(r"^@-?\d{1,15}$")
# RFC 9110 IMF-fixdate.
IMF_FIXDATE = re.compile(
    r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
    r"\d{4} \d{2}:\d{2}:\d{2} GMT$"
)
# RFC 8288 link-value list, as we emit it.
LINKS = re.compile(r'^<[^<>\s]+>; rel="[a-z-]+"(, <[^<>\s]+>; rel="[a-z-]+")*$')

CATALOG = f"""\
services:
  {SERVICE}:
    endpoints:
      - method: DELETE
        route: /v1/orders/{{order_id}}
        deprecated: 2026-09-01
        sunset: 2027-01-31
        replacement: DELETE /v2/orders/{{order_id}}
        feature: orders
        link: https://docs.example.com/migrate-to-v2
  other-service:
    endpoints:
      - {{method: GET, route: '/v1/orders/{{order_id}}', deprecated: true}}
"""


def epoch(day: dt.date) -> int:
    return calendar.timegm(day.timetuple())


def app_with_catalog(tmp_path, spans):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG)
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, catalog=path)
    return app


def test_catalog_deprecation_gives_all_three_headers(tmp_path, spans, client_for):
    client = client_for(app_with_catalog(tmp_path, spans))
    r = client.delete("/v1/orders/42")
    assert r.status_code == 200
    assert r.headers["deprecation"] == f"@{epoch(dt.date(2026, 9, 1))}" == "@1788220800"
    assert SF_DATE.match(r.headers["deprecation"])
    assert r.headers["sunset"] == "Sun, 31 Jan 2027 00:00:00 GMT"
    assert IMF_FIXDATE.match(r.headers["sunset"])
    assert parsedate_to_datetime(r.headers["sunset"]) == dt.datetime(2027, 1, 31, tzinfo=dt.timezone.utc)
    assert r.headers["link"] == (
        '</v2/orders/42>; rel="successor-version", '
        '<https://docs.example.com/migrate-to-v2>; rel="deprecation"'
    )
    assert LINKS.match(r.headers["link"])
    assert spans.apiusage()["apiusage.endpoint.deprecated"] is True


def test_other_services_and_methods_are_untouched(tmp_path, spans, client_for):
    client = client_for(app_with_catalog(tmp_path, spans))
    r = client.get("/v1/orders/42")  # deprecated in other-service only
    assert {"deprecation", "sunset", "link"}.isdisjoint(r.headers)
    assert spans.apiusage()["apiusage.endpoint.deprecated"] is False


def test_fastapi_deprecated_flag_alone(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    r = client_for(app).get("/v1/legacy/report")
    # RFC 9745 allows only a date; "deprecated at some past date" is all FastAPI tells us.
    assert r.headers["deprecation"] == "@0"
    assert "sunset" not in r.headers and "link" not in r.headers


def test_openapi_extra_extensions(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    r = client_for(app).get("/v1/orders/9/items")
    assert r.headers["deprecation"] == f"@{epoch(dt.date(2026, 3, 1))}"
    assert r.headers["sunset"] == "Thu, 31 Dec 2026 00:00:00 GMT"
    assert r.headers["link"] == (
        '</v2/orders/9/lines>; rel="successor-version", '
        '<https://docs.example.com/items-to-lines>; rel="deprecation"'
    )


def test_root_path_prefixes_relative_replacement(tmp_path, spans):
    import asyncio

    import httpx

    app = app_with_catalog(tmp_path, spans)

    async def call():
        transport = httpx.ASGITransport(app=app, root_path="/api")
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.delete("/api/v1/orders/7")

    r = asyncio.run(call())
    assert r.headers["link"].startswith('</api/v2/orders/7>; rel="successor-version"')


def test_the_apps_own_deprecation_header_wins(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY)
    r = client_for(app).get("/v1/own-headers")
    assert r.headers.get_list("deprecation") == ["@1700000000"]


def test_headers_can_be_turned_off(spans, client_for):
    app = build_app()
    instrument(app, tracer_provider=spans.provider, pseudonym_key=KEY, deprecation_headers=False)
    r = client_for(app).get("/v1/legacy/report")
    assert "deprecation" not in r.headers
    assert spans.apiusage()["apiusage.endpoint.deprecated"] is True


def test_value_formatting():
    assert deprecation_value(None) == "@0"
    assert deprecation_value(dt.date(1970, 1, 2)) == "@86400"
    assert sunset_value(dt.date(2024, 2, 29)) == "Thu, 29 Feb 2024 00:00:00 GMT"
    assert expand_target("/v2/files/{p:path}", {"p": "a/b c"}) == "/v2/files/a/b%20c"
    assert expand_target("/v2/o/{id}", {"id": "x/y"}, "/api/") == "/api/v2/o/x%2Fy"
    assert expand_target("/v2/o/{id}", {}) is None
    assert expand_target("https://new.example/o/{id}", {"id": 3}, "/api") == "https://new.example/o/3"
