# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)

.PHONY: demo test test-fast check lint typecheck install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -e '.[processor,instrumentation,postgres,experiments,demo,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# The whole loop on this machine until Ctrl-C (docs/demo.md); options go in DEMO_ARGS,
# e.g. make demo DEMO_ARGS="--prometheus-port 19090 --dir demo-data".
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/apiusage demo $(DEMO_ARGS)

test: $(STAMP)
	bash scripts/system-deps.sh
	bash scripts/node-deps.sh
	$(PY) -m pytest

# The inner loop: no slow or live tests, few hypothesis examples, under a minute (docs/checks.md).
test-fast: $(STAMP)
	HYPOTHESIS_PROFILE=dev $(PY) -m pytest -q -m "not slow and not live"

# Everything that holds without running the product: lint, format, types, generated files.
check: lint typecheck
	$(VENV)/bin/apiusage rules --check
	$(PY) grafana/build.py --check

# ruff over every Python file (code folders, tests, bench, grafana, scripts, deploy).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(PY) scripts/typecheck.py

bench: $(STAMP)
	bash scripts/system-deps.sh bench
	$(PY) bench/processor_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info

# Rebuild grafana/dashboards/*.json from grafana/build.py (docs/dashboards.md).
.PHONY: grafana
grafana: $(STAMP)
	$(PY) grafana/build.py
