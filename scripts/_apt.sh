# Sourced by the ensure-*.sh scripts: one way to install Debian packages for the test command.
#
# apt_install WHO PACKAGE...: as root, `apt-get update` then install PACKAGE... without
# recommends, non-interactively, waiting up to 5 minutes for another apt run's lock (test.sh
# may run beside another job that installs too). Not root: says what WHO needs and returns 1.
apt_install() {
  local who=$1
  shift
  if [ "$(id -u)" != 0 ]; then
    echo "$who: not root; install Debian's $* yourself" >&2
    return 1
  fi
  echo "$who: installing $* from Debian's archive"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}
