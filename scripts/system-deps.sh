#!/usr/bin/env bash
# Installs the Debian packages the tests (or, with `bench`, the benchmarks) need,
# only when they are missing, so a clean CI machine gets them and a prepared one
# pays nothing.
set -euo pipefail
want=()
need() { command -v "$1" >/dev/null 2>&1 || want+=("$2"); }
# PostgreSQL server binaries (initdb, pg_ctl) for the shared-state tests.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || want+=(postgresql)
# Rules, alerts and the end-to-end alert path: promtool, prometheus, amtool, alertmanager.
need promtool prometheus
need prometheus-alertmanager prometheus-alertmanager
# docker-compose.yml is validated with `docker-compose config` (no engine runs here).
need docker-compose docker-compose
# The HTML usage report is rendered in headless Chromium.
need chromium chromium
# The C scanner is built, and tested under AddressSanitizer/UBSan (gcc brings libasan/libubsan).
need gcc gcc
# A really read-only state file for the start-up test: chattr +i (root ignores file modes).
need chattr e2fsprogs
# tests/node/: a real Express service under the OpenTelemetry Node SDK (scripts/node-deps.sh).
need node nodejs
need npm npm
if [ "${1:-}" = bench ]; then
    need h2load nghttp2-client
fi
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "missing Debian packages: ${want[*]} (run: sudo apt-get install ${want[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
