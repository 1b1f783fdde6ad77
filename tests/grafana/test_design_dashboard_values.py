"""The API design dashboard's queries give the right numbers, not only some: each panel query,
with its variables at their defaults, against a real Prometheus holding an hour of known series
(tests/grafana/design_series.py, backfilled), compared with what those series mean."""

from __future__ import annotations

import math
import time

import pytest

from tests.grafana import design_series as series
from tests.grafana.grafana_support import dashboards, data_panels, default_values, substitute
from tests.grafana.live_support import prometheus_server

pytestmark = [pytest.mark.slow, pytest.mark.live]

STEP = 15
# Grafana's $__rate_interval for a 15 s scrape interval: 4 x 15 s.
RATE_INTERVAL = "1m"
LIST = {"method": "GET", "route": "/v2/orders"}
CREATE = {"method": "POST", "route": "/v2/orders"}
SEARCH = {"method": "GET", "route": "/v2/search"}

# (panel id, refId) -> [(labels the row must have, value)], every row of the answer.
EXPECTED: dict[tuple[int, str], list[tuple[dict[str, str], float]]] = {
    # Validation errors per request: (0.2 + 0.05) / 1, 0.1 / 2, and 0 where there are none.
    (2, "A"): [(CREATE, 0.25), (LIST, 0.05), (SEARCH, 0.0)],
    (3, "A"): [
        ({**CREATE, "field": "items.quantity", "error_type": "int_parsing"}, 0.2),
        ({**LIST, "field": "limit", "error_type": "less_than_equal"}, 0.1),
        ({**CREATE, "field": "items", "error_type": "missing"}, 0.05),
    ],
    (4, "A"): [
        ({**CREATE, "client_name": "orders-sdk-js"}, 0.2),
        ({**CREATE, "client_name": "orders-sdk-py"}, 0.02),
        ({**CREATE, "client_name": "orders-sdk-go"}, 0.02),
        ({**LIST, "client_name": "orders-sdk-js"}, 0.01 / 1.01),
        ({**LIST, "client_name": "orders-sdk-py"}, 0.01 / 1.01),
    ],
    # Mean response size: 0.5 x 1500 + 0.3 x 3000 + 0.2 x 50000 B.
    (5, "A"): [(LIST, 11650.0), (CREATE, 300.0)],
    # Request bodies 40 % 200 B, 40 % 800 B, 20 % 3000 B; buckets 256, 1024, 4096, ...
    (6, "A"): [(CREATE, 256 + 0.25 * 768)],
    (6, "B"): [(CREATE, 1024 + 0.5 * 3072)],
    (6, "C"): [(CREATE, 1024 + 0.95 * 3072)],
    (5, "B"): [],  # one week earlier: the Prometheus holds an hour
    (7, "A"): [(LIST, 1024 + 0.625 * 3072), (CREATE, 256 + 0.5 * 768)],
    (7, "B"): [(LIST, 16384 + 0.5 * 49152), (CREATE, 256 + 0.9 * 768)],
    (7, "C"): [(LIST, 16384 + 0.95 * 49152), (CREATE, 256 + 0.99 * 768)],
    # Share of the endpoint's requests that carried the parameter.
    (8, "A"): [
        ({**LIST, "parameter": "limit"}, 0.3),
        ({**LIST, "parameter": "status"}, 0.125),
        ({**CREATE, "parameter": "items"}, 0.5),
        ({**CREATE, "parameter": "coupon"}, 0.05),
    ],
    (9, "A"): [
        ({**LIST, "parameter": "limit"}, 8),
        ({**LIST, "parameter": "status"}, 3),
        ({**CREATE, "parameter": "items"}, 9),
        ({**CREATE, "parameter": "coupon"}, 2),
    ],
    (10, "A"): [(LIST, 2), (CREATE, 1)],  # GET /v2/search uses every declared parameter
    (11, "A"): [
        ({"client_region": "DE"}, 2.0),
        ({"client_region": "US"}, 1.0),
        ({"client_region": "BR"}, 0.25),
    ],
    (11, "B"): [
        ({"client_region": "DE"}, 0.05),
        ({"client_region": "US"}, 0.05),
        ({"client_region": "BR"}, 0.2),
    ],
    (11, "C"): [
        ({"client_region": "DE"}, 0.175),
        ({"client_region": "US"}, 0.375),
        ({"client_region": "BR"}, 0.9),
    ],
    (12, "A"): [
        ({"client_region": "DE"}, 0.175),
        ({"client_region": "US"}, 0.375),
        ({"client_region": "BR"}, 0.9),
    ],
    (13, "A"): [({"score": "2"}, 0.02), ({"score": "4"}, 0.06), ({"score": "5"}, 0.01)],
    # Mean score of /v2/orders: (2 x 0.02 + 4 x 0.06) / 0.08; the whole API's: 5.
    (14, "A"): [({"route": "/v2/orders"}, 3.5), ({"route": ""}, 5.0)],  # route "": no label
    (14, "B"): [({"route": "/v2/orders"}, 0.08), ({"route": ""}, 0.01)],
    (14, "C"): [({"route": "/v2/orders"}, 3.0)],  # GET and POST; no requests to route ""
    (15, "A"): [({"service": "orders-api"}, 6)],
    (16, "A"): [({**SEARCH, "error_type": "TimeoutError"}, 0.02)],
    (17, "A"): [
        ({"client_region": "DE", "server_region": "eu-west-1"}, 2.0),
        ({"client_region": "US", "server_region": "us-east-1"}, 1.0),
        ({"client_region": "BR", "server_region": "us-east-1"}, 0.25),
    ],
}


@pytest.fixture(scope="module")
def answers(tmp_path_factory) -> dict[tuple[int, str], list[tuple[dict[str, str], float]]]:
    tmp = tmp_path_factory.mktemp("design-dashboard")
    now = float(int(time.time()) // STEP * STEP - 10 * STEP)
    series.backfill(tmp / "prometheus" / "data", now - 3600, now, STEP, series.REQUESTS)
    model = dashboards()["apiusage-design"]
    values = default_values(model, RATE_INTERVAL)
    out = {}
    with prometheus_server(tmp / "prometheus", {"global": {"scrape_interval": "15s"}}) as prom:
        for p in data_panels(model):
            for t in p["targets"]:
                if p["id"] == 1:
                    continue
                rows = prom.query(substitute(t["expr"], values), at=now)
                out[p["id"], t["refId"]] = [(r["metric"], float(r["value"][1])) for r in rows]
    return out


@pytest.mark.parametrize(("panel_id", "ref"), sorted(EXPECTED), ids=lambda x: str(x))
def test_design_panel_gives_the_exact_numbers(answers, panel_id, ref):
    got = answers[panel_id, ref]
    want = EXPECTED[panel_id, ref]
    assert len(got) == len(want), f"panel {panel_id} {ref}: {got}"
    for labels, value in want:
        match = [v for m, v in got if all(m.get(k, "") == x for k, x in labels.items())]
        assert len(match) == 1, f"panel {panel_id} {ref}: no single row with {labels} in {got}"
        assert math.isclose(match[0], value, rel_tol=1e-9, abs_tol=1e-12), (panel_id, ref, labels, match[0])


def test_every_design_query_is_checked(answers):
    """A new panel or target of the dashboard gets its expected numbers here."""
    assert set(answers) == set(EXPECTED), sorted(set(answers) ^ set(EXPECTED))
