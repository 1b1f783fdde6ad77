"""Answers that need ids: the admin endpoint (bearer token, audited) and `apiusage consumers`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support import usage_scenario as sc
from tests.support.processor import LOOPBACK_CONFIG, get, merge, running_processor

SPANS = sc.SPANS
config = sc.processor_config
TOKEN = "s3cret-admin-token-0123456789"


def admin_config(tmp_path: Path) -> dict:
    return merge(
        config(tmp_path),
        {"admin": {"endpoint": "127.0.0.1:0", "token": TOKEN, "audit_log": str(tmp_path / "audit.log")}},
    )


def audit(tmp_path: Path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


EXPECTED_DEPRECATED = [
    {
        "service": sc.SERVICE,
        "method": "DELETE",
        "route": sc.V1_DELETE,
        "sunset": "2027-01-31",
        "replacement": f"DELETE {sc.V2_DELETE}",
        "window_days": 30,
        "consumers": [
            {
                "consumer_id": "bob",
                "account": None,
                "plan_tier": "free",
                "client_name": "orders-sdk",
                "client_version": "1.0.0",
                "last_call": None,
                "calls": 2.0,
            },
            {
                "consumer_id": "carol",
                "account": None,
                "plan_tier": "pro",
                "client_name": "orders-sdk",
                "client_version": "1.2.0",
                "last_call": None,
                "calls": 1.0,
            },
        ],
    }
]


def _expected() -> list[dict]:
    from apiusage.processor.state.listing import iso

    out = json.loads(json.dumps(EXPECTED_DEPRECATED))
    out[0]["consumers"][0]["last_call"] = iso(sc.at(10, 5))
    out[0]["consumers"][1]["last_call"] = iso(sc.at(2, 12))
    return out


def test_admin_endpoint_lists_ids_only_with_the_token_and_audits_every_access(tmp_path) -> None:
    with running_processor(admin_config(tmp_path)) as running:
        sc.send(running.http_endpoint, sc.calls())
        running.wait_processed(SPANS)
        running.processor.state.flush()
        base = running.processor.urls()["admin"]
        status, body, headers = get(f"{base}/deprecated")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Bearer realm="apiusage-admin"')
        assert get(f"{base}/deprecated", {"Authorization": "Bearer wrong"})[0] == 401
        auth = {"Authorization": f"Bearer {TOKEN}"}
        status, body, _ = get(f"{base}/deprecated?service=orders-api", auth)
        assert status == 200
        assert json.loads(body) == {"endpoints": _expected()}
        status, body, _ = get(f"{base}/at-risk", auth)
        [carol] = json.loads(body)["consumers"]
        assert (
            carol["consumer_id"],
            carol["plan_tier"],
            carol["calls_last_7_days"],
            carol["weekly_average_previous_4_weeks"],
        ) == ("carol", "pro", 1.0, 67.5)
        status, body, _ = get(f"{base}/deprecated?window=2y", auth)
        assert (status, json.loads(body)) == (
            400,
            {"error": "window must be one of 1d, 7d, 30d, 90d (got '2y')"},
        )
    entries = audit(tmp_path)
    assert [(e["path"], e["authorized"], e["status"], e.get("consumers_returned")) for e in entries] == [
        ("/v1/consumers/deprecated", False, 401, None),
        ("/v1/consumers/deprecated", False, 401, None),
        ("/v1/consumers/deprecated", True, 200, 2),
        ("/v1/consumers/at-risk", True, 200, 1),
        ("/v1/consumers/deprecated", True, 400, 0),
    ]
    assert TOKEN not in (tmp_path / "audit.log").read_text()


@pytest.mark.slow
def test_consumers_cli_reads_the_store_and_audits(tmp_path) -> None:
    cfg = admin_config(tmp_path)
    with running_processor(cfg) as running:
        sc.send(running.http_endpoint, sc.calls())
        running.wait_processed(SPANS)
        db = running.processor.config.state.sqlite.path
        running.processor.state.flush()
        cfg = merge(cfg, {"state": {"sqlite": {"path": db}}})
        config_file = tmp_path / "apiusage.yaml"
        config_file.write_text(yaml.safe_dump(merge(LOOPBACK_CONFIG, cfg)))
        exe = Path(__import__("sys").executable).with_name("apiusage")
        result = subprocess.run(
            [str(exe), "consumers", "--config", str(config_file), "--format", "json", "deprecated"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"endpoints": _expected()}
        result = subprocess.run(
            [str(exe), "consumers", "--config", str(config_file), "at-risk"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.split() == [
            "carol",
            "pro",
            "last",
            "7",
            "days",
            "1",
            "vs",
            "weekly",
            "average",
            "67.5",
            "(orders-api)",
        ]
    assert [
        (e["path"], e["remote"].startswith("cli:"), e["consumers_returned"]) for e in audit(tmp_path)
    ] == [("consumers deprecated", True, 2), ("consumers at-risk", True, 1)]
