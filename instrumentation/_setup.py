"""``instrument(app)``: the one-line way in."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from apiusage.conventions.catalog import Catalog
from opentelemetry import trace

from . import _redact
from ._builder import ConsumerSpec, PlanTierSpec, build_enricher
from ._config import Settings
from ._enrich import Enricher
from ._middleware import ApiUsageMiddleware, has_middleware

_logger = logging.getLogger("apiusage.instrumentation")


def instrument(
    app: Any,
    *,
    pseudonym_key: str | bytes | None = None,
    consumer: ConsumerSpec = None,
    plan_tier: PlanTierSpec = None,
    default_plan_tier: str | None = None,
    client_name_header: str | None = None,
    client_version_header: str | None = None,
    api_version: str | None = None,
    api_version_header: str | None = None,
    feature_sources: tuple[str, ...] | None = None,
    feature_openapi_key: str | None = None,
    catalog: str | Path | Catalog | None = None,
    service_name: str | None = None,
    deprecation_headers: bool | None = None,
    parameters: bool | None = None,
    body_field_depth: int | None = None,
    max_parameter_names: int | None = None,
    max_body_bytes: int | None = None,
    body_sizes: bool | None = None,
    validation_errors: bool | None = None,
    max_validation_errors: int | None = None,
    region_headers: str | tuple[str, ...] | list[str] | None = None,
    tracer_provider: Any = None,
    exclude_spans: list[Literal["receive", "send"]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Enricher:
    """Instrument a FastAPI app: OpenTelemetry server spans carrying API usage attributes.

    Every argument left as None falls back to its ``APIUSAGE_*`` environment variable,
    then to the documented default. Uses ``tracer_provider``, else the global provider
    the app configured; only when there is none does it create one exporting over OTLP
    (configured by the usual ``OTEL_*`` variables). Raises ConfigurationError, before
    anything is installed, on configuration it will not run with.
    """
    env = os.environ if environ is None else environ
    settings = Settings.from_env(env)
    if pseudonym_key is not None:
        from ._config import parse_key

        settings = settings.with_overrides(
            pseudonym_key=parse_key(pseudonym_key, "instrument(pseudonym_key=...)"),
            key_origin="instrument(pseudonym_key=...)",
        )
    settings = settings.with_overrides(
        default_plan_tier=default_plan_tier,
        client_name_header=client_name_header,
        client_version_header=client_version_header,
        api_version=api_version,
        api_version_header=api_version_header,
        feature_sources=feature_sources,
        feature_openapi_key=feature_openapi_key,
        service_name=service_name,
        deprecation_headers=deprecation_headers,
        parameters=parameters,
        body_field_depth=body_field_depth,
        max_parameter_names=max_parameter_names,
        max_body_bytes=max_body_bytes,
        body_sizes=body_sizes,
        validation_errors=validation_errors,
        max_validation_errors=max_validation_errors,
        region_headers=region_headers,
    )
    enricher = build_enricher(settings, consumer=consumer, plan_tier=plan_tier, catalog=catalog)

    provider = tracer_provider if tracer_provider is not None else _global_provider(env, service_name)
    scrubbing = provider is not None and _redact.install(provider, enricher.sensitive_headers)
    if provider is not None and not scrubbing:
        _logger.warning(
            "apiusage: tracer provider %s is not the OpenTelemetry SDK's; span attributes "
            "cannot be scrubbed of query strings and client addresses",
            type(provider).__name__,
        )
    resource = getattr(provider, "resource", None)
    enricher.set_service_name(service_name or getattr(resource, "attributes", {}).get("service.name"))

    if not getattr(app, "_is_instrumented_by_opentelemetry", False):
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, exclude_spans=exclude_spans)
    if not has_middleware(app):
        # add_middleware puts us inside OpenTelemetry's middleware, where the span is current.
        # An explicit provider other than the global one is the app's choice: don't
        # go looking for the global one per request.
        app.add_middleware(ApiUsageMiddleware, enricher=enricher, provider_ready=scrubbing)
    return enricher


def _global_provider(env: Mapping[str, str], service_name: str | None) -> Any:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, trace.ProxyTracerProvider):
        return provider  # the app (or opentelemetry-instrument) configured its own: reuse it
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {"service.name": service_name} if service_name else {}
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(env)))
    trace.set_tracer_provider(provider)
    return trace.get_tracer_provider()


def _otlp_exporter(env: Mapping[str, str]) -> Any:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
    ).strip()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    if protocol != "grpc":
        _logger.warning("apiusage: unsupported OTEL_EXPORTER_OTLP_PROTOCOL=%r; using grpc", protocol)
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

    return GrpcExporter()
