#!/usr/bin/env bash
# The slow suites: tests marked `slow` (image builds, the demo, scale runs) and the property
# tests marked `fuzz` (hypothesis on the parsers, schemathesis on the API) at their large budget
# (HYPOTHESIS_PROFILE=slow, see tests/conftest.py). The default run (scripts/test.sh) runs the
# same fuzz tests at a small budget. Also the soak (marker `soak`, tests/server/test_soak.py: 10,000
# steps from 64 clients against a real server; TOOLGYM_SOAK_STEPS=500 for a quick one), which the
# default run leaves out (pyproject.toml's addopts), and the chaos test that restarts the Docker engine
# under load (marker `chaos`, tests/server/test_chaos_engine.py: it stops the dockerd of
# /var/run/docker.pid and starts it again, so nothing else may use the engine meanwhile; the other
# fault tests, tests/server/test_chaos_faults.py, run in the default suite). Extra arguments go to
# pytest, e.g. `-m fuzz` for the fuzz tests alone. Expects the environment scripts/test.sh sets up
# (.venv, Docker engine, image).
set -euo pipefail
cd "$(dirname "$0")/.."
export HYPOTHESIS_PROFILE=slow
exec .venv/bin/python -m pytest -q -ra -p no:cacheprovider --durations=15 -m "slow or fuzz or soak or chaos" "$@"
