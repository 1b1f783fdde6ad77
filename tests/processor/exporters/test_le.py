"""The one `le` formatter: what the exporters write and the SLO latency rules select."""

from __future__ import annotations

import math

import pytest
from apiusage.processor.exporters.le import le_label
from apiusage.rules import generate, parse_slo


@pytest.mark.parametrize(
    ("bound", "label"),
    [(1, "1.0"), (10.0, "10.0"), (0.25, "0.25"), (0.005, "0.005"), (1e-05, "1e-05"), (3600, "3600.0")],
)
def test_bounds_are_written_as_the_text_format_writes_them(bound, label):
    assert le_label(bound) == label


def test_infinite_bounds_are_inf_and_nan_is_refused():
    assert (le_label(math.inf), le_label(-math.inf)) == ("+Inf", "-Inf")
    with pytest.raises(ValueError, match="not a number"):
        le_label(math.nan)


def test_the_slo_latency_rules_select_the_bucket_the_processor_writes():
    slo = parse_slo(
        {
            "defaults": {"availability": 99.9, "latency": {"threshold": 1, "target": 99}},
            "links": {"grafana_url": "http://grafana:3000", "runbook_base_url": "http://p/runbooks/"},
        },
        "slo.yaml",
    )
    rules = [r for g in generate(slo)["slo.rules.yml"]["groups"] for r in g["rules"]]
    exprs = " ".join(r.get("expr", "") for r in rules)
    # A threshold of 1 s selects le="1.0", as the processor writes the bucket, not le="1".
    assert 'api_request_duration_seconds_bucket{le="1.0"}' in exprs and 'le="1"' not in exprs
