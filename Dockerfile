# One image for the processor (`apiusage serve`), the demo service (zero-code
# instrumentation: `opentelemetry-instrument uvicorn apiusage.demo.app:app`),
# the demo traffic generator and the alert log of docker-compose.yml.
#
#     docker build -t apiusage:0.1.0 .
#
# Base image and every Python package are pinned (deploy/requirements.txt): the processor,
# instrumentation, demo (FastAPI, OpenFeature) and experiments (scipy, statsmodels: the
# processor's experiment checks, `apiusage experiments report`) extras.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# A compiler for the optional C scanner of OTLP payloads (processor/receivers/_cscan.c).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY deploy/requirements.txt /src/deploy/requirements.txt
RUN pip wheel --no-cache-dir --wheel-dir /wheels -r deploy/requirements.txt
COPY pyproject.toml README.md /src/
# Every folder pyproject.toml maps to a package (tests/packaging/test_wheel.py builds the
# wheel from exactly these and runs it).
COPY cli /src/cli
COPY conventions /src/conventions
COPY processor /src/processor
COPY instrumentation /src/instrumentation
COPY demo /src/demo
COPY report /src/report
COPY experiments /src/experiments
COPY rules /src/rules
COPY runbooks /src/runbooks
COPY alert_rules /src/alert_rules
COPY prometheus /src/prometheus
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && cp deploy/requirements.txt /wheels/requirements.txt

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-index --find-links /tmp/wheels -r /tmp/wheels/requirements.txt \
    && pip install --no-cache-dir --no-index --find-links /tmp/wheels --no-deps apiusage \
    && rm -rf /tmp/wheels \
    && useradd --system --uid 10001 --home-dir /var/lib/apiusage apiusage \
    && mkdir -p /var/lib/apiusage /etc/apiusage \
    && chown apiusage /var/lib/apiusage
USER apiusage
WORKDIR /var/lib/apiusage
VOLUME ["/var/lib/apiusage"]
# OTLP gRPC, OTLP HTTP, Prometheus metrics (/metrics, /readyz, /runbooks), demo service.
EXPOSE 4317 4318 9464 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/readyz', timeout=2)"]
CMD ["apiusage", "serve", "--config", "/etc/apiusage/processor.yaml"]
