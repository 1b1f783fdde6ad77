"""The processor's configuration: one YAML file, shaped like an OpenTelemetry Collector config.

Loading happens here and only here: read the file, parse YAML, substitute
`${env:VAR}`, build the frozen dataclasses below, validate, and fail once with
every problem and its key path.  The defaults below are the documented defaults
(`docs/configuration.md`).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from apiusage.conventions.attributes import (
    ATTR_API_VERSION,
    ATTR_BODY_FIELDS,
    ATTR_CLIENT_NAME,
    ATTR_CLIENT_REGION,
    ATTR_CLIENT_VERSION,
    ATTR_CONSUMER_ID,
    ATTR_DEPRECATED,
    ATTR_FEATURE,
    ATTR_PLAN_TIER,
    ATTR_QUERY_PARAMETERS,
    ATTR_SCHEMA_VERSION,
    ATTR_VALIDATION_LOCATIONS,
    ATTR_VALIDATION_TYPES,
    CLOUD_REGION,
    ERROR_TYPE,
    HTTP_REQUEST_BODY_SIZE,
    HTTP_RESPONSE_BODY_SIZE,
    SERVICE_VERSION,
)

from ._typedload import INT32_MAX, ByteSize, Duration, Problems, bounded, load_dataclass
from ._yaml import YamlError, YamlLimits, safe_load
from .errors import ProcessorError

if TYPE_CHECKING:
    from apiusage.conventions.experiments import Experiments

__all__ = [
    "Config",
    "ConfigError",
    "load_config",
    "load_experiments_file",
    "parse_config",
    "split_endpoint",
]

MiB = 1 << 20
#: A config file is a page or two; anything near this is a mistake (or an attack), refused unread.
MAX_CONFIG_BYTES = 1 * MiB
#: Hostile-YAML bounds for the config file (and ${env:VAR} values): see apiusage.processor._yaml.
CONFIG_YAML_LIMITS = YamlLimits(
    max_depth=64, max_nodes=10_000, max_alias_nodes=10_000, max_scalar_chars=65_536, max_int_digits=100
)
# gRPC and protobuf take messages below 2 GiB (an int32 of bytes).
_MAX_MESSAGE_MIB = 2047


_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token
_BAD_HEADER_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # controls but HTAB


class ConfigError(ProcessorError):
    """The configuration is unusable; the message lists every problem with its key path."""


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """`host:port` → (host, port); `[::1]:4317` works too; an empty host (`:4318`) means every
    interface, as in the Collector.  Raises ValueError."""
    host, sep, port = endpoint.rpartition(":")
    # isascii: str.isdigit() also accepts digits like '²' that int() refuses.
    if not sep or not (port.isascii() and port.isdigit() and len(port) <= 5) or int(port) > 65535:
        raise ValueError(f"must be host:port, such as localhost:4317 (got {endpoint!r})")
    return host.strip("[]"), int(port)


def _check_endpoint(endpoint: str, path: str, problems: Problems) -> None:
    try:
        split_endpoint(endpoint)
    except ValueError as exc:
        problems.add(path, str(exc))


def _check_file(value: str | None, path: str, problems: Problems) -> None:
    if value and not os.path.isfile(value):
        problems.add(path, f"no such file: {value}")
    elif value and not os.access(value, os.R_OK):
        problems.add(path, f"cannot read {value}")


@dataclass(frozen=True)
class TlsConfig:
    """Server certificate; with client_ca_file, clients must present a certificate it signed."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str | None = None

    def _validate(self, path: str, problems: Problems) -> None:
        for name in ("cert_file", "key_file"):
            if not getattr(self, name):
                problems.add(f"{path}.{name}", "is required for TLS")
            _check_file(getattr(self, name), f"{path}.{name}", problems)
        _check_file(self.client_ca_file, f"{path}.client_ca_file", problems)


@dataclass(frozen=True)
class Secret:
    """A token given inline (use ${env:VAR}) or read from a file; never logged."""

    token: str | None = None
    token_file: str | None = None

    def _validate(self, path: str, problems: Problems) -> None:
        if bool(self.token) == bool(self.token_file):
            problems.add(path, "set exactly one of token or token_file")
        _check_file(self.token_file, f"{path}.token_file", problems)
        if self.token is not None and len(self.token) < 16:
            problems.add(f"{path}.token", "must be at least 16 characters")

    def read(self, path: str) -> str:
        """The secret's value; raises ValueError naming the key path when it is unusable."""
        if self.token:
            return self.token
        try:
            with open(self.token_file or "", encoding="utf-8") as f:
                value = f.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}.token_file: cannot read {self.token_file}: {exc}") from None
        if len(value) < 16:
            raise ValueError(
                f"{path}.token_file: the token in {self.token_file} is shorter than 16 characters"
            )
        return value


@dataclass(frozen=True)
class ReceiverToken(Secret):
    """A bearer token for senders; with `service`, its spans must carry that service.name."""

    service: str | None = None


@dataclass(frozen=True)
class ReceiverAuth:
    tokens: tuple[ReceiverToken, ...] = ()

    def _validate(self, path: str, problems: Problems) -> None:
        if not self.tokens:
            problems.add(f"{path}.tokens", "needs at least one token (or remove auth)")


@dataclass(frozen=True)
class GrpcProtocol:
    endpoint: str = "localhost:4317"
    max_recv_msg_size_mib: int = bounded(
        64, above=0, max=_MAX_MESSAGE_MIB, max_why=" (gRPC takes messages below 2 GiB)"
    )
    max_concurrent_streams: int = bounded(64, above=0)
    # A call must deliver its whole message within this, or it is answered DEADLINE_EXCEEDED.
    receive_timeout: Duration = bounded(Duration(10), min=0.001, max=3600)
    # Calls waiting for their message, over all connections; past it the oldest is ended.
    max_pending_calls: int = bounded(1024, min=1, max=1_000_000)
    # Open connections; grpc core refuses connections past it (it cannot evict), so idle ones are
    # also closed after max_connection_idle: a silent connection holds its slot for that long at most.
    max_connections: int = bounded(1024, above=0, max=1_000_000)
    max_connection_idle: Duration = bounded(Duration(120), min=1, max=86_400)
    tls: TlsConfig | None = None

    def _validate(self, path: str, problems: Problems) -> None:
        _check_endpoint(self.endpoint, f"{path}.endpoint", problems)


@dataclass(frozen=True)
class HttpProtocol:
    endpoint: str = "localhost:4318"
    max_request_body_size: ByteSize = bounded(
        ByteSize(64 * MiB),
        above=0,
        max=_MAX_MESSAGE_MIB * MiB,
        max_why=" (protobuf parses messages below 2 GiB)",
    )
    max_connections: int = bounded(256, above=0)
    # A request's headers must arrive within header_timeout of the connection (or of its first
    # byte, on a kept-alive connection) and its body within body_timeout of the headers.
    header_timeout: Duration = bounded(Duration(10), above=0)
    body_timeout: Duration = bounded(Duration(60), above=0)
    # A kept-alive connection with no request for this long is closed.
    idle_timeout: Duration = bounded(Duration(30), above=0)
    tls: TlsConfig | None = None

    def _validate(self, path: str, problems: Problems) -> None:
        _check_endpoint(self.endpoint, f"{path}.endpoint", problems)


@dataclass(frozen=True)
class OtlpProtocols:
    grpc: GrpcProtocol | None = field(default_factory=GrpcProtocol)
    http: HttpProtocol | None = field(default_factory=HttpProtocol)


@dataclass(frozen=True)
class OtlpReceiver:
    protocols: OtlpProtocols = field(default_factory=OtlpProtocols)
    auth: ReceiverAuth | None = None
    # Spans in one export request, on either transport. A span can be 2 bytes of protobuf and
    # ~200 bytes once scanned: without it a 64 MiB body could become gigabytes.
    max_spans_per_request: int = bounded(100_000, above=0, max=10_000_000)

    def _validate(self, path: str, problems: Problems) -> None:
        if self.protocols.grpc is None and self.protocols.http is None:
            problems.add(f"{path}.protocols", "enable at least one of grpc or http")


@dataclass(frozen=True)
class Receivers:
    otlp: OtlpReceiver = field(default_factory=OtlpReceiver)


@dataclass(frozen=True)
class QueueConfig:
    """Bounded hand-off between the receivers and the derivation worker."""

    max_spans: int = bounded(200_000, above=0, show_value=True)
    retry_after: Duration = bounded(Duration(5), min=1, min_why=" (Retry-After counts seconds)")
    shutdown_timeout: Duration = Duration(10)


def _sources(*keys: str) -> tuple[str, ...]:
    return keys


@dataclass(frozen=True)
class AttributeSources:
    """Span attribute keys to read each field from, first present wins."""

    method: tuple[str, ...] = _sources("http.request.method", "http.method")
    route: tuple[str, ...] = _sources("http.route")
    status_code: tuple[str, ...] = _sources("http.response.status_code", "http.status_code")
    path: tuple[str, ...] = _sources("url.path", "http.target", "http.url")
    user_agent: tuple[str, ...] = _sources("user_agent.original", "http.user_agent")
    consumer_id: tuple[str, ...] = _sources(ATTR_CONSUMER_ID, "enduser.pseudo.id", "enduser.id", "user.id")
    plan_tier: tuple[str, ...] = _sources(ATTR_PLAN_TIER)
    client_name: tuple[str, ...] = _sources(ATTR_CLIENT_NAME)
    client_version: tuple[str, ...] = _sources(ATTR_CLIENT_VERSION)
    api_version: tuple[str, ...] = _sources(ATTR_API_VERSION)
    feature: tuple[str, ...] = _sources(ATTR_FEATURE)
    deprecated: tuple[str, ...] = _sources(ATTR_DEPRECATED)
    schema_version: tuple[str, ...] = _sources(ATTR_SCHEMA_VERSION)
    # Schema version 2 (API design); the old semconv size names come second.
    request_size: tuple[str, ...] = _sources(HTTP_REQUEST_BODY_SIZE, "http.request_content_length")
    response_size: tuple[str, ...] = _sources(HTTP_RESPONSE_BODY_SIZE, "http.response_content_length")
    query_parameters: tuple[str, ...] = _sources(ATTR_QUERY_PARAMETERS)
    body_fields: tuple[str, ...] = _sources(ATTR_BODY_FIELDS)
    validation_locations: tuple[str, ...] = _sources(ATTR_VALIDATION_LOCATIONS)
    validation_types: tuple[str, ...] = _sources(ATTR_VALIDATION_TYPES)
    error_type: tuple[str, ...] = _sources(ERROR_TYPE)
    client_region: tuple[str, ...] = _sources(ATTR_CLIENT_REGION)
    # Resource attributes, not span attributes.
    service: tuple[str, ...] = _sources("service.name")
    server_region: tuple[str, ...] = _sources(CLOUD_REGION)
    # Releases (issue 16): the deployed version of the service.
    service_version: tuple[str, ...] = _sources(SERVICE_VERSION)

    def _validate(self, path: str, problems: Problems) -> None:
        for name in self.__dataclass_fields__:
            keys = getattr(self, name)
            if not keys:
                problems.add(f"{path}.{name}", "needs at least one attribute key")
            for i, key in enumerate(keys):
                if not key:
                    problems.add(f"{path}.{name}[{i}]", "must not be empty")


@dataclass(frozen=True)
class DataQualityConfig:
    max_future_skew: Duration = Duration(300)
    # Late spans are counted as an issue but kept; state drops them only past retention.
    max_past_age: Duration = Duration(86400)


@dataclass(frozen=True)
class UsageConfig:
    """How spans become API requests."""

    attributes: AttributeSources = field(default_factory=AttributeSources)
    user_agent_fallback: bool = True
    default_plan_tier: str = "unknown"
    data_quality: DataQualityConfig = field(default_factory=DataQualityConfig)
    # Names kept per request and list (query parameters, body fields, validation errors); past
    # it the list is cut and counted (names_truncated).
    max_names_per_request: int = bounded(64, above=0, max=10_000)

    def _validate(self, path: str, problems: Problems) -> None:
        if not self.default_plan_tier:
            problems.add(f"{path}.default_plan_tier", "must not be empty")


# Every label a limit can apply to (request metrics and the consumer-state families).
LIMITED_LABELS = frozenset(
    (
        "service",
        "method",
        "route",
        "status_code",
        "plan_tier",
        "deprecated",
        "client_name",
        "client_version",
        "status_class",
        "feature",
        # API design families (issue 15)
        "location",
        "parameter",
        "field",
        "error_type",
        "client_region",
        "server_region",
        # api_feedback_total (derive/feedback_metrics.py)
        "category",
        "score",
        # api_experiment_* (issue 16; exporters/experiment_metrics.py)
        "experiment",
        "variant",
        # api_release_* (issue 16): service.version
        "version",
    )
)

_DEFAULT_LABEL_LIMITS = MappingProxyType(
    {
        "service": 100,
        "method": 20,
        "route": 1000,
        "status_code": 100,
        "plan_tier": 20,
        "deprecated": 2,
        "client_name": 100,
        "client_version": 200,
        "status_class": 10,
        # Parameter names over the whole API, across its routes: 100 endpoints of about 20 each.
        "parameter": 2000,
        # query, body (parameters); body, query, path, header, cookie (validation errors).
        "location": 8,
        "field": 1000,
        # Exception class names and status codes: a small set per service.
        "error_type": 200,
        # ISO 3166-1 has 249 codes; the rest are CDN extras (XX, T1…).
        "client_region": 300,
        # A cloud has 30 to 60 regions; one deployment uses a few of them.
        "server_region": 100,
        # Feedback categories are the service's own few; scores are 1..5.
        "category": 50,
        "score": 5,
        # experiments.yaml declares at most 200 experiments of at most 10 variants each; variant
        # names recur across experiments (control, treatment), so 100 covers most files.
        "experiment": 200,
        "variant": 100,
        # service.version over every service: the live ones are also bounded per service
        # (max_releases, the newest by first sight; derive/request_metrics.py).
        "version": 500,
    }
)


@dataclass(frozen=True)
class LimitsConfig:
    """Bounds on what the processor keeps in memory."""

    series_ttl: Duration = bounded(Duration(900), min=1)
    default_max_label_values: int = bounded(1000, above=0)
    max_label_values: Mapping[str, int] = field(default_factory=lambda: _DEFAULT_LABEL_LIMITS)
    max_label_length: int = bounded(128, min=8)
    # Distinct `parameter` (and validation `field`) values per endpoint, inside the family-wide
    # limit: a route whose clients put values into names (`?<uuid>=1`) then folds its own names
    # into __other__ instead of taking every place from the other routes.
    max_names_per_route: int = bounded(100, above=0, max=INT32_MAX)
    # Releases per service in the version families and the release gauges: the newest by first
    # sight; an older version's traffic then folds into __other__ (docs/releases.md).
    max_releases: int = bounded(5, min=2, max=1000)

    def label_limit(self, label: str) -> int:
        default = _DEFAULT_LABEL_LIMITS.get(label, self.default_max_label_values)
        return self.max_label_values.get(label, default)

    def _validate(self, path: str, problems: Problems) -> None:
        for label, limit in self.max_label_values.items():
            if label not in LIMITED_LABELS:
                hint = difflib.get_close_matches(label, sorted(LIMITED_LABELS), n=1)
                problems.add(
                    f"{path}.max_label_values.{label}",
                    "not a label of any metric" + (f" (did you mean '{hint[0]}'?)" if hint else ""),
                )
            if limit <= 0:
                problems.add(f"{path}.max_label_values.{label}", f"must be > 0 (got {limit})")
            elif limit > INT32_MAX:
                problems.add(f"{path}.max_label_values.{label}", f"must be at most {INT32_MAX} (got {limit})")


@dataclass(frozen=True)
class MemoryLimiterConfig:
    """Refuse new data (retryable) while the process's resident memory is near the limit."""

    limit_mib: int = bounded(2048, above=0)
    spike_limit_mib: int = 512
    # Below 10ms the check itself (reading /proc) becomes the load.
    check_interval: Duration = bounded(Duration(0.1), min=0.01)

    def _validate(self, path: str, problems: Problems) -> None:
        if not 0 <= self.spike_limit_mib < self.limit_mib:
            problems.add(f"{path}.spike_limit_mib", f"must be below limit_mib ({self.limit_mib})")


@dataclass(frozen=True)
class PlanLookupConfig:
    """Plan tier (and account name) per consumer id, for spans that carry none."""

    file: str | None = None
    sql: str | None = None
    refresh_interval: Duration = bounded(Duration(300), min=1)

    def _validate(self, path: str, problems: Problems) -> None:
        if self.file and self.sql:
            problems.add(path, "choose one of file or sql, not both")


@dataclass(frozen=True)
class ExperimentJoinConfig:
    """How long, and how many, flag evaluations from OTLP logs and requests wait for each other."""

    # Logs and traces leave a service through different exporters and batches: minutes apart.
    ttl: Duration = bounded(Duration(120), min=1, max=86_400)
    max_pending_evaluations: int = bounded(100_000, above=0, max=10_000_000)
    # Requests of services with experiments, held for evaluations that arrive after them:
    # about their request rate x ttl (some 350 bytes each).
    max_pending_requests: int = bounded(100_000, above=0, max=10_000_000)


@dataclass(frozen=True)
class Processors:
    queue: QueueConfig = field(default_factory=QueueConfig)
    usage: UsageConfig = field(default_factory=UsageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    plan_lookup: PlanLookupConfig = field(default_factory=PlanLookupConfig)
    memory_limiter: MemoryLimiterConfig = field(default_factory=MemoryLimiterConfig)
    experiment_join: ExperimentJoinConfig = field(default_factory=ExperimentJoinConfig)


DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Body sizes in bytes: powers of 4 from 64 B to 64 MiB. Payloads span six orders of magnitude
# (an empty GET to a bulk export); a factor of 4 keeps each quantile within 2x at 12 series per
# histogram, like the latency buckets, and 64 MiB is the receivers' own default body limit.
DEFAULT_SIZE_BUCKETS = tuple(float(4**i) for i in range(3, 14))


def _check_buckets(b: tuple[float, ...], path: str, problems: Problems) -> None:
    if not b:
        problems.add(path, "needs at least one bucket bound")
    elif not all(math.isfinite(x) and x > 0 for x in b):
        problems.add(path, f"bounds must be finite and > 0; +Inf is added for you (got {list(b)})")
    elif any(x >= y for x, y in zip(b, b[1:], strict=False)):
        problems.add(path, f"must be strictly increasing (got {list(b)})")


@dataclass(frozen=True)
class PrometheusExporter:
    endpoint: str = "localhost:9464"
    histogram_buckets: tuple[float, ...] = DEFAULT_BUCKETS
    size_buckets: tuple[float, ...] = DEFAULT_SIZE_BUCKETS  # bytes: the body size histograms
    exemplars: bool = True
    auth: Secret | None = None  # bearer token for /metrics (health probes stay open)
    # Markdown runbooks served at /runbooks/<AlertName>; default: the repository's runbooks/
    # (checkout, editable install) or the copies packaged with apiusage.
    runbooks_dir: str | None = None
    # Past it, the connection waiting longest for its headers is closed.
    max_connections: int = bounded(64, above=0)

    def _validate(self, path: str, problems: Problems) -> None:
        _check_endpoint(self.endpoint, f"{path}.endpoint", problems)
        if self.runbooks_dir is not None and not os.path.isdir(self.runbooks_dir):
            problems.add(f"{path}.runbooks_dir", f"is not a folder: {self.runbooks_dir}")
        _check_buckets(self.histogram_buckets, f"{path}.histogram_buckets", problems)
        _check_buckets(self.size_buckets, f"{path}.size_buckets", problems)


@dataclass(frozen=True)
class OtlpForwarder:
    """Forward every accepted trace request to a trace backend (Jaeger, Tempo) over OTLP/HTTP."""

    endpoint: str = ""
    timeout: Duration = bounded(Duration(10), above=0)
    max_queue_requests: int = bounded(1000, above=0)
    # Bodies queued or in flight; past it: dropped. A ByteSize over 2 GiB must say so here.
    max_queue_bytes: ByteSize = bounded(ByteSize(64 * MiB), above=0)
    headers: Mapping[str, str] = field(default_factory=dict)
    # Metrics and logs left out are answered and dropped: a trace-only backend answers them 404.
    signals: tuple[str, ...] = ("traces", "metrics", "logs")

    def _validate(self, path: str, problems: Problems) -> None:
        if not self.signals:
            problems.add(
                f"{path}.signals", "needs at least one of traces, metrics, logs (or remove exporters.otlp)"
            )
        for signal in self.signals:
            if signal not in ("traces", "metrics", "logs"):
                problems.add(f"{path}.signals", f"{signal!r} is not a signal: use traces, metrics or logs")
        if not self.endpoint.startswith(("http://", "https://")):
            problems.add(
                f"{path}.endpoint",
                "must be an http:// or https:// URL of an OTLP/HTTP "
                f"receiver, such as http://jaeger:4318 (got {self.endpoint!r})",
            )
        # http.client refuses these at every request (a traceback a body); a CR or LF would
        # otherwise be a header injection.
        for name, value in self.headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
                problems.add(
                    f"{path}.headers",
                    f"{name!r} is not an HTTP header name (letters, digits and !#$%&'*+-.^_`|~)",
                )
            elif not isinstance(value, str) or _BAD_HEADER_VALUE.search(value):
                problems.add(
                    f"{path}.headers.{name}", "must be text without control characters (CR, LF, NUL...)"
                )


@dataclass(frozen=True)
class Exporters:
    prometheus: PrometheusExporter = field(default_factory=PrometheusExporter)
    otlp: OtlpForwarder | None = None


@dataclass(frozen=True)
class SqliteState:
    path: str = "apiusage-state.db"


@dataclass(frozen=True)
class PostgresState:
    dsn: str = ""

    def _validate(self, path: str, problems: Problems) -> None:
        if not self.dsn:
            problems.add(f"{path}.dsn", "is required, e.g. postgresql://apiusage@db/apiusage")


@dataclass(frozen=True)
class StateConfig:
    """Where consumer state lives, and how often it is written and read back."""

    enabled: bool = True
    sqlite: SqliteState | None = None
    postgres: PostgresState | None = None
    flush_interval: Duration = bounded(Duration(5), min=0.1)
    refresh_interval: Duration = bounded(Duration(15), min=0.1)
    # Up to 100 years: the oldest day kept is computed in milliseconds, in a 64-bit column.
    retention_days: int = bounded(
        400, min=35, max=36_500, show_value=True, min_why=": churn risk looks back 5 weeks"
    )
    # Rows not yet written (store slow or down): at either bound the receivers refuse (503).
    max_pending_rows: int = bounded(1_000_000, above=0)
    max_pending_bytes: ByteSize = bounded(ByteSize(256 * MiB), min=MiB, max=1 << 40)
    # api_parameter_consumers: one row per consumer, endpoint and parameter name (docs/state.md);
    # false keeps only the per-endpoint names (api_unused_parameters) for the largest stores.
    parameter_consumers: bool = True
    # The experiment checks (experiments/checks.py) run at a refresh at most this often: about
    # 1 s per running experiment of 100,000 consumers, too much for every 15 s refresh.
    experiment_checks_interval: Duration = bounded(Duration(300), min=0.1)

    def _validate(self, path: str, problems: Problems) -> None:
        if self.sqlite is not None and self.postgres is not None:
            problems.add(path, "choose one of sqlite or postgres, not both")


@dataclass(frozen=True)
class AdminConfig:
    """The authenticated JSON endpoint listing consumer ids; off without a token."""

    endpoint: str = "localhost:9465"
    token: str | None = None
    token_file: str | None = None
    audit_log: str = "apiusage-audit.log"
    # Past it, the connection waiting longest for its headers is closed.
    max_connections: int = bounded(16, above=0)

    def _validate(self, path: str, problems: Problems) -> None:
        _check_endpoint(self.endpoint, f"{path}.endpoint", problems)
        if self.token is not None and len(self.token) < 16:
            problems.add(f"{path}.token", "must be at least 16 characters")
        if self.token and self.token_file:
            problems.add(path, "choose one of token or token_file, not both")

    @property
    def enabled(self) -> bool:
        return bool(self.token or self.token_file)


@dataclass(frozen=True)
class Config:
    receivers: Receivers = field(default_factory=Receivers)
    processors: Processors = field(default_factory=Processors)
    exporters: Exporters = field(default_factory=Exporters)
    state: StateConfig = field(default_factory=StateConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    catalog: str | None = None
    experiments: str | None = None  # experiments.yaml (apiusage.conventions.experiments)


_ENV = re.compile(r"\$\{(?:env:)?([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _substitute(node: Any, path: str, problems: Problems) -> Any:
    """Expand `${env:VAR}` (and `${env:VAR:-default}`) in string values, as the Collector does."""
    if isinstance(node, dict):
        return {k: _substitute(v, f"{path}.{k}" if path else str(k), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, f"{path}[{i}]", problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    limit = CONFIG_YAML_LIMITS.max_scalar_chars
    size = len(node)  # the expanded length so far: each reference is replaced by its value

    def expand(m: re.Match[str]) -> str:
        nonlocal size
        value = os.environ.get(m.group(1)) or m.group(2)  # `:-` also covers set-but-empty
        if value is None and m.group(1) in os.environ:
            value = ""
        if value is None:
            problems.add(path, f"environment variable {m.group(1)} is not set")
            return ""
        # Counted before it is built: 100,000 references to a 10 MB variable in a 1 MiB file
        # would otherwise make a terabyte of one string.
        size += len(value) - len(m.group(0))
        return value if size <= limit else ""

    whole = _ENV.fullmatch(node)
    expanded = _ENV.sub(expand, node)
    if size > limit:
        problems.add(path, f"expands to more than {limit} characters (${{env:...}} included)")
        return ""
    if whole:
        # A value that is only a variable takes the variable's YAML type (a port stays an int).
        try:
            return safe_load(expanded, CONFIG_YAML_LIMITS) if expanded else expanded
        except YamlError:
            return expanded
    return expanded


def _collector_protocols(data: Any) -> None:
    """Mirror the Collector: a listed protocol with no value is enabled with defaults,
    and once `protocols` is given, an unlisted protocol is off."""
    try:
        protocols = data["receivers"]["otlp"]["protocols"]
    except (KeyError, TypeError):
        return
    if not isinstance(protocols, dict):
        return
    for name in ("grpc", "http"):
        if name not in protocols:
            protocols[name] = None
        elif protocols[name] is None:
            protocols[name] = {}


def parse_config(data: Any, source: str = "(inline)") -> Config:
    """Build a validated Config from an already-parsed YAML tree."""
    problems = Problems()
    data = _substitute(data, "", problems)
    _collector_protocols(data)
    config = load_dataclass(Config, data, "", problems)
    if problems:
        body = "\n".join(f"  {line}" for line in problems.lines)
        raise ConfigError(f"{source} is invalid:\n{body}")
    return config


def _read_config_text(p: Path) -> str:
    """The file's text, refusing (before reading it) anything larger than MAX_CONFIG_BYTES."""
    try:
        with p.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            # A pipe or device reports no size: read one byte past the limit to find out.
            raw = b"" if size > MAX_CONFIG_BYTES else f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from None
    if size > MAX_CONFIG_BYTES or len(raw) > MAX_CONFIG_BYTES:
        got = f"{size} bytes" if size > MAX_CONFIG_BYTES else "more than that"
        raise ConfigError(
            f"{p} is not accepted: a config file is at most {MAX_CONFIG_BYTES} bytes "
            f"(1 MiB); this one has {got}"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p} is not UTF-8 text: {exc.reason} at byte {exc.start}") from None


def load_experiments_file(path: str | None, max_label_length: int | None = None) -> Experiments | None:
    """The experiments file named by the `experiments` key, validated; or None without the key.

    With `max_label_length` (processors.limits), a service, experiment or variant name that could
    never equal a label value the processor derives (longer, or not printable) is refused: its
    experiment would silently match no request."""
    if path is None:
        return None
    from apiusage.conventions.experiments import ExperimentsError, load_experiments

    try:
        experiments = load_experiments(path)
    except ExperimentsError as exc:
        raise ConfigError(f"experiments: {exc}") from None
    if max_label_length is not None:
        for e in experiments:
            named = [("service", e.service), ("", e.name)] + [("variants", v) for v in e.variants]
            for key, value in named:
                if len(value) > max_label_length or not value.isprintable():
                    where = f"experiments.{e.name[:40]}" + (f".{key}" if key else "")
                    raise ConfigError(
                        f"experiments: {path}: {where}: {value[:40]!r}{'…' if len(value) > 40 else ''} "
                        f"can never match a label value (at most processors.limits.max_label_length "
                        f"= {max_label_length} printable characters)"
                    )
    return experiments


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Load and validate the config file, or the embedded defaults when `path` is None."""
    if path is None:
        return parse_config({}, "(embedded defaults)")
    p = Path(path)
    text = _read_config_text(p)
    try:
        data = safe_load(text, CONFIG_YAML_LIMITS)
    except YamlError as exc:
        verdict = "is not accepted" if exc.refused else "is not valid YAML"
        raise ConfigError(f"{p} {verdict}{exc.where}: {exc.problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{p} is invalid:\n  (top level): must be a mapping of sections "
            "(receivers, processors, exporters, state, admin, catalog)"
        )
    return parse_config(data or {}, str(p))
