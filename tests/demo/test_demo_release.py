"""`apiusage demo` with its experiment and a release, end to end and bounded (no history, no
Prometheus): the flag evaluations of the live traffic reach the processor for both variants,
release 1.5.0 replaces 1.4.2 on the same socket without the traffic losing a request, both
releases are in the state, and `apiusage experiments report` reads the run's state to a verdict."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from demo_support import start_demo

from tests.support.polling import read_until
from tests.support.processor import experiments_report, get, matching, parse_metrics, sample

pytestmark = pytest.mark.slow

SERVICE = "orders-api"
RELEASE_AFTER = 6


def _scrape(url: str) -> dict:
    status, body, _ = get(url)
    assert status == 200
    return parse_metrics(body.decode())


def test_the_experiment_and_the_release_reach_the_processor_and_the_report(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    demo = start_demo(
        folder,
        "--history-days",
        "0",
        "--no-prometheus",
        "--rate",
        "60",
        "--release-after",
        str(RELEASE_AFTER),
        "--summary-every",
        "2",
        "--duration",
        "120",  # a bound should the test hang; it stops the demo long before
    )
    try:
        demo.wait_running(timeout=90)
        metrics = demo.urls["metrics"]
        rolled = demo.wait_for(
            r"^release: orders-api 1\.5\.0 answers \(started in ([\d.]+) s while 1\.4\.2 went on serving\); "
            r"1\.4\.2 stopped$",
            60,
        )
        assert float(rolled.group(1)) < 30

        def both(samples: dict) -> bool:
            first = {
                dict(lb)["version"]
                for lb in matching(samples, "api_release_first_seen_timestamp_seconds", service=SERVICE)
            }
            variants = {
                dict(lb)["variant"]
                for lb in matching(
                    samples, "api_experiment_requests_total", service=SERVICE, experiment="new-checkout"
                )
            }
            return first == {"1.4.2", "1.5.0"} and variants == {"control", "treatment"}

        samples = read_until(lambda: _scrape(metrics), both, 45, interval=1)
        old = sample(samples, "api_release_first_seen_timestamp_seconds", service=SERVICE, version="1.4.2")
        new = sample(samples, "api_release_first_seen_timestamp_seconds", service=SERVICE, version="1.5.0")
        assert old + RELEASE_AFTER - 1 <= new <= old + 60, (old, new)
        assert sample(samples, "api_release_rank", service=SERVICE, version="1.5.0") == 0
        assert sample(samples, "api_release_rank", service=SERVICE, version="1.4.2") == 1
        for variant in ("control", "treatment"):
            assert sample(
                samples,
                "api_experiment_consumers",
                service=SERVICE,
                experiment="new-checkout",
                variant=variant,
            ), variant
        # Only the experiment's route is counted: its requests are POST /v2/orders ones.
        experiment = sum(matching(samples, "api_experiment_requests_total", service=SERVICE).values())
        checkouts = sum(
            matching(
                samples, "api_requests_total", service=SERVICE, method="POST", route="/v2/orders"
            ).values()
        )
        assert 0 < experiment <= checkouts
        assert sample(
            samples, "api_experiment_contaminated_consumers", service=SERVICE, experiment="new-checkout"
        ) in (0, None)
        demo.wait_for(r"\| experiment new-checkout: control \d+ requests \d+ consumers, treatment \d+", 20)
        demo.wait_for(r"releases \(share of requests now\): 1\.5\.0 \d+%, 1\.4\.2 \d+%", 20)
        assert demo.interrupt(60) == 0, demo.stderr
    finally:
        demo.kill_everything()

    # The traffic saw no gap: every request got an answer across the rolling restart.
    done = re.search(r"^traffic: done (\{.*\})$", (folder / "logs" / "traffic.log").read_text(), re.M)
    assert done, (folder / "logs" / "traffic.log").read_text()[-2000:]
    assert json.loads(done.group(1))["transport_errors"] == 0
    config = yaml.safe_load((folder / "apiusage.yaml").read_text())
    assert config["experiments"] == str(folder / "experiments.yaml")

    lines = experiments_report(folder / "apiusage.yaml")
    assert lines[0] == f"Experiment new-checkout ({SERVICE})"
    assert any(line.startswith("control ") for line in lines)
    assert any(line.startswith("treatment ") for line in lines)
    verdict = lines[lines.index("Verdict:") + 1 :]
    # Notes (an interim look says why its bar is higher than alpha) follow after a blank line.
    verdict = verdict[: verdict.index("")] if "" in verdict else verdict
    assert verdict and verdict[-1].startswith("  treatment: "), "\n".join(lines)
    assert any(line.startswith("  sample ratio ") for line in verdict), "\n".join(lines)
