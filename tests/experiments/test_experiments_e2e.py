"""Issue 16 end to end: a real FastAPI service evaluates a flag with the real OpenFeature SDK and
its OpenTelemetry hook, exports its spans over OTLP/gRPC to a running `apiusage serve` with an
experiments file and SQLite state, and then

* /metrics counts every request under its experiment and variant, exactly, and the consumers
  assigned to each variant (from the state store), with no consumer id or targeting key in it;
* `apiusage experiments report` reads the same store and says the treatment raises 4xx.

The scenario is written out (TREATED, CALLS): 20 consumers, the odd ones in treatment; each
calls 5 times; a treated consumer's first 2 calls are answered 400, a control consumer's first
call is answered 400 for 2 of the 10. Expected: control 50 requests, 2 of them 4xx (4%);
treatment 50 requests, 20 of them 4xx (40%)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml

from tests.support.flag_service import EXPERIMENTS, KEYS, SERVICE, drive, flag_service
from tests.support.polling import read_until
from tests.support.processor import (
    experiments_report,
    get,
    matching,
    sample,
    start_processor,
)

pytestmark = pytest.mark.slow

CONTROL_4XX = frozenset(KEYS[0:4:2])  # two control consumers: their first call fails
CALLS = 5


def _fails(key: str, treated: bool, n: int) -> bool:
    return (treated and n <= 2) or (not treated and key in CONTROL_4XX and n == 1)


def test_an_experiment_from_flag_evaluation_to_verdict(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(yaml.safe_dump(EXPERIMENTS))
    config = {
        "experiments": str(experiments),
        "state": {"flush_interval": "100ms", "refresh_interval": "200ms"},
    }
    with start_processor(tmp_path, config) as running:
        app, provider = flag_service(f"http://{running.grpc_endpoint}", _fails, domain="experiments-e2e")
        statuses = asyncio.run(drive(app, CALLS))
        assert (statuses.count(200), statuses.count(400)) == (78, 22)
        assert provider.force_flush(10_000)
        provider.shutdown()

        def requests(variant: str, status_class: str) -> float | None:
            return sample(
                m,
                "api_experiment_requests_total",
                service=SERVICE,
                experiment="checkout-v2",
                variant=variant,
                status_class=status_class,
            )

        def consumers(samples: dict, variant: str) -> float | None:
            return sample(
                samples,
                "api_experiment_consumers",
                service=SERVICE,
                experiment="checkout-v2",
                variant=variant,
            )

        m = read_until(
            running.scrape,
            lambda s: consumers(s, "control") == 10 and consumers(s, "treatment") == 10,
            30,
            interval=0.2,
        )
        # 100 server spans (and OpenTelemetry's two internal send spans each, not requests)
        assert sum(matching(m, "api_requests_total", service=SERVICE).values()) == 100
        assert (requests("control", "2xx"), requests("control", "4xx")) == (48, 2)
        assert (requests("treatment", "2xx"), requests("treatment", "4xx")) == (30, 20)
        assert (
            sample(
                m,
                "api_experiment_request_duration_seconds_count",
                service=SERVICE,
                experiment="checkout-v2",
                variant="treatment",
            )
            == 50
        )
        assert (
            sample(m, "api_experiment_contaminated_consumers", service=SERVICE, experiment="checkout-v2") == 0
        )
        text = get(running.metrics_url)[1].decode()
        assert not any(key in text for key in KEYS), "a targeting key (the raw API key) reached /metrics"

        lines = experiments_report(tmp_path / "apiusage.yaml")
    assert lines[0] == f"Experiment checkout-v2 ({SERVICE})"
    control = next(line for line in lines if line.startswith("control "))
    treatment = next(line for line in lines if line.startswith("treatment "))
    # consumers, contaminated, requests, then the ratios
    assert control.split()[1:4] == ["10", "0", "50"]
    assert treatment.split()[1:4] == ["10", "0", "50"]
    assert "4.0% (" in control and "40.0% (" in treatment
    assert "  sample ratio as planned: 10 vs 10 consumers against a planned 50/50 (p = 1)" in lines
    assert "  contamination: none of 20 consumers was seen in more than one variant" in lines
    verdict = next(line for line in lines if line.startswith("  treatment raises 4xx"))
    assert verdict.startswith("  treatment raises 4xx from 4.0% to 40.0% (p ")
    assert verdict.endswith("): primary metric worse")
    assert not any(key in line for line in lines for key in KEYS)
