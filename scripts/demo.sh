#!/usr/bin/env bash
# The main job on a fresh machine with only Python: install ToolGym, make a Docker engine
# reachable when possible (as root: Debian's docker.io), then start a server and play real
# episodes of every env family, printing their rewards. Without Docker it falls back on the
# process backend and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[server]'
bash scripts/ensure-docker.sh || echo "demo.sh: no Docker engine; the demo uses the process backend"
exec .venv/bin/toolgym demo "$@"
