"""The one-line way in: no opentelemetry-instrument, instrument() sets up the SDK and OTLP exporter."""

from __future__ import annotations

from apiusage.instrumentation import instrument
from orders_app import build_app

app = build_app()
instrument(app)  # configured by OTEL_* and APIUSAGE_* variables
