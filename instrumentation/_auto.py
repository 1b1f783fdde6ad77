"""Zero-code entry points for ``opentelemetry-instrument``.

* ``opentelemetry_instrumentor`` → :class:`ApiUsageInstrumentor`: loaded by *any*
  distro, so the enrichment works with ``opentelemetry-distro`` too. It reads the
  ``APIUSAGE_*`` variables, adds the redacting span processor and makes every FastAPI
  app carry the enrichment middleware.
* ``opentelemetry_distro`` → :class:`ApiUsageDistro`: defaults suited to the apiusage
  processor (traces over OTLP; no metrics or logs, which it does not receive).
* ``opentelemetry_configurator`` → :class:`ApiUsageConfigurator`: sets up the SDK
  from ``OTEL_*`` variables (there is none without ``opentelemetry-distro``), with the
  redacting span processor first in line.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Collection
from typing import Any

from opentelemetry import trace

# mypy 2.4 loses both names in the import cycle between these two modules.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from . import _redact
from ._config import ConfigurationError, Settings

_logger = logging.getLogger("apiusage.instrumentation")

#: Exit status when the configuration is refused (EX_CONFIG from sysexits.h).
EXIT_CONFIG = 78


class ApiUsageInstrumentor(BaseInstrumentor):
    """Enriches every FastAPI app's server spans, configured by ``APIUSAGE_*`` variables.

    Under ``opentelemetry-instrument`` a refused configuration (see
    :class:`ConfigurationError`) stops the process with a message on stderr and exit
    status 78, so a service never runs exporting raw or unpseudonymized ids. Pass
    ``on_error="raise"`` to get the exception instead.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ("fastapi >= 0.100",)

    def _instrument(self, **kwargs: Any) -> None:
        on_error = kwargs.get("on_error", "exit")
        try:
            self._install(kwargs.get("environ"))
        except ConfigurationError as exc:
            if on_error == "raise":
                raise
            _refuse_to_start(exc)

    def _install(self, environ: Any) -> None:
        from ._builder import build_enricher
        from ._middleware import patch_fastapi

        enricher = build_enricher(Settings.from_env(environ))
        provider = trace.get_tracer_provider()
        if not isinstance(provider, trace.ProxyTracerProvider):
            _redact.install(provider, enricher.sensitive_headers)
            resource = getattr(provider, "resource", None)
            enricher.set_service_name(getattr(resource, "attributes", {}).get("service.name"))
        # Otherwise the middleware installs redaction on the first request, once the app
        # has set a provider of its own.
        patch_fastapi(enricher)

    def _uninstrument(self, **kwargs: Any) -> None:
        from ._middleware import unpatch_fastapi

        unpatch_fastapi()


def _refuse_to_start(exc: ConfigurationError) -> None:
    message = str(exc)
    try:
        # With no logging configured the logger would print it too; say it once.
        if _logger.hasHandlers():
            _logger.critical(message)
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    finally:
        # Not SystemExit: the auto-instrumentation loader runs inside sitecustomize,
        # where an exception turns into a "Fatal Python error" wall of traceback that
        # buries the message. Nothing of the host has started yet, so nothing is lost.
        os._exit(EXIT_CONFIG)


class ApiUsageDistro(BaseDistro):
    """Defaults for exporting to the apiusage processor; explicit ``OTEL_*`` values win."""

    def _configure(self, **kwargs: Any) -> None:
        os.environ.setdefault("OTEL_TRACES_EXPORTER", "otlp")
        os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
        os.environ.setdefault("OTEL_LOGS_EXPORTER", "none")
        os.environ.setdefault("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")


class ApiUsageConfigurator(_OTelSDKConfigurator):
    """The SDK's standard set-up, with the redacting span processor ahead of the exporters."""

    def _configure(self, **kwargs: Any) -> None:
        processors = list(kwargs.pop("span_processors", None) or [])
        processors.insert(0, _redact.RedactingSpanProcessor())
        super()._configure(span_processors=processors, **kwargs)
        provider = trace.get_tracer_provider()
        if hasattr(provider, "add_span_processor"):
            provider._apiusage_redactor = processors[0]  # type: ignore[attr-defined]
