#!/usr/bin/env bash
# Make a Docker engine reachable for ToolGym's sandboxes and tests.
#
# 1. If `docker info` already answers, do nothing.
# 2. Else, when root: install Debian's docker.io (and debootstrap, for offline images) if missing,
#    then start dockerd in the background, logging to $TOOLGYM_DOCKERD_LOG.
# Exits non-zero with a clear message when no engine can be had.
set -euo pipefail
. "$(dirname "$0")/_apt.sh"
log=${TOOLGYM_DOCKERD_LOG:-/tmp/toolgym-dockerd.log}

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
  echo "ensure-docker: engine reachable"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "ensure-docker: no Docker engine reachable and not root; start one, or run as root" >&2
  exit 1
fi
need=()
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  apt_install ensure-docker "${need[@]}" iptables ca-certificates
fi
echo "ensure-docker: starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
echo $! > /tmp/toolgym-dockerd.pid
for _ in $(seq 1 60); do
  if engine_up; then echo "ensure-docker: engine up"; exit 0; fi
  sleep 1
done
echo "ensure-docker: dockerd did not come up in 60 s; last log lines:" >&2
tail -20 "$log" >&2
exit 1
