#!/usr/bin/env bash
# The whole test suite, on a fresh machine with only Python: installs everything, makes a
# Docker engine reachable (installing Debian's docker.io when root and none answers) and
# Debian's chromium (for the viewer's browser test), builds
# the sandbox image only if it is missing or stale (`toolgym build-image` compares a content
# hash and returns at once when the image is current), installs PostgreSQL's server binaries
# when missing (for the PostgreSQL store's tests), lints, and runs pytest (Docker tests
# included), listing the 15 slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

if ! bash scripts/ensure-docker.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI=true needs a Docker engine; none could be started" >&2
    exit 1
  fi
  echo "test.sh: no Docker engine; Docker tests will be skipped (they never are under CI=true)" >&2
else
  .venv/bin/toolgym build-image
fi

# Debian's chromium, for the viewer's browser test (tests/server/test_ui.py); Playwright drives it.
if ! bash scripts/ensure-chromium.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI=true needs chromium for the viewer test; it could not be installed" >&2
    exit 1
  fi
  echo "test.sh: no chromium; the viewer's browser test will be skipped (never under CI=true)" >&2
fi

# The PostgreSQL store's tests start a throwaway cluster from Debian's binaries (tests/server/pg_kit.py).
if ! bash scripts/ensure-postgres.sh; then
  if [ "${CI:-}" = "true" ]; then
    echo "test.sh: CI=true needs PostgreSQL's server binaries; none could be installed" >&2
    exit 1
  fi
  echo "test.sh: no PostgreSQL; its tests will be skipped (they never are under CI=true)" >&2
fi

.venv/bin/ruff check .
bash scripts/typecheck.sh

# Without arguments, two timed runs: the core suite, then the trainer and cluster suites (each
# trainer in its own cached venv, a two-node Ray cluster). With arguments, one run of pytest with
# them. pytest's exit 5 (nothing collected) is a failure either way.
suite() {
  local name=$1 start rc
  shift
  start=$(date +%s)
  set +e
  .venv/bin/python -m pytest -q -ra -p no:cacheprovider --durations=15 "$@"
  rc=$?
  set -e
  echo "test.sh: $name: exit $rc in $(( $(date +%s) - start )) s" >&2
  if [ "$rc" -eq 5 ]; then
    echo "test.sh: pytest collected no tests for $name; that is a failure" >&2
    rc=1
  fi
  return "$rc"
}

if [ "$#" -gt 0 ]; then
  suite "the selected tests" "$@"
  exit $?
fi
status=0
suite "core suite" -m "not soak and not chaos and not trainer and not cluster" || status=$?
suite "trainer and cluster suites" -m "(trainer or cluster) and not soak and not chaos" || status=$?
exit "$status"
