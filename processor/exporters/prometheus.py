"""Prometheus exposition: a custom collector over the in-memory aggregates, and its HTTP endpoint.

Nothing on the hot path touches prometheus_client.  At scrape time the
request-metric families are written straight from a snapshot of plain dicts
(exposition.py) and the pipeline's health families come from this collector.
"""

from __future__ import annotations

import asyncio
import gzip
import hmac
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import Metric

from .. import selfmetrics as _T
from .._httpserver import TEXT, HttpServer, Limits, Reply, Request, Served, log_refusals
from ..config import PrometheusExporter
from ..derive.design_metrics import DesignMetrics
from ..derive.request_metrics import RequestMetrics
from ..pipeline import LATENCY_BUCKETS, SpanQueue, Worker
from ..runbooks import RunbookLibrary, find_runbooks_dir
from ..telemetry import PipelineStats
from .exposition import exposition
from .le import le_label

__all__ = ["UsageCollector", "MetricsServer", "build_registry"]


class _Collector(Protocol):
    def collect(self) -> Iterable[Metric]: ...


class SeriesSource(Protocol):
    """An aggregate whose live series apiusage_series counts, per metric family."""

    def series_counts(self) -> dict[str, int]: ...


class UsageCollector:
    """The pipeline's health; the request families are written by exposition.py (faster)."""

    def __init__(
        self,
        metrics: RequestMetrics,
        stats: PipelineStats,
        queue: SpanQueue,
        worker: Worker,
        scanner_impl: str,
        version: str,
        series: Sequence[SeriesSource] = (),
    ) -> None:
        self._metrics = metrics
        self._series = tuple(series)  # besides `metrics`: every other family with a series bound
        self._stats = stats
        self._queue = queue
        self._worker = worker
        self._build = (version, scanner_impl)

    def collect(self) -> Iterable[Metric]:
        counts = self._metrics.series_counts()
        for source in self._series:
            counts.update(source.series_counts())
        yield from self._health(counts)

    def _health(self, series_counts: dict[str, int]) -> Iterable[Metric]:
        s = self._stats.snapshot()
        yield _T.SPANS_RECEIVED.filled(s["spans_received"])
        yield _T.SPANS_REJECTED.filled(s["spans_rejected"])
        yield _T.SPANS_IGNORED.filled(s["spans_ignored"])
        yield _T.DATA_QUALITY_ISSUES.filled(s["data_quality_issues"])
        yield _T.EXPORT_REQUESTS.filled(s["export_requests"])
        yield _T.LABEL_OVERFLOW.filled(s["label_overflow"])
        yield _T.SPANS_PROCESSED.family(self._stats.spans_processed)
        yield _T.PROCESSING_ERRORS.family(self._stats.processing_errors)
        yield _T.QUEUE_SPANS.family(self._queue.depth)
        yield _T.QUEUE_CAPACITY_SPANS.family(self._queue.capacity)
        latency = _T.PROCESSING_LATENCY_SECONDS.family()
        w = self._worker
        cumulative, buckets = 0, []
        for le, n in zip([le_label(b) for b in LATENCY_BUCKETS] + ["+Inf"], w.latency_buckets, strict=True):
            cumulative += n
            buckets.append((le, cumulative))
        latency.add_metric([], buckets, w.latency_sum)  # type: ignore[attr-defined]
        yield latency
        yield _T.SERIES.filled(series_counts)
        yield _T.FLAG_EVALUATIONS.filled(s["flag_evaluations"])
        yield _T.EXPERIMENT_JOIN_PENDING.filled(s["experiment_join_pending"])
        yield _T.EXPERIMENT_JOIN_DROPPED.filled(s["experiment_join_dropped"])
        yield _T.RELEASE_VERSIONS_RETIRED.family(self._metrics.releases_retired)
        yield _T.BUILD_INFO.filled({self._build: 1})


def build_registry(*collectors: _Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    for collector in collectors:
        registry.register(collector)
    ProcessCollector(registry=registry)
    return registry


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (`gzip;q=0` refuses it, `*` allows it)."""
    wildcard = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        coding = coding.strip().lower()
        if coding in ("gzip", "x-gzip"):
            return q > 0
        if coding == "*":
            wildcard = q > 0
    return bool(wildcard)


def _render(
    registry: CollectorRegistry,
    request_metrics: RequestMetrics | None,
    accept: str,
    gzipped: bool,
    design_metrics: DesignMetrics | None = None,
) -> tuple[bytes, str]:
    body, content_type = exposition(registry, request_metrics, accept, design_metrics)
    return (gzip.compress(body, compresslevel=1) if gzipped else body), content_type


class _Metrics:
    """/metrics, /healthz, /readyz and /runbooks/<AlertName>."""

    def __init__(
        self,
        registry: CollectorRegistry,
        request_metrics: RequestMetrics | None,
        readiness: Callable[[], tuple[bool, str]],
        token: bytes | None,
        runbooks: RunbookLibrary | None,
        design_metrics: DesignMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.request_metrics = request_metrics
        self.design_metrics = design_metrics
        self.readiness = readiness
        self.token = token
        self.runbooks = runbooks

    def _authorized(self, request: Request) -> bool:
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            credential.strip().encode(), self.token or b""
        )

    async def handle(self, request: Request) -> Reply:
        path = request.path
        if request.method not in ("GET", "HEAD"):
            return Reply(405, b"use GET\n", TEXT, {"Allow": "GET, HEAD"})
        if path == "/metrics" and self.token is not None and not self._authorized(request):
            return Reply(
                401,
                b"a valid bearer token is required\n",
                TEXT,
                {"WWW-Authenticate": 'Bearer realm="metrics"'},
            )
        if path == "/metrics":
            gzipped = accepts_gzip(request.headers.get("accept-encoding", ""))
            # Rendering takes CPU: on a thread, so health probes on this loop are not kept waiting.
            body, content_type = await asyncio.to_thread(
                _render,
                self.registry,
                self.request_metrics,
                request.headers.get("accept", ""),
                gzipped,
                self.design_metrics,
            )
            return Reply(200, body, content_type, {"Content-Encoding": "gzip"} if gzipped else {})
        if path == "/healthz":
            return Reply(200, b"ok\n", TEXT)
        if path == "/readyz":
            ready, why = self.readiness()
            return Reply(200 if ready else 503, f"{why}\n".encode(), TEXT)
        if self.runbooks is not None and path.startswith("/runbooks"):
            # /runbooks/<AlertName>: what every alert's runbook_url opens (files: on a thread)
            answer = await asyncio.to_thread(self.runbooks.handle, path)
            if answer is not None:
                status, body, content_type, headers = answer
                return Reply(status, body, content_type, dict(headers))
        return Reply(404, b"not found: try /metrics, /healthz or /readyz\n", TEXT)


class MetricsServer(Served):
    """/metrics, the probes and the runbooks: a component (component.py), the last to stop."""

    families = _T.owned_by("metrics")

    def __init__(
        self,
        config: PrometheusExporter,
        registry: CollectorRegistry,
        readiness: Callable[[], tuple[bool, str]],
        request_metrics: RequestMetrics | None = None,
        design_metrics: DesignMetrics | None = None,
    ) -> None:
        token = config.auth.read("exporters.prometheus.auth") if config.auth is not None else None
        metrics = _Metrics(
            registry,
            request_metrics,
            readiness,
            token.encode() if token else None,
            RunbookLibrary(find_runbooks_dir(config.runbooks_dir)),
            design_metrics,
        )
        limits = Limits(max_connections=config.max_connections, on_refused=log_refusals("metrics"))
        self._server = HttpServer(
            config.endpoint, metrics.handle, "exporters.prometheus.endpoint", "metrics", limits=limits
        )
