"""Text for /metrics: the request-metric families written directly, the rest by prometheus_client.

With tens of thousands of series, building a prometheus_client Metric and
Sample per series costs about 10 µs a line; writing the lines from the
snapshot's tuples costs about 1.  Both exposition formats are produced: the
Prometheus text format 0.0.4 and, when the scraper asks for it, OpenMetrics
1.0 with trace-id exemplars on the latency buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from ..derive import design_metrics as design
from ..derive.request_metrics import FAMILIES, RequestMetrics, Snapshot
from .le import le_label

__all__ = ["exposition", "render_request_metrics", "render_design_metrics", "HELP"]

HELP = {
    "api_requests": "API requests (SERVER spans), weighted by sampling adjusted count.",
    "api_client_requests": "API requests per client SDK and version.",
    "api_deprecated_requests": "Requests to endpoints marked deprecated.",
    "api_request_duration_seconds": "Server-side duration of API requests.",
    "api_client_endpoint_requests": "API requests per client SDK, endpoint and status class.",
    "api_release_requests": "API requests per release (resource service.version), endpoint and status class.",
    "api_release_request_duration_seconds": "Server-side duration of API requests per release "
    "(service.version).",
    # API design families (derive/design_metrics.py)
    "api_parameter_requests": "API requests that carried the parameter (names only; location query or body).",
    "api_validation_errors": "Request validation errors per location, field and error type.",
    "api_errors": "API requests that carry error.type.",
    "api_region_requests": "API requests per client region (CDN header) and server region (cloud.region).",
    "api_request_body_size_bytes": "Request body sizes of API requests, in bytes.",
    "api_response_body_size_bytes": "Response body sizes of API requests, in bytes.",
    "api_region_request_duration_seconds": "Server-side duration of API requests per client region.",
}
_UNITS = {
    "api_request_body_size_bytes": "bytes",
    "api_response_body_size_bytes": "bytes",
    "api_region_request_duration_seconds": "seconds",
}


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(names: tuple[str, ...], values: tuple) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(float(value))


def render_request_metrics(snap: Snapshot, openmetrics: bool) -> str:
    out: list[str] = []
    add = out.append
    for name, series in snap.counters.items():
        add(f"# HELP {name}{'' if openmetrics else '_total'} {HELP[name]}")
        add(f"# TYPE {name}{'' if openmetrics else '_total'} counter")
        names = FAMILIES[name]
        for key, value in series.items():
            add(f"{name}_total{{{_labels(names, key)}}} {_num(value)}")
    name = "api_request_duration_seconds"
    add(f"# HELP {name} {HELP[name]}")
    add(f"# TYPE {name} histogram")
    if openmetrics:
        add(f"# UNIT {name} seconds")
    les = [le_label(b) for b in snap.buckets] + ["+Inf"]
    names = FAMILIES[name]
    for key, (counts, count, total, examples) in snap.histograms.items():
        labels = _labels(names, key)
        cumulative = 0.0
        for le, n, ex in zip(les, counts, examples, strict=True):
            cumulative += n
            line = f'{name}_bucket{{{labels},le="{le}"}} {_num(cumulative)}'
            if openmetrics and ex is not None:
                line += (
                    f' # {{trace_id="{ex.trace_id.hex()}",span_id="{ex.span_id.hex()}"}} '
                    f"{repr(float(ex.duration))} {ex.end_time_ns / 1e9:.3f}"
                )
            add(line)
        add(f"{name}_count{{{labels}}} {_num(count)}")
        add(f"{name}_sum{{{labels}}} {repr(float(total))}")
    if snap.release_histograms:
        name = "api_release_request_duration_seconds"
        add(f"# HELP {name} {HELP[name]}")
        add(f"# TYPE {name} histogram")
        if openmetrics:
            add(f"# UNIT {name} seconds")
        _histogram_series(add, name, FAMILIES[name], les, snap.release_histograms)
    add("")
    return "\n".join(out)


def _histogram_series(
    add: Callable[[str], None],
    name: str,
    names: tuple[str, ...],
    les: Sequence[str],
    hists: Mapping[tuple, tuple[Sequence[float], float, float]],
) -> None:
    """The bucket, count and sum lines of a histogram family without exemplars."""
    for key, (counts, count, total) in hists.items():
        labels = _labels(names, key)
        cumulative = 0.0
        for le, n in zip(les, counts, strict=True):
            cumulative += n
            add(f'{name}_bucket{{{labels},le="{le}"}} {_num(cumulative)}')
        add(f"{name}_count{{{labels}}} {_num(count)}")
        add(f"{name}_sum{{{labels}}} {repr(float(total))}")


def render_design_metrics(snap: design.DesignSnapshot, openmetrics: bool) -> str:
    out: list[str] = []
    add = out.append
    for name, series in snap.counters.items():
        add(f"# HELP {name}{'' if openmetrics else '_total'} {HELP[name]}")
        add(f"# TYPE {name}{'' if openmetrics else '_total'} counter")
        names = design.FAMILIES[name]
        for key, value in series.items():
            add(f"{name}_total{{{_labels(names, key)}}} {_num(value)}")
    for name, hists in snap.histograms.items():
        add(f"# HELP {name} {HELP[name]}")
        add(f"# TYPE {name} histogram")
        if openmetrics:
            add(f"# UNIT {name} {_UNITS[name]}")
        les = [le_label(b) for b in snap.buckets[name]] + ["+Inf"]
        _histogram_series(add, name, design.FAMILIES[name], les, hists)
    add("")
    return "\n".join(out)


def exposition(
    registry: CollectorRegistry,
    metrics: RequestMetrics | None,
    accept: str,
    design_metrics: design.DesignMetrics | None = None,
) -> tuple[bytes, str]:
    """The /metrics body for an Accept header, and its content type."""
    try:
        encoder, content_type = choose_encoder(accept)
        rest = encoder(registry)
    except (TypeError, ValueError):
        # A version prometheus_client cannot parse (`version=abc`): the text format, which every
        # scraper reads, rather than no answer.
        encoder, content_type = choose_encoder("")
        rest = encoder(registry)
    openmetrics = content_type.startswith("application/openmetrics-text")
    if design_metrics is not None:
        rest = render_design_metrics(design_metrics.snapshot(), openmetrics).encode() + rest
    if metrics is None:
        return rest, content_type
    return render_request_metrics(metrics.snapshot(), openmetrics).encode() + rest, content_type
