"""Unused parameters asked for by a route in another template syntax than the spans'."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import yaml
from apiusage.conventions.catalog import parse_catalog
from apiusage.processor.state.listing import unused_parameter_list
from apiusage.processor.state.store import SqliteStore

CATALOG = """\
services:
  shop:
    endpoints:
    - method: GET
      route: /v1/orders/:order_id
      parameters: {query: [expand, fields]}
"""


def test_the_route_filter_matches_any_template_syntax_as_the_catalog_does(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(str(path))
    store.migrate()
    now = int(time.time() * 1000)
    db = sqlite3.connect(path)
    # the spans' spelling is FastAPI's {order_id}; the catalog's Express-style :order_id
    db.execute("INSERT INTO endpoints VALUES ('shop', 'GET', '/v1/orders/{order_id}', 0, ?, ?)", (now, now))
    db.execute(
        "INSERT INTO parameters VALUES ('shop', 'GET', '/v1/orders/{order_id}', 'query', 'expand', ?, ?)",
        (now, now),
    )
    db.commit()
    db.close()
    catalog = parse_catalog(yaml.safe_load(io.StringIO(CATALOG)))
    expected = [
        {
            "service": "shop",
            "method": "GET",
            "route": "/v1/orders/{order_id}",
            "last_call": unused_parameter_list(store, catalog, now)[0]["last_call"],
            "window_days": 30,
            "declared": 2,
            "unused": [{"location": "query", "name": "fields"}],
        }
    ]
    assert unused_parameter_list(store, catalog, now) == expected
    for asked in ("/v1/orders/{order_id}", "/v1/orders/:order_id", "/v1/orders/{id}", "/v1/orders/<id>"):
        assert unused_parameter_list(store, catalog, now, route=asked) == expected, asked
    assert unused_parameter_list(store, catalog, now, route="/v1/orders") == []
    assert unused_parameter_list(store, catalog, now, route="not a route {") == []
    store.close()
