#!/usr/bin/env bash
# Set up (idempotent), then run the end-to-end demo. Extra arguments go to `fiberwatch demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh | tail -n 1)
exec "$PY" -m fiberwatch demo "$@"
