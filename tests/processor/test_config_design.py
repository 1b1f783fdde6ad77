"""Config keys of the API design families (issue 15): defaults, limits and exact error messages."""

from __future__ import annotations

import pytest
from apiusage.processor.config import ConfigError, load_config, parse_config
from apiusage.processor.derive.requests import resource_field_sources, span_field_sources


def test_defaults() -> None:
    config = load_config(None)
    usage = config.processors.usage
    assert usage.max_names_per_request == 64
    assert usage.attributes.request_size == ("http.request.body.size", "http.request_content_length")
    assert usage.attributes.response_size == ("http.response.body.size", "http.response_content_length")
    assert usage.attributes.error_type == ("error.type",)
    assert resource_field_sources(usage) == [("service.name",), ("cloud.region",), ("service.version",)]
    assert span_field_sources(usage)[-8:] == [
        ("http.request.body.size", "http.request_content_length"),
        ("http.response.body.size", "http.response_content_length"),
        ("apiusage.request.query_parameters",),
        ("apiusage.request.body_fields",),
        ("apiusage.validation.error_locations",),
        ("apiusage.validation.error_types",),
        ("error.type",),
        ("apiusage.client.region",),
    ]
    limits = config.processors.limits
    assert [limits.label_limit(x) for x in ("parameter", "location", "field", "error_type")] == [
        2000,
        8,
        1000,
        200,
    ]
    assert [limits.label_limit(x) for x in ("client_region", "server_region")] == [300, 100]
    assert config.exporters.prometheus.size_buckets[0] == 64.0
    assert config.exporters.prometheus.size_buckets[-1] == 64 * 2**20


def test_overrides() -> None:
    config = parse_config(
        {
            "processors": {
                "usage": {"max_names_per_request": 200, "attributes": {"server_region": ["acme.region"]}},
                "limits": {"max_label_values": {"parameter": 50}},
            },
            "exporters": {"prometheus": {"size_buckets": [100, 10000]}},
        }
    )
    assert config.processors.usage.max_names_per_request == 200
    assert resource_field_sources(config.processors.usage)[1] == ("acme.region",)
    assert config.processors.limits.label_limit("parameter") == 50
    assert config.processors.limits.label_limit("field") == 1000
    assert config.exporters.prometheus.size_buckets == (100.0, 10000.0)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (
            {"exporters": {"prometheus": {"size_buckets": [1024, 64]}}},
            "exporters.prometheus.size_buckets: must be strictly increasing (got [1024.0, 64.0])",
        ),
        (
            {"exporters": {"prometheus": {"size_buckets": []}}},
            "exporters.prometheus.size_buckets: needs at least one bucket bound",
        ),
        (
            {"exporters": {"prometheus": {"size_buckets": [0, 64]}}},
            "exporters.prometheus.size_buckets: bounds must be finite and > 0; +Inf is added for you "
            "(got [0.0, 64.0])",
        ),
        (
            {"processors": {"usage": {"max_names_per_request": 0}}},
            "processors.usage.max_names_per_request: must be > 0",
        ),
        (
            {"processors": {"limits": {"max_label_values": {"parameters": 10}}}},
            "processors.limits.max_label_values.parameters: "
            "not a label of any metric (did you mean 'parameter'?)",
        ),
    ],
)
def test_invalid_values_name_their_key(data: dict, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value) == f"(inline) is invalid:\n  {problem}"
