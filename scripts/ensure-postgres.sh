#!/usr/bin/env bash
# Make PostgreSQL's server binaries available for the tests of the PostgreSQL store.
#
# The tests start a throwaway cluster of their own (tests/server/pg_kit.py: initdb + pg_ctl from
# /usr/lib/postgresql/<version>/bin, in a temp dir, on a loopback port); they need the binaries
# only, not a running service. So:
# 1. If /usr/lib/postgresql/*/bin/initdb exists, do nothing.
# 2. Else, when root: install Debian's `postgresql` package (no service is started in a container
#    without an init system; the tests never use one).
# Exits non-zero with a clear message when the binaries cannot be had.
set -euo pipefail
. "$(dirname "$0")/_apt.sh"

have_server() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

if have_server; then
  echo "ensure-postgres: server binaries present"
  exit 0
fi
apt_install ensure-postgres postgresql
if ! have_server; then
  echo "ensure-postgres: postgresql was installed but /usr/lib/postgresql/*/bin/initdb is missing" >&2
  exit 1
fi
echo "ensure-postgres: installed"
