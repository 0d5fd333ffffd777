#!/usr/bin/env bash
# Idempotent set-up on Debian/Ubuntu: system services (Mosquitto, InfluxDB 1.x, Chromium for
# the dashboard test) and the Python environment. Safe to run again: it skips what is there.
#   FIBERWATCH_EXTRAS=dev   which extras to install (dev = everything; edge = gateway only)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${FIBERWATCH_EXTRAS:-dev}"

log() { printf 'setup: %s\n' "$*" >&2; }

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v influxd >/dev/null 2>&1 || need_apt+=(influxdb)
# the das feature kernel (edge_agent/_dasfeat.c) and tep-studio (the bench extra: public
# process-fault data) are C extensions: a compiler and the Python headers build them
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
"${PYTHON:-python3}" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need_apt+=(python3-dev)
if [ "$EXTRAS" = dev ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
  # a second MQTT broker implementation (MQTT 3.1.1 via JetStream) for the ingestion test
  command -v nats-server >/dev/null 2>&1 || need_apt+=(nats-server)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  log "installing Debian packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null
fi
# Debian starts the packaged services; ours run from temp configs on free ports instead.
for svc in mosquitto influxdb nats-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    log "note: system $svc service is running; fiberwatch does not use it"
  fi
done

# Python: use the active venv, or an interpreter pip may install into; else make .venv.
PY="${PYTHON:-python3}"
if [ -z "${VIRTUAL_ENV:-}" ] && "$PY" - <<'PYEOF'
import sys, sysconfig, pathlib
marker = pathlib.Path(sysconfig.get_path("stdlib")) / "EXTERNALLY-MANAGED"
sys.exit(0 if marker.exists() else 1)
PYEOF
then
  if [ ! -x .venv/bin/python ]; then
    log "system Python is externally managed: creating .venv"
    "$PY" -m venv .venv
  fi
  PY=.venv/bin/python
fi
"$PY" -m pip --version >/dev/null 2>&1 || { log "pip missing for $PY"; exit 1; }

pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
  | grep -v -e "^WARNING: Location" -e "Running pip as the 'root' user" >&2 || true; }

if [ "$EXTRAS" != edge ]; then
  # torch first and pinned: this exact CPU wheel lies on the build machines' disk; letting a
  # range resolve it would pull a multi-GB CUDA build.
  "$PY" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
    || pip_install "torch==2.13.0"
fi
pip_install -e ".[$EXTRAS]"
"$PY" -c "import edge_agent, fiberwatch" || { log "install failed"; exit 1; }
echo "$PY"
