"""The `experiments` key and `processors.experiment_join`: the file is read and validated at
start-up (`apiusage serve` stops with the file and key path), and a processor with experiments
joins, counts and exposes them on its /metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from apiusage.processor.app import Processor
from apiusage.processor.config import ConfigError, load_config, parse_config
from apiusage.processor.derive.experiments import ExperimentJoin
from apiusage.processor.derive.requests import ApiRequest
from apiusage.processor.exporters.experiment_metrics import ExperimentMetrics

from tests.support.cli_run import run_apiusage
from tests.support.processor import LOOPBACK_CONFIG, get, merge, running_processor

EXPERIMENT = {
    "service": "orders-api",
    "flag": "checkout-v2",
    "variants": ["control", "treatment"],
    "control": "control",
}


def write(tmp_path: Path, experiments: object, name: str = "experiments.yaml") -> Path:
    path = tmp_path / name
    path.write_text(experiments if isinstance(experiments, str) else yaml.safe_dump(experiments))
    return path


def serve(tmp_path: Path, experiments: str, extra: dict | None = None) -> tuple[int, str]:
    """`apiusage serve` with `experiments: <experiments>`; its exit status and stderr."""
    config = merge(
        LOOPBACK_CONFIG, {"state": {"enabled": False}, "experiments": experiments, **(extra or {})}
    )
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    run = run_apiusage(["serve", "--config", "c.yaml"], tmp_path)
    return run.returncode, run.stderr


def test_serve_stops_on_a_missing_experiments_file(tmp_path: Path) -> None:
    assert serve(tmp_path, "nowhere/experiments.yaml") == (
        2,
        "apiusage: experiments: nowhere/experiments.yaml: experiments file not found\n",
    )


def test_serve_stops_with_the_file_and_key_path_of_the_problem(tmp_path: Path) -> None:
    write(tmp_path, {"version": 1, "experiments": {"checkout-v2": {**EXPERIMENT, "control": "blue"}}})
    assert serve(tmp_path, "experiments.yaml") == (
        2,
        "apiusage: experiments: experiments.yaml: experiments.checkout-v2.control: "
        "'blue' is not one of the variants ['control', 'treatment']\n",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("experiments: [a, b\n", "experiments.yaml: not valid YAML at line 2, column 1: "),
        (
            yaml.safe_dump({"experiments": {"x": {**EXPERIMENT, "split": {"control": 1, "treatment": -1}}}}),
            "experiments.yaml: experiments.x.split.treatment: expected a positive number (got -1)",
        ),
        (
            yaml.safe_dump({"experiments": {"x": {**EXPERIMENT, "segment": {"routes": ["/v1/orders"]}}}}),
            "experiments.yaml: experiments.x.segment.routes[0]: expected 'METHOD /route' (got '/v1/orders')",
        ),
        (
            yaml.safe_dump({"experiments": {"x": {**EXPERIMENT, "service": "orders\napi"}}}),
            "experiments.yaml: experiments.x.service: control characters are not allowed",
        ),
        (
            "experiments: {}\nversion: 2\n",
            "experiments.yaml: version: unsupported experiments file version (got 2)",
        ),
    ],
)
def test_every_file_error_is_a_config_error_naming_file_and_key(
    tmp_path: Path, text: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path, text)
    config = load_config(
        write(tmp_path, merge(LOOPBACK_CONFIG, {"experiments": "experiments.yaml"}), "c.yaml")
    )
    with pytest.raises(ConfigError) as caught:
        Processor(config)
    assert str(caught.value).startswith(f"experiments: {message}"), str(caught.value)


def test_a_file_that_is_not_utf8_or_a_directory(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_bytes(b"experiments:\n  \xff: 1\n")
    for path, reason in (
        (tmp_path / "bad.yaml", "cannot read experiments file"),
        (tmp_path, "is a directory"),
    ):
        with pytest.raises(ConfigError, match=f"^experiments: {path}: {reason}"):
            Processor(parse_config(merge(LOOPBACK_CONFIG, {"experiments": str(path)})))


def test_join_bounds_are_validated_with_their_key_paths() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(
            {
                "processors": {"experiment_join": {"ttl": "0s", "max_pending_requests": 0, "max_pending": 5}},
                "experiments": 5,
            }
        )
    text = str(caught.value)
    for key in (
        "processors.experiment_join.ttl",
        "processors.experiment_join.max_pending_requests",
        "processors.experiment_join.max_pending",
        "experiments",
    ):
        assert f"\n  {key}: " in text, text


def test_without_the_key_there_is_no_join_and_no_experiment_family() -> None:
    processor = Processor(parse_config(merge(LOOPBACK_CONFIG, {"state": {"enabled": False}})))
    assert processor.experiment_join is None and processor.experiment_metrics is None
    assert not any(isinstance(s, ExperimentJoin) for s in processor.worker._sinks)


def test_a_processor_with_experiments_joins_and_exposes_them(tmp_path: Path) -> None:
    path = write(tmp_path, {"version": 1, "experiments": {"checkout-v2": EXPERIMENT}})
    extra = {"experiments": str(path), "processors": {"experiment_join": {"ttl": "30s"}}}
    with running_processor(extra) as running:
        processor = running.processor
        join = processor.experiment_join
        assert isinstance(join, ExperimentJoin) and join in processor.worker._sinks
        # counted, and stored with the flush (the variant each consumer was first assigned)
        assert join.exposure_sinks == [processor.experiment_metrics, processor.activity]
        assert isinstance(processor.experiment_metrics, ExperimentMetrics)
        assert join._ttl == 30.0
        # A request as the Deriver makes it, with its span event, through the sink the worker
        # calls (no span is posted, so the worker thread is idle).
        request = ApiRequest(
            "orders-api", "POST", "/v1/orders", "201", "pro", "false", "orders-sdk", "2.0", None, None,
            "c-1", 0.2, 2.0, 1, bytes(range(16)), bytes(range(8)), flags=(("checkout-v2", "treatment"),),
        )  # fmt: skip
        join.consume([request])
        status, body, _ = get(running.metrics_url)
    assert status == 200
    lines = body.decode().splitlines()
    # The join's families (the state's experiment checks are tested in tests/experiments/).
    assert [ln for ln in lines if ln.startswith(("api_experiment_requests", "api_experiment_request_"))] == [
        'api_experiment_requests_total{experiment="checkout-v2",service="orders-api",'
        'status_class="2xx",variant="treatment"} 2.0',
        *(
            'api_experiment_request_duration_seconds_bucket{experiment="checkout-v2",'
            f'le="{le}",service="orders-api",variant="treatment"}} {n}'
            for le, n in [
                ("0.005", "0.0"),
                ("0.01", "0.0"),
                ("0.025", "0.0"),
                ("0.05", "0.0"),
                ("0.1", "0.0"),
                ("0.25", "2.0"),
                ("0.5", "2.0"),
                ("1.0", "2.0"),
                ("2.5", "2.0"),
                ("5.0", "2.0"),
                ("10.0", "2.0"),
                ("+Inf", "2.0"),
            ]
        ),  # fmt: skip
        'api_experiment_request_duration_seconds_count{experiment="checkout-v2",service="orders-api",'
        'variant="treatment"} 2.0',
        'api_experiment_request_duration_seconds_sum{experiment="checkout-v2",service="orders-api",'
        'variant="treatment"} 0.4',
    ]
    assert 'apiusage_flag_evaluations_total{outcome="exposure",source="span_event"} 1.0' in lines
    assert 'apiusage_flag_evaluations_total{outcome="undeclared_variant",source="log"} 0.0' in lines
    assert 'apiusage_experiment_join_pending{kind="requests"} 1.0' in lines
    assert 'apiusage_experiment_join_dropped_total{kind="evaluations",reason="evicted"} 0.0' in lines


def test_a_name_longer_than_any_label_value_stops_serve(tmp_path: Path) -> None:
    # A derived service label is cut at processors.limits.max_label_length (128): an experiment
    # of a 200-character service would never match a request, silently.
    long = "s" * 200
    write(tmp_path, {"experiments": {"checkout-v2": {**EXPERIMENT, "service": long}}})
    assert serve(tmp_path, "experiments.yaml") == (
        2,
        "apiusage: experiments: experiments.yaml: experiments.checkout-v2.service: "
        f"'{'s' * 40}'… can never match a label value (at most "
        "processors.limits.max_label_length = 128 printable characters)\n",
    )
    variants = ["control", "t" * 20]
    write(tmp_path, {"experiments": {"checkout-v2": {**EXPERIMENT, "variants": variants}}})
    limits = {"processors": {"limits": {"max_label_length": 16}}}
    assert serve(tmp_path, "experiments.yaml", limits) == (
        2,
        "apiusage: experiments: experiments.yaml: experiments.checkout-v2.variants: "
        f"'{'t' * 20}' can never match a label value (at most "
        "processors.limits.max_label_length = 16 printable characters)\n",
    )
