#!/usr/bin/env bash
# Set up (idempotent), then ruff, mypy and every test: unit, property, and the integration
# tests that start real Mosquitto, influxd, Flower and Chromium. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh | tail -n 1)
"$PY" -m ruff check . >&2
"$PY" -m mypy >&2
exec "$PY" -m pytest "$@"
