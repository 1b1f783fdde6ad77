"""A demo API and the traffic that exercises it, for the full stack and `apiusage demo`.

* ``apiusage.demo.app``: a small FastAPI service (``orders-api``) with /v1 and
  /v2 routes, a deprecated v1 endpoint whose v2 replacement is named in the catalog,
  features tagged, and plan tiers resolved from the API key;
* ``apiusage.demo.traffic``: a bounded generator of realistic traffic from a
  population of consumers (plan tiers, SDK versions, onboarding failures, migrations,
  error bursts), only towards loopback or compose service names;
* ``catalog.yaml`` and ``plans.yaml``: the endpoint catalog (read by the service's
  instrumentation and by the processor) and the API keys with their plan tiers (read by
  the service, its instrumentation and the traffic generator);
* ``experiments.yaml``: the protocol of the service's feature-flag experiment
  (``new-checkout`` on ``POST /v2/orders``), read by the processor and
  ``apiusage experiments report``.

Run it under zero-code instrumentation::

    export APIUSAGE_CATALOG=.../apiusage/demo/catalog.yaml   # = CATALOG
    export APIUSAGE_PLAN_TIERS=.../apiusage/demo/plans.yaml  # = PLANS
    APIUSAGE_PSEUDONYM_KEY=... OTEL_SERVICE_NAME=orders-api \\
    opentelemetry-instrument uvicorn apiusage.demo.app:app

The service needs FastAPI and the OpenFeature SDK with its OpenTelemetry hook; the generator
needs httpx.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

# Real files (the service and its children read them by path): a wheel installs unzipped.
HERE = Path(str(importlib.resources.files(__name__)))
CATALOG = HERE / "catalog.yaml"
PLANS = HERE / "plans.yaml"
EXPERIMENTS = HERE / "experiments.yaml"
SERVICE_NAME = "orders-api"
#: The demo's pseudonymization key (not a secret): the service's instrumentation, the flag
#: assignment and the backfilled history all derive the same consumer ids from it.
PSEUDONYM_KEY = "apiusage-demo-pseudonym-key"
#: The feature flag of the demo's experiment, and its variants (control first).
FLAG = "new-checkout"
VARIANTS = ("control", "treatment")
#: The releases of the demo service: the one running at start (and in the history), then the one
#: `apiusage demo` rolls out after --release-after seconds.
RELEASES = ("1.4.2", "1.5.0")
#: The trusted header with the client's country that the demo's traffic sets, as a CDN would
#: (Cloudflare's); the demo service reads it (APIUSAGE_REGION_HEADERS).
REGION_HEADER = "CF-IPCountry"
#: Where the demo service runs: its ``cloud.region`` resource attribute, live and in the history.
SERVER_REGION = "eu-west-1"
#: What the demo service's environment adds for the API design insights, wherever it runs
#: (`apiusage demo`, the live dashboard tests): feedback log records over OTLP, the server's
#: region, and the CDN header the traffic sets.
DESIGN_ENVIRONMENT = {
    "OTEL_LOGS_EXPORTER": "otlp",
    "OTEL_RESOURCE_ATTRIBUTES": f"cloud.region={SERVER_REGION}",
    "APIUSAGE_REGION_HEADERS": REGION_HEADER,
}


def release_environment(version: str) -> dict[str, str]:
    """DESIGN_ENVIRONMENT with the release as the resource's ``service.version``."""
    attributes = f"{DESIGN_ENVIRONMENT['OTEL_RESOURCE_ATTRIBUTES']},service.version={version}"
    return {**DESIGN_ENVIRONMENT, "OTEL_RESOURCE_ATTRIBUTES": attributes}


__all__ = [
    "CATALOG",
    "DESIGN_ENVIRONMENT",
    "EXPERIMENTS",
    "FLAG",
    "PLANS",
    "PSEUDONYM_KEY",
    "REGION_HEADER",
    "RELEASES",
    "SERVER_REGION",
    "SERVICE_NAME",
    "VARIANTS",
    "release_environment",
]
