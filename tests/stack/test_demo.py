"""The demo service, its catalog and plans, the traffic generator and the alert log."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.request

import httpx
import pytest
import yaml
from apiusage.demo import CATALOG, PLANS, SERVICE_NAME, alertlog, traffic
from apiusage.instrumentation.catalog import load_catalog

pytestmark = pytest.mark.slow

pytest.importorskip("fastapi")
from apiusage.demo.app import EXPORTS_PER_SECOND, build_app, load_plans  # noqa: E402


class Client:
    """Synchronous calls into the app in-process (httpx.ASGITransport)."""

    def __init__(self, app) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo")

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        return self.loop.run_until_complete(self.client.request(method, url, **kwargs))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def delete(self, url: str, **kwargs) -> httpx.Response:
        return self.request("DELETE", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


@contextlib.contextmanager
def app_client(seed: int):
    c = Client(build_app(seed=seed))
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def client():
    with app_client(1) as c:
        yield c


def test_plans_and_catalog_are_packaged_and_valid():
    plans = load_plans(PLANS)
    tiers = set(plans.values())
    assert tiers == {"free", "pro", "enterprise"} and len(plans) >= 30
    catalog = load_catalog(CATALOG)
    service = catalog.services[0] if isinstance(catalog.services, (list, tuple)) else None
    endpoint = catalog.endpoint(SERVICE_NAME, "DELETE", "/v1/orders/{order_id}")
    assert endpoint.deprecated and endpoint.sunset and endpoint.replacement
    assert service is None or service.name == SERVICE_NAME


def test_every_catalog_endpoint_is_a_route_of_the_app():
    """The catalog describes the app: same method and route template for every entry."""
    paths = build_app(seed=1).openapi()["paths"]
    routes = {(method.upper(), path) for path, operations in paths.items() for method in operations}
    data = yaml.safe_load(CATALOG.read_text())
    for ep in data["services"][SERVICE_NAME]["endpoints"]:
        assert (ep["method"], ep["route"]) in routes, f"{ep['method']} {ep['route']} is not served"
        if ep.get("replacement"):
            method, path = ep["replacement"].split(" ")
            assert (method, path) in routes, f"replacement {ep['replacement']} is not served"


def test_api_keys_resolve_plan_tiers_and_unknown_keys_are_refused(client):
    plans = load_plans()
    free = next(k for k, t in plans.items() if t == "free")
    pro = next(k for k, t in plans.items() if t == "pro")
    assert client.get("/v2/orders/1", headers={"X-API-Key": pro}).status_code == 200
    assert client.get("/v2/orders/1").status_code == 401
    assert client.get("/v2/orders/1", headers={"X-API-Key": "nope"}).status_code == 401
    assert client.get("/v2/status").status_code == 200  # public
    hook = {"url": "https://hooks.example.com/x", "events": ["order.paid"]}
    assert client.post("/v2/webhooks", json=hook, headers={"X-API-Key": free}).status_code == 403
    assert client.post("/v2/webhooks", json=hook, headers={"X-API-Key": pro}).status_code == 201
    assert client.post("/v2/orders", json={"lines": []}, headers={"X-API-Key": pro}).status_code == 422
    assert client.get("/v2/orders/999999999", headers={"X-API-Key": pro}).status_code == 404


def test_deprecated_endpoint_and_its_replacement(client):
    key = next(iter(load_plans()))
    assert client.delete("/v1/orders/5", headers={"X-API-Key": key}).json() == {"deleted": 5}
    assert client.delete("/v2/orders/5", headers={"X-API-Key": key}).json() == {"deleted": 5}


def test_export_capacity_answers_503_beyond_it():
    """A burst of concurrent export requests: the capacity is answered, the rest get 503."""
    key = next(k for k, t in load_plans().items() if t == "enterprise")
    body = {"kind": "orders", "since": "2026-01-01"}

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=build_app(seed=2))
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            answers = await asyncio.gather(
                *(
                    client.post("/v2/exports", json=body, headers={"X-API-Key": key})
                    for _ in range(EXPORTS_PER_SECOND * 3)
                )
            )
        return [a.status_code for a in answers]

    codes = asyncio.run(burst())
    assert codes.count(202) == EXPORTS_PER_SECOND and codes.count(503) == 2 * EXPORTS_PER_SECOND


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000",
        "http://localhost:1",
        "http://[::1]:8000",
        "http://demo:8000",
        "https://orders-api",
    ],
)
def test_traffic_targets_loopback_or_compose_names(url):
    assert traffic.check_target(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com",
        "http://10.0.0.5:8000",
        "http://8.8.8.8",
        "ftp://127.0.0.1",
        "http://demo.internal:8000",
        "127.0.0.1:8000",
    ],
)
def test_traffic_refuses_other_targets(url):
    with pytest.raises(ValueError):
        traffic.check_target(url)


@pytest.mark.parametrize(
    "kwargs", [{"duration": 0}, {"duration": 8 * 86400}, {"max_requests": 0}, {"rate": 0}, {"rate": 5000}]
)
def test_traffic_is_bounded(kwargs):
    args = {"duration": 1, "max_requests": 10, "rate": 1, "seed": 1, "concurrency": 1, "burst_every": None}
    with pytest.raises(ValueError):
        traffic.Generator("http://127.0.0.1:1", load_plans(), **(args | kwargs))


def test_population_has_the_behaviours_the_dashboards_show():
    import random

    consumers = traffic.population(load_plans(), 600, random.Random(3))
    assert {c.tier for c in consumers} == {"free", "pro", "enterprise"}
    assert any(c.joins_at > 0 for c in consumers)  # new consumers during the run
    assert any(c.failures_before_success for c in consumers)  # onboarding failures
    assert any(c.migrates_at for c in consumers)  # v1 -> v2 migrations
    assert len({(c.client, c.version) for c in consumers}) >= 5  # client version spread
    headers = next(c for c in consumers if c.client).headers()
    assert {"X-API-Key", "X-Client-Name", "X-Client-Version"} <= set(headers)


@contextlib.contextmanager
def served(app):
    import socket

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_a_short_run_stops_at_its_bounds():
    pytest.importorskip("uvicorn")
    with served(build_app(seed=4)) as url:
        started = time.monotonic()
        stats = traffic.run(url, duration=30, max_requests=120, rate=200, seed=5, burst_every=0.2)
        assert time.monotonic() - started < 20
        assert stats.requests <= 120 and sum(stats.by_status.values()) + stats.errors == stats.requests
        assert stats.errors == 0 and any(200 <= s < 300 for s in stats.by_status)
        stats = traffic.run(url, duration=1.5, max_requests=100_000, rate=20, seed=6)
        assert 1.5 <= stats.seconds < 10


def test_traffic_cli_refuses_a_remote_target(capsys):
    assert traffic.main(["--target", "http://example.com", "--duration", "1"]) == 2
    assert "neither loopback nor a compose service name" in capsys.readouterr().err


def test_alertlog_prints_each_alert_with_its_links(capsys):
    from http.server import ThreadingHTTPServer

    server = ThreadingHTTPServer(("127.0.0.1", 0), alertlog.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        payload = {
            "version": "4",
            "status": "firing",
            "alerts": [
                {
                    "status": "firing",
                    "labels": {"alertname": "ApiTrafficDrop", "severity": "warning", "service": "orders-api"},
                    "annotations": {
                        "summary": "Less traffic.",
                        "runbook_url": "http://localhost:9464/runbooks/ApiTrafficDrop",
                        "dashboard_url": "http://localhost:3000/d/apiusage-overview/api-overview?viewPanel=5",
                    },
                }
            ],
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{server.server_address[1]}/alerts/warning",
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200
    finally:
        server.shutdown()
        server.server_close()
    out = capsys.readouterr().out
    assert "FIRING ApiTrafficDrop [warning] service=orders-api" in out
    assert "runbooks/ApiTrafficDrop" in out and "viewPanel=5" in out
