"""Wiring: receivers → queue → worker (derivation → sinks) → Prometheus endpoint, and lifecycle."""

from __future__ import annotations

import logging
import signal
import ssl
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING

from ._httpserver import GRACEFUL_SHUTDOWN, BindError
from .admin import AdminServer
from .component import ABORT_TIMEOUT, Components, StartFailed
from .config import Config, load_experiments_file
from .derive.design_metrics import DesignMetrics
from .derive.experiments import ExperimentJoin
from .derive.feedback_metrics import FeedbackMetrics
from .derive.flags import EVALUATION_EVENT_NAMES
from .derive.plans import PlanLookup, PlanLookupError
from .derive.request_metrics import RequestMetrics
from .derive.requests import (
    ARRAY_FIELD_INDEXES,
    FLAG_EVENT_KEYS,
    MAX_FLAG_EVALUATIONS,
    Deriver,
    resource_field_sources,
    span_field_sources,
)
from .errors import ProcessorError
from .exporters.consumer_metrics import ConsumerCollector
from .exporters.experiment_metrics import ExperimentMetrics
from .exporters.feedback_metrics import FeedbackCollector
from .exporters.otlp_forward import DRAIN_TIMEOUT as FORWARD_DRAIN
from .exporters.otlp_forward import Forwarder
from .exporters.prometheus import MetricsServer, UsageCollector, build_registry
from .memory import MemoryLimiter
from .pipeline import SpanQueue, Worker
from .receivers.auth import Authenticator
from .receivers.fields import FieldScanner
from .receivers.grpc import GRACE as GRPC_GRACE
from .receivers.grpc import GrpcReceiver
from .receivers.http import HttpReceiver
from .receivers.intake import Intake
from .state.activity import ConsumerActivity
from .state.service import StateService, stop_bound
from .state.store import StoreError
from .telemetry import PipelineStats

if TYPE_CHECKING:
    from apiusage.conventions.catalog import Catalog
    from apiusage.conventions.experiments import Experiments

    from .config import LimitsConfig
    from .state.service import ExperimentChecksHook

__all__ = ["Processor", "StartupError"]


class StartupError(ProcessorError):
    """The processor cannot start; the message says what to change."""


def load_catalog_file(path: str | None) -> Catalog | None:
    """The endpoint catalog named by the `catalog` key, or None."""
    if path is None:
        return None
    from apiusage.conventions.catalog import CatalogError, load_catalog

    try:
        return load_catalog(path)
    except CatalogError as exc:
        raise StartupError(f"catalog: {exc}") from None


log = logging.getLogger("apiusage.processor")


def experiment_checks_hook(
    experiments: Experiments, limits: LimitsConfig, every: float = 0.0
) -> ExperimentChecksHook:
    """The state refresh's experiment checks (experiments/checks.py), run at most `every` seconds
    apart; without the statistics (the `experiments` extra) a hook that checks nothing and counts
    each experiment unavailable."""
    try:
        from apiusage.experiments.checks import ExperimentChecker
    except ImportError as exc:
        n = len(tuple(experiments))
        log.warning(
            "experiments: the experiment checks (api_experiment_running, _sample_ratio_*, "
            "_guardrail_failed, _p_value) need the '%s' package: pip install "
            "'apiusage[processor,experiments]'; running without them",
            (exc.name or "scipy").split(".")[0],
        )
        return lambda store, now_ms, report: {"unavailable": n}
    return ExperimentChecker(experiments, limits, every=every)


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, as Go programs (the
    Collector) do at start; returns the limit now in force.

    Every connection on every port costs a descriptor: with the common soft limit of 1024, a
    thousand connections would leave none for the state store. The bounds on connections
    (`max_connections` per port) are what keep their number in check, not this limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20 if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        return soft
    return want


def _version() -> str:
    try:
        return metadata.version("apiusage")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _host(endpoint: str) -> str:
    """A host to print in a URL: an all-interfaces bind is reachable as localhost."""
    host = endpoint.rpartition(":")[0]
    return "localhost" if host in ("", "0.0.0.0", "[::]", "::") else host


class Processor:
    """One running processor. `start()` binds every port or raises; `stop()` drains."""

    def __init__(self, config: Config) -> None:
        self.config = config
        p = config.processors
        self.stats = PipelineStats()
        self.queue = SpanQueue(p.queue.max_spans)
        self.scanner = FieldScanner(
            span_field_sources(p.usage),
            resource_field_sources(p.usage),
            max_spans=config.receivers.otlp.max_spans_per_request,
            # A list cut by the scanner is one entry longer, so it is counted as names_truncated.
            max_array_items=p.usage.max_names_per_request,
            array_fields=ARRAY_FIELD_INDEXES,
            # Feature-flag span events: (name, key, variant, old variant, result value) each.
            event_names=EVALUATION_EVENT_NAMES,
            event_keys=FLAG_EVENT_KEYS,
            max_events=MAX_FLAG_EVALUATIONS,
        )
        self.request_metrics = RequestMetrics(
            p.limits,
            config.exporters.prometheus.histogram_buckets,
            self.stats,
            exemplars=config.exporters.prometheus.exemplars,
        )
        self.catalog = load_catalog_file(config.catalog)
        lookup = p.plan_lookup
        self.plans = PlanLookup(lookup.file, lookup.sql) if lookup.file or lookup.sql else None
        self.design_metrics = DesignMetrics(
            p.limits,
            config.exporters.prometheus.histogram_buckets,
            config.exporters.prometheus.size_buckets,
            self.stats,
        )
        self.feedback_metrics = FeedbackMetrics(p.limits, self.stats)
        sinks: list = [self.request_metrics, self.design_metrics, self.feedback_metrics]
        # Experiments (issue 16): flag evaluations joined to requests, counted per variant.
        self.experiments = load_experiments_file(config.experiments, p.limits.max_label_length)
        self.experiment_join: ExperimentJoin | None = None
        self.experiment_metrics: ExperimentMetrics | None = None
        if self.experiments is not None:
            buckets = config.exporters.prometheus.histogram_buckets
            self.experiment_metrics = ExperimentMetrics(p.limits, buckets, self.stats)
            self.experiment_join = ExperimentJoin(
                self.experiments, p.experiment_join, self.stats, [self.experiment_metrics]
            )
            sinks.append(self.experiment_join)
        self.state: StateService | None = None
        if config.state.enabled:
            self.activity = ConsumerActivity(
                config.state.retention_days,
                self.stats,
                config.state.max_pending_rows,
                p.usage.data_quality.max_future_skew,
                config.state.max_pending_bytes,
                parameter_consumers=config.state.parameter_consumers,
                catalog=self.catalog,
                max_names_per_route=p.limits.max_names_per_route,
                max_label_length=p.limits.max_label_length,
                max_routes=p.limits.label_limit("route"),
            )
            self.state = StateService(
                config.state,
                self.activity,
                self.catalog,
                self.plans,
                lookup.refresh_interval,
                p.limits,
                self.stats,
                experiment_checks_hook(
                    self.experiments, p.limits, float(config.state.experiment_checks_interval)
                )
                if self.experiments is not None
                else None,
            )
            sinks.append(self.activity)
            if self.experiment_join is not None:
                # Exposures are stored with the rest of the flush (assignments, day tallies).
                self.experiment_join.exposure_sinks.append(self.activity)
        elif lookup.sql:
            raise StartupError("processors.plan_lookup.sql needs the state store (state.enabled)")
        deriver = Deriver(p.usage, self.stats, self.plans, self.catalog, p.limits.max_label_length)
        self.worker = Worker(self.queue, deriver, sinks, self.stats, float(p.queue.shutdown_timeout))
        forward = config.exporters.otlp
        self.forwarder = Forwarder(forward) if forward is not None else None
        self.memory = MemoryLimiter(p.memory_limiter)
        self.intake = Intake(
            self.scanner,
            self.queue,
            self.stats,
            self.forwarder.forward if self.forwarder else None,
            self.memory,
            self.activity.backlogged if self.state is not None else None,
            max_spans=config.receivers.otlp.max_spans_per_request,
            max_label_length=p.limits.max_label_length,
            consumer_attributes=p.usage.attributes.consumer_id,
        )
        collectors: list = [
            UsageCollector(
                self.request_metrics,
                self.stats,
                self.queue,
                self.worker,
                self.scanner.implementation,
                _version(),
                [m for m in (self.design_metrics, self.experiment_metrics) if m is not None],
            )
        ]
        if self.forwarder is not None:
            collectors.append(self.forwarder)
        collectors.append(self.memory)
        collectors.append(FeedbackCollector(self.feedback_metrics))
        if self.experiment_metrics is not None:
            collectors.append(self.experiment_metrics)
        if self.state is not None:
            collectors.append(ConsumerCollector(self.state, p.limits))
        self.registry = build_registry(*collectors)
        self._started = False
        self._stopping = False
        self._stopped = threading.Event()
        self.components = Components()
        self.grpc: GrpcReceiver | None = None
        self.http: HttpReceiver | None = None
        self.metrics: MetricsServer | None = None
        self.admin: AdminServer | None = None

    def readiness(self) -> tuple[bool, str]:
        if self._stopping:
            return False, "shutting down"
        if not self._started:
            return False, "starting"
        if self.queue.depth >= self.queue.capacity:
            return False, "queue full"
        if self.memory.over:
            return False, "over the memory limit"
        if self.state is not None and self.activity.backlogged():
            return False, "state store backlog full"
        return True, "ready"

    def start(self) -> None:
        """Open the store and bind every port, then start the components in order; or raise
        StartupError having closed everything again."""
        protocols = self.config.receivers.otlp.protocols
        retry_after = self.config.processors.queue.retry_after
        components = self.components = Components()
        try:
            if self.plans is not None and self.plans.file:
                self.plans.load()
            # Start order; shutdown is the reverse: the receivers stop taking data first, the
            # worker drains, the admin endpoint stops before the store closes under its
            # requests, the state flushes after the drain (so the last flush holds every
            # accepted span), and /metrics answers until the end.
            self.metrics = components.add(
                MetricsServer(
                    self.config.exporters.prometheus,
                    self.registry,
                    self.readiness,
                    self.request_metrics,
                    self.design_metrics,
                )
            )
            components.add(self.memory)
            if self.forwarder is not None:
                components.add(self.forwarder)
            if self.state is not None:
                components.add(self.state).open()
            if self.config.admin.enabled:
                if self.state is None:
                    raise StartupError("admin needs the state store (state.enabled: true)")
                self.admin = components.add(AdminServer(self.config.admin, self.state))
            components.add(self.worker)
            auth_config = self.config.receivers.otlp.auth
            auth = Authenticator(auth_config) if auth_config is not None else None
            if protocols.http is not None:
                self.http = components.add(HttpReceiver(protocols.http, self.intake, retry_after, auth))
            if protocols.grpc is not None:
                self.grpc = components.add(GrpcReceiver(protocols.grpc, self.intake, retry_after, auth))
        except ValueError as exc:  # a secret file (admin, receiver or metrics token)
            self._close_partial()
            raise StartupError(str(exc)) from None
        except ssl.SSLError as exc:
            self._close_partial()
            raise StartupError(f"TLS: cannot use the certificate and key: {exc.reason or exc}") from None
        except (BindError, StoreError, PlanLookupError) as exc:
            self._close_partial()
            raise StartupError(exc.strerror if isinstance(exc, BindError) else str(exc)) from None
        except BaseException:
            self._close_partial()
            raise
        try:
            components.start()  # shuts down again what it started when one fails
        except StartFailed as exc:
            raise StartupError(str(exc)) from exc.__cause__
        self._started = True
        log.info(
            "apiusage processor ready: otlp grpc %s, otlp http %s, metrics :%s, scanner %s",
            self.grpc and self.grpc.port,
            self.http and self.http.port,
            self.metrics.port,
            self.scanner.implementation,
        )

    def urls(self) -> dict[str, str]:
        """Where each running endpoint listens, with the ports actually bound."""
        protocols = self.config.receivers.otlp.protocols
        out = {}
        if self.grpc is not None and protocols.grpc is not None:
            out["otlp-grpc"] = f"{_host(protocols.grpc.endpoint)}:{self.grpc.port}"
        if self.http is not None and protocols.http is not None:
            out["otlp-http"] = f"http://{_host(protocols.http.endpoint)}:{self.http.port}/v1/traces"
        if self.metrics is not None:
            host = _host(self.config.exporters.prometheus.endpoint)
            out["metrics"] = f"http://{host}:{self.metrics.port}/metrics"
        if self.admin is not None:
            out["admin"] = f"http://{_host(self.config.admin.endpoint)}:{self.admin.port}/v1/consumers"
        return out

    def _close_partial(self) -> None:
        self.components.shutdown(time.monotonic() + ABORT_TIMEOUT)

    def shutdown_bound(self) -> float:
        """Seconds stop() may take in all: the drain, the state's final flush, the gRPC grace and
        the trace forwarding (docs/operations.md, SIGTERM), and the HTTP receiver's grace for
        requests in flight, so slow receivers never eat the state's share."""
        drain = float(self.config.processors.queue.shutdown_timeout)
        return drain + stop_bound() + GRPC_GRACE + FORWARD_DRAIN + GRACEFUL_SHUTDOWN

    def stop(self) -> bool:
        """Stop accepting, drain the queue, write the state, stop serving metrics; True when
        nothing was lost (the exit status says so)."""
        if self._stopping:
            self._stopped.wait()
            return True
        self._stopping = True
        try:
            return self.components.shutdown(time.monotonic() + self.shutdown_bound())
        finally:
            self._stopped.set()

    def run_until_signal(self) -> bool:
        """Serve until SIGTERM or SIGINT, then shut down cleanly."""
        wake = threading.Event()

        def handler(signum: int, frame: object) -> None:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            wake.set()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            while not wake.wait(1.0):
                pass
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
        return self.stop()
