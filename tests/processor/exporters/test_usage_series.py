"""apiusage_series counts the live series of every family with a series bound, the experiment
families included: a running processor's /metrics, after exposures reached its sinks."""

from __future__ import annotations

from pathlib import Path

import yaml
from apiusage.processor.derive.flags import Exposure

from tests.support.processor import running_processor, sample

EXPERIMENTS = {
    "experiments": {
        "checkout-v2": {
            "service": "orders-api",
            "flag": "new-checkout",
            "variants": ["control", "treatment"],
            "control": "control",
        }
    }
}


def _exposure(variant: str, status: str) -> Exposure:
    return Exposure(
        "orders-api", "checkout-v2", variant, "POST", "/v1/orders", status, "pro", "go-sdk", None,
        "c-1", 0.1, 1.0, 1_764_000_000_000_000_000,
    )  # fmt: skip


def test_experiment_series_are_counted_in_apiusage_series(tmp_path: Path) -> None:
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(EXPERIMENTS))
    with running_processor({"experiments": str(path)}) as running:
        sink = running.processor.experiment_metrics
        sink.consume_exposures(
            [_exposure("control", "200"), _exposure("control", "500"), _exposure("treatment", "200")]
        )
        m = running.scrape()
    # Three (variant, status_class) request series; one latency histogram per variant.
    assert sample(m, "apiusage_series", metric="api_experiment_requests") == 3
    assert sample(m, "apiusage_series", metric="api_experiment_request_duration_seconds") == 2
    assert sample(m, "apiusage_series", metric="api_requests") == 0
