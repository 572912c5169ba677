#!/bin/sh
# apt_install.sh PKG...: installs Debian packages (as root), waiting up to
# 10 minutes for another apt or dpkg to let go of its lock instead of
# failing at once. DPkg::Lock::Timeout covers the dpkg lock of `install`;
# `apt-get update` takes the package lists' lock, which that option does
# not cover, so update is retried while its error is the lock.
set -u
export DEBIAN_FRONTEND=noninteractive
waited=0
while ! out=$(apt-get update -qq 2>&1); do
  case "$out" in
    *"Could not get lock"*|*"Unable to lock"*)
      if [ "$waited" -ge 600 ]; then echo "$out" >&2; exit 1; fi
      [ "$waited" = 0 ] && echo "waiting for another apt to finish..." >&2
      sleep 5
      waited=$((waited + 5)) ;;
    *) echo "$out" >&2; exit 1 ;;
  esac
done
exec apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
