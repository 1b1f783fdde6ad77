#!/usr/bin/env bash
# Installs tests/node's npm packages (the Node SDK and Express for tests/node/) from its lock
# file, only when the lock file changed since the last install. Node.js and npm come from
# scripts/system-deps.sh.
set -euo pipefail
cd "$(dirname "$0")/../tests/node"
stamp="node_modules/.installed-$(sha1sum package-lock.json | cut -c1-12)"
[ -e "$stamp" ] && exit 0
if ! command -v npm >/dev/null 2>&1; then
    echo "npm is missing (Debian package npm: run bash scripts/system-deps.sh)" >&2
    exit 1
fi
timeout 600 npm ci --no-audit --no-fund --loglevel=error
touch "$stamp"
