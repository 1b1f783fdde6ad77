"""Prometheus exposition: a custom collector over the in-memory aggregates, and its HTTP endpoint.

Nothing on the hot path touches prometheus_client.  At scrape time the
request-metric families are written straight from a snapshot of plain dicts
(exposition.py) and the pipeline's health families come from this collector.
"""

from __future__ import annotations

import gzip
import hmac
from collections.abc import Callable, Iterable
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._httpserver import HttpServer, QuietHandler, Served
from ..config import PrometheusExporter
from ..derive.request_metrics import RequestMetrics
from ..pipeline import LATENCY_BUCKETS, SpanQueue, Worker
from ..runbooks import RunbookLibrary, find_runbooks_dir
from ..telemetry import PipelineStats
from .exposition import exposition

__all__ = ["UsageCollector", "MetricsServer", "build_registry"]


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


def _le(bound: float) -> str:
    return repr(float(bound)) if bound != int(bound) else f"{bound:.1f}"


class UsageCollector:
    """The pipeline's health; the request families are written by exposition.py (faster)."""

    def __init__(self, metrics: RequestMetrics, stats: PipelineStats, queue: SpanQueue,
                 worker: Worker, scanner_impl: str, version: str) -> None:
        self._metrics = metrics
        self._stats = stats
        self._queue = queue
        self._worker = worker
        self._build = (version, scanner_impl)

    def collect(self) -> Iterable[Metric]:
        yield from self._health(self._metrics.series_counts())

    def _health(self, series_counts: dict[str, int]) -> Iterable[Metric]:
        s = self._stats.snapshot()

        def counter(name: str, doc: str, label: str, values: dict) -> Metric:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value, n in sorted(values.items()):
                family.add_metric([value], n)
            return family

        yield counter("apiusage_spans_received", "Spans decoded from export requests.",
                      "transport", s["spans_received"])
        yield counter("apiusage_spans_rejected", "Spans refused (clients were told).",
                      "reason", s["spans_rejected"])
        yield counter("apiusage_spans_ignored", "Spans accepted but not API requests.",
                      "reason", s["spans_ignored"])
        yield counter("apiusage_data_quality_issues", "Spans with a data-quality problem.",
                      "check", s["data_quality_issues"])
        requests = CounterMetricFamily("apiusage_export_requests", "OTLP export requests answered.",
                                       labels=["transport", "outcome"])
        for (transport, outcome), n in sorted(s["export_requests"].items()):
            requests.add_metric([transport, outcome], n)
        yield requests
        overflow = CounterMetricFamily(
            "apiusage_label_overflow", "Observations whose label value was folded into __other__.",
            labels=["metric", "label"])
        for (metric, label), n in sorted(s["label_overflow"].items()):
            overflow.add_metric([metric, label], n)
        yield overflow
        yield CounterMetricFamily("apiusage_spans_processed", "Spans through derivation.",
                                  value=self._stats.spans_processed)
        yield CounterMetricFamily("apiusage_processing_errors",
                                  "Spans lost to an internal processing error (see the log).",
                                  value=self._stats.processing_errors)
        yield GaugeMetricFamily("apiusage_queue_spans", "Spans waiting for derivation.",
                                value=self._queue.depth)
        yield GaugeMetricFamily("apiusage_queue_capacity_spans", "Capacity of the queue in spans.",
                                value=self._queue.capacity)
        latency = HistogramMetricFamily(
            "apiusage_processing_latency_seconds",
            "Time from a batch's arrival to the end of its derivation.", unit="seconds")
        w = self._worker
        cumulative, buckets = 0, []
        for le, n in zip([_le(b) for b in LATENCY_BUCKETS] + ["+Inf"], w.latency_buckets, strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        latency.add_metric([], buckets, w.latency_sum)
        yield latency
        series = GaugeMetricFamily("apiusage_series", "Live series per metric.", labels=["metric"])
        for metric, n in sorted(series_counts.items()):
            series.add_metric([metric], n)
        yield series
        info = GaugeMetricFamily("apiusage_build_info", "Version and OTLP scanner in use.",
                                 labels=["version", "scanner"])
        info.add_metric(list(self._build), 1)
        yield info


def build_registry(*collectors: _Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)  # type: ignore[arg-type]
    ProcessCollector(registry=registry)
    return registry


class _MetricsHandler(QuietHandler):
    registry: CollectorRegistry
    request_metrics: RequestMetrics | None
    readiness: Callable[[], tuple[bool, str]]
    token: bytes | None = None
    runbooks: RunbookLibrary | None = None

    def _authorized(self) -> bool:
        scheme, _, credential = self.headers.get("Authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(credential.strip().encode(),
                                                                  self.token or b"")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics" and self.token is not None and not self._authorized():
            self.send_body(401, b"a valid bearer token is required\n", "text/plain; charset=utf-8",
                           {"WWW-Authenticate": 'Bearer realm="metrics"'})
        elif path == "/metrics":
            body, content_type = exposition(self.registry, self.request_metrics,
                                            self.headers.get("Accept", ""))
            headers = {}
            if "gzip" in self.headers.get("Accept-Encoding", ""):
                body = gzip.compress(body, compresslevel=1)
                headers["Content-Encoding"] = "gzip"
            self.send_body(200, body, content_type, headers)
        elif path == "/healthz":
            self.send_body(200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/readyz":
            ready, why = type(self).readiness()
            self.send_body(200 if ready else 503, f"{why}\n".encode(), "text/plain; charset=utf-8")
        elif self.runbooks is not None and (answer := self.runbooks.handle(path)) is not None:
            self.send_body(*answer)  # /runbooks/<AlertName>: what every alert's runbook_url opens
        else:
            self.send_body(404, b"not found: try /metrics, /healthz or /readyz\n",
                           "text/plain; charset=utf-8")

    do_HEAD = do_GET


class MetricsServer(Served):
    def __init__(self, config: PrometheusExporter, registry: CollectorRegistry,
                 readiness: Callable[[], tuple[bool, str]],
                 request_metrics: RequestMetrics | None = None) -> None:
        token = config.auth.read("exporters.prometheus.auth") if config.auth is not None else None
        handler = type("MetricsHandler", (_MetricsHandler,), {
            "registry": registry, "readiness": staticmethod(readiness),
            "request_metrics": request_metrics,
            "token": token.encode() if token else None,
            "runbooks": RunbookLibrary(find_runbooks_dir(config.runbooks_dir))})
        self._server = HttpServer(config.endpoint, handler, "exporters.prometheus.endpoint",
                                  "metrics")
