"""End to end: real uvicorn processes export to a running `apiusage serve`; /metrics has exact counts."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from instr_support import APPS, KEY, bin_path, free_port, need, stop, wait_for_port

from tests.support.polling import read_until

pytestmark = pytest.mark.slow

try:
    from tests.support.processor import matching, sample, start_processor
except ImportError:  # pragma: no cover - the processor side is absent
    start_processor = None

CATALOG = """\
services:
  orders-api:
    endpoints:
      - {method: DELETE, route: '/v1/orders/{order_id}', deprecated: 2026-09-01, sunset: 2027-01-31}
"""
TIERS = "consumers:\n  sk_ent: enterprise\n  sk_pro: pro\n"


def app_env(processor, service: str, tmp_path, **extra: str) -> dict[str, str]:
    (tmp_path / "catalog.yaml").write_text(CATALOG)
    (tmp_path / "tiers.yaml").write_text(TIERS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_", "PYTEST_"))}
    env.update(
        {
            "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
            "OTEL_SERVICE_NAME": service,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{processor.grpc_endpoint}",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "APIUSAGE_PSEUDONYM_KEY": KEY,
            "APIUSAGE_PLAN_TIERS": str(tmp_path / "tiers.yaml"),
            "APIUSAGE_CATALOG": str(tmp_path / "catalog.yaml"),
        }
    )
    env.update(extra)
    return env


def launch(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen(
        [
            *command,
            "--app-dir",
            str(APPS),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, port


def drive(port: int) -> httpx.Response:
    """7 requests: 3 enterprise (SDK headers), 2 pro, 1 deprecated unknown, 1 enterprise via state."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        sdk = {"X-Client-Name": "orders-sdk", "X-Client-Version": "1.2.0"}
        cli = {"User-Agent": "orders-cli/0.9.1 (linux)"}
        for i in range(3):
            assert client.get(f"/v1/orders/{i}", headers={"X-API-Key": "sk_ent", **sdk}).status_code == 200
        for i in range(2):
            pro = client.get(f"/v1/orders/{i}?x=1", headers={"X-API-Key": "sk_pro", **cli})
            assert pro.status_code == 200
        deleted = client.delete("/v1/orders/3", headers={"X-API-Key": "sk_other", **cli})
        me = client.get("/v2/me", headers={"Authorization": "Bearer tok-enterprise", "User-Agent": "web/1.0"})
        assert me.status_code == 200
        return deleted


def wait_for_requests(processor, service: str, count: int, timeout: float = 20) -> dict:
    def seen(samples: dict) -> float:
        return sum(matching(samples, "api_requests_total", service=service).values())

    samples = read_until(processor.scrape, lambda m: seen(m) >= count, timeout, interval=0.1)
    assert seen(samples) == count, f"{service}: {seen(samples)} requests counted, expected {count}"
    return samples


def check_counts(samples: dict, service: str) -> None:
    route = "/v1/orders/{order_id}"
    requests = {
        (
            dict(labels)["method"],
            dict(labels)["route"],
            dict(labels)["plan_tier"],
            dict(labels)["deprecated"],
            dict(labels)["status_code"],
        ): value
        for labels, value in matching(samples, "api_requests_total", service=service).items()
    }
    assert requests == {
        ("GET", route, "enterprise", "false", "200"): 3,
        ("GET", route, "pro", "false", "200"): 2,
        ("DELETE", route, "unknown", "true", "200"): 1,
        ("GET", "/v2/me", "enterprise", "false", "200"): 1,
    }
    clients = {
        (dict(labels)["client_name"], dict(labels)["client_version"]): value
        for labels, value in matching(
            samples, "api_client_requests_total", service=service, status_class="2xx"
        ).items()
    }
    assert clients == {("orders-sdk", "1.2.0"): 3, ("orders-cli", "0.9.1"): 3, ("web", "1.0"): 1}
    assert (
        sample(
            samples,
            "api_deprecated_requests_total",
            service=service,
            method="DELETE",
            route=route,
            plan_tier="unknown",
            client_name="orders-cli",
            client_version="0.9.1",
        )
        == 1
    )


def test_zero_code_and_one_line_export_to_the_processor(tmp_path):
    need(start_processor is not None, "tests/support/processor.py (the processor) is not available")
    instrument_bin = bin_path("opentelemetry-instrument")
    uvicorn_bin = bin_path("uvicorn")
    need(
        instrument_bin is not None and uvicorn_bin is not None,
        "opentelemetry-instrument and uvicorn must be installed",
    )
    with start_processor(tmp_path) as processor:
        zero_dir, one_dir = tmp_path / "zero", tmp_path / "one"
        zero_dir.mkdir()
        one_dir.mkdir()
        zero, zero_port = launch(
            [instrument_bin, uvicorn_bin, "orders_app:app"], app_env(processor, "orders-api", zero_dir)
        )
        one, one_port = launch(
            [uvicorn_bin, "oneline_app:app"], app_env(processor, "billing-api", one_dir, PYTHONPATH=str(APPS))
        )
        try:
            wait_for_port(zero_port, zero)
            wait_for_port(one_port, one)
            deleted = drive(zero_port)
            assert deleted.headers["deprecation"] == "@1788220800"
            assert deleted.headers["sunset"] == "Sun, 31 Jan 2027 00:00:00 GMT"
            drive(one_port)
            check_counts(wait_for_requests(processor, "orders-api", 7), "orders-api")
            # The one-line app has no catalog entry of its own service: only FastAPI's flags.
            samples = wait_for_requests(processor, "billing-api", 7)
            got = matching(samples, "api_requests_total", service="billing-api", method="DELETE")
            assert [dict(labels)["deprecated"] for labels in got] == ["false"]
        finally:
            for process in (zero, one):
                _, err = stop(process)
                assert "Traceback" not in err, err


@pytest.mark.parametrize(
    "env, message",
    [
        (
            {},
            "apiusage: refusing to start: consumer resolution is on: APIUSAGE_CONSUMER_RESOLVER=header "
            "(the default), but no pseudonymization key is set.",
        ),
        (
            {"APIUSAGE_PSEUDONYM_KEY": KEY, "APIUSAGE_CATALOG": "/nonexistent/catalog.yaml"},
            "apiusage: refusing to start: bad catalog (APIUSAGE_CATALOG): /nonexistent/catalog.yaml: "
            "catalog file not found",
        ),
    ],
)
def test_zero_code_refuses_to_start_on_unsafe_configuration(env, message):
    instrument_bin = bin_path("opentelemetry-instrument")
    uvicorn_bin = bin_path("uvicorn")
    need(
        instrument_bin is not None and uvicorn_bin is not None,
        "opentelemetry-instrument and uvicorn must be installed",
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APIUSAGE_"))}
    base["PATH"] = os.path.dirname(sys.executable) + os.pathsep + base.get("PATH", "")
    # The exporter points nowhere: the process must exit before it would export anything.
    base["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    result = subprocess.run(
        [instrument_bin, uvicorn_bin, "orders_app:app", "--app-dir", str(APPS), "--port", str(free_port())],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 78, result.stderr
    assert result.stderr.startswith(message), result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.count("refusing to start") == 1
