"""Sampled traffic end to end: a real FastAPI service behind an OpenFeature flag samples 25% of
its traces with OpenTelemetry consistent probability sampling (tracestate `ot=th:c`: each kept
span stands for 4 requests) and exports them over OTLP/gRPC to `apiusage serve` with SQLite
state. Then

* /metrics counts 4 requests per span received (the estimated traffic), per variant exactly;
* `apiusage experiments report` shows the estimated requests with the sampled spans beside
  them, says the tests use the spans, and its verdict reads the span counts.

The spans the service exported are also kept in memory, so the expected numbers are counted
from what was really sent (the seeded ids make it the same sample on every run)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import yaml
from apiusage.experiments import formatting as fmt
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.support.flag_service import (
    EXPERIMENTS,
    FLAG,
    SERVICE,
    ConsistentSampler,
    SeededIds,
    drive,
    flag_service,
)
from tests.support.polling import read_until
from tests.support.processor import experiments_report, matching, sample, start_processor

pytestmark = pytest.mark.slow

CALLS = 20  # per consumer: 400 requests, about 100 spans kept
WEIGHT = 4  # th:c keeps 1 - 0xc/0x10 = 25%


def _fails(key: str, treated: bool, n: int) -> bool:
    """Treatment: every second call is a 400 (50%); control: every tenth (10%)."""
    return n % 2 == 0 if treated else n % 10 == 0


def _sent(exporter: InMemorySpanExporter) -> tuple[Counter, Counter, dict[str, set]]:
    """Per variant, from the server spans the service exported: spans, 4xx spans, consumers."""
    spans, client_errors, consumers = Counter(), Counter(), {"control": set(), "treatment": set()}
    for span in exporter.get_finished_spans():
        if span.kind != SpanKind.SERVER:
            continue
        assert span.context.trace_state.get("ot") == "th:c"
        (event,) = span.events
        variant = event.attributes["feature_flag.result.variant"]
        spans[variant] += 1
        client_errors[variant] += span.attributes["http.status_code"] == 400
        consumers[variant].add(span.attributes["apiusage.consumer.id"])
    return spans, client_errors, consumers


def test_a_sampled_experiment_counts_estimated_requests_and_tests_the_spans(tmp_path: Path) -> None:
    experiments = tmp_path / "experiments.yaml"
    experiments.write_text(yaml.safe_dump(EXPERIMENTS))
    config = {
        "experiments": str(experiments),
        "state": {"flush_interval": "100ms", "refresh_interval": "200ms"},
    }
    memory = InMemorySpanExporter()
    with start_processor(tmp_path, config) as running:
        app, provider = flag_service(
            f"http://{running.grpc_endpoint}",
            _fails,
            domain="experiments-sampled-e2e",
            sampler=ConsistentSampler("c"),
            id_generator=SeededIds(2026),
            processors=[SimpleSpanProcessor(memory)],
        )
        statuses = asyncio.run(drive(app, CALLS))
        assert (statuses.count(200), statuses.count(400)) == (400 - 120, 120)  # 100 + 20 failures
        assert provider.force_flush(10_000)
        provider.shutdown()
        spans, client_errors, consumers = _sent(memory)
        assert 80 <= sum(spans.values()) <= 120  # about a quarter of 400 (the seeded sample: exact below)

        def consumers_seen(samples: dict) -> bool:
            return all(
                sample(samples, "api_experiment_consumers", service=SERVICE, experiment=FLAG, variant=v)
                == len(consumers[v])
                for v in consumers
            )

        m = read_until(running.scrape, consumers_seen, 30, interval=0.2)
        for variant in ("control", "treatment"):
            counted = matching(
                m, "api_experiment_requests_total", service=SERVICE, experiment=FLAG, variant=variant
            )
            by_class = {dict(labels)["status_class"]: value for labels, value in counted.items()}
            assert by_class == {
                "2xx": WEIGHT * (spans[variant] - client_errors[variant]),
                "4xx": WEIGHT * client_errors[variant],
            }
        assert sum(matching(m, "api_requests_total", service=SERVICE).values()) == WEIGHT * sum(
            spans.values()
        )

        lines = experiments_report(tmp_path / "apiusage.yaml")
    for variant in ("control", "treatment"):
        row = next(line for line in lines if line.startswith(f"{variant} "))
        n = spans[variant]
        assert row.split()[1:5] == [str(len(consumers[variant])), "0", f"{WEIGHT * n:,}", f"({n:,}"]
        assert f"{WEIGHT * n:,} ({n:,} sampled)" in row
    assert lines[-2:] == [
        "Notes:",
        "  traffic was sampled: requests show the estimated total (from the sampling weights) and, in "
        "brackets, the spans received; the ratios, intervals and tests use the spans, the real sample sizes",
    ]
    c, t = (client_errors[v] / spans[v] for v in ("control", "treatment"))
    low, high = fmt.distinct("client_error_ratio", c, t)
    verdict = next(line for line in lines if line.startswith("  treatment raises 4xx"))
    assert verdict.startswith(f"  treatment raises 4xx from {low} to {high} (p ")
    assert verdict.endswith("): primary metric worse")
    # No 5xx at all: too few events for the error-ratio test, counted in spans.
    assert (
        f"  error ratio: not enough data yet (0 errors in {spans['control']:,} vs {spans['treatment']:,} "
        "requests; the test needs at least 5 expected errors and 5 expected others in each variant)"
    ) in lines
