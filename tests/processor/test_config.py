"""Config loading: defaults, Collector-style shape, ${env:VAR}, and exact error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from apiusage.processor.config import ConfigError, load_config, parse_config

TESTDATA = Path(__file__).parent / "testdata" / "config"


@pytest.mark.parametrize("case", sorted(p.stem for p in TESTDATA.glob("*.yaml")))
def test_invalid_config_lists_every_problem_with_its_path(case: str, monkeypatch) -> None:
    monkeypatch.chdir(TESTDATA)
    expected = (TESTDATA / f"{case}.txt").read_text().rstrip("\n")
    with pytest.raises(ConfigError) as info:
        load_config(f"{case}.yaml")
    assert str(info.value) == expected


def test_embedded_defaults() -> None:
    config = load_config(None)
    assert config.receivers.otlp.protocols.grpc.endpoint == "localhost:4317"
    assert config.receivers.otlp.protocols.http.endpoint == "localhost:4318"
    assert config.receivers.otlp.protocols.http.max_request_body_size == 64 << 20
    assert config.exporters.prometheus.endpoint == "localhost:9464"
    assert config.processors.limits.series_ttl == 900.0
    assert config.processors.limits.label_limit("route") == 1000
    assert config.processors.limits.label_limit("api_version") == 1000
    assert config.processors.usage.attributes.consumer_id[0] == "apiusage.consumer.id"


def test_protocols_follow_the_collector() -> None:
    only_http = parse_config({"receivers": {"otlp": {"protocols": {"http": None}}}})
    assert only_http.receivers.otlp.protocols.grpc is None
    assert only_http.receivers.otlp.protocols.http.endpoint == "localhost:4318"


def test_env_substitution_keeps_yaml_types(monkeypatch) -> None:
    monkeypatch.setenv("QUEUE", "5000")
    monkeypatch.setenv("HOST", "0.0.0.0")
    config = parse_config(
        {
            "processors": {"queue": {"max_spans": "${env:QUEUE}", "retry_after": "${env:NOPE:-3s}"}},
            "exporters": {"prometheus": {"endpoint": "${env:HOST}:9464"}},
        }
    )
    assert config.processors.queue.max_spans == 5000
    assert config.processors.queue.retry_after == 3.0
    assert config.exporters.prometheus.endpoint == "0.0.0.0:9464"


def test_sizes_and_durations() -> None:
    config = parse_config(
        {
            "receivers": {"otlp": {"protocols": {"http": {"max_request_body_size": "512KiB"}}}},
            "processors": {
                "limits": {"series_ttl": "1h"},
                "usage": {"data_quality": {"max_future_skew": "500ms"}},
            },
        }
    )
    assert config.receivers.otlp.protocols.http.max_request_body_size == 512 * 1024
    assert config.processors.limits.series_ttl == 3600.0
    assert config.processors.usage.data_quality.max_future_skew == 0.5


def test_unreadable_file() -> None:
    with pytest.raises(ConfigError) as info:
        load_config("/nonexistent/apiusage.yaml")
    assert str(info.value) == (
        "cannot read config file /nonexistent/apiusage.yaml: No such file or directory"
    )


def test_env_default_covers_set_but_empty(monkeypatch) -> None:
    monkeypatch.setenv("EMPTY", "")
    config = parse_config({"exporters": {"prometheus": {"endpoint": "${env:EMPTY:-127.0.0.1:9999}"}}})
    assert config.exporters.prometheus.endpoint == "127.0.0.1:9999"
