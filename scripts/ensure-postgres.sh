#!/usr/bin/env bash
# Make sure PostgreSQL's server programs (initdb, pg_ctl, postgres) are installed, from Debian's packages.
#
#     scripts/ensure-postgres.sh
#
# The tests and bench/bench_store.py start throwaway servers of their own (tests/pg_server.py) and never
# use a system cluster. So this script only installs the package, and makes sure that a cluster the
# package's postinst may create is neither left running nor started at boot.
#
# Idempotent and quick: when /usr/lib/postgresql/*/bin/initdb exists it prints one line and exits.
# Otherwise it needs root (it re-runs itself under sudo when sudo is there). `apt-get update` runs only
# when the install fails without it (empty or stale package lists).
set -euo pipefail

installed() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

if installed; then
  echo "ensure-postgres: $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1) is installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -- "$0" "$@"
  fi
  echo "ensure-postgres: PostgreSQL is not installed, and installing it needs root: run this script as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-postgres: no apt-get on this machine: install PostgreSQL's server programs yourself" \
       "and set WIPPY_PG_BIN to the directory holding initdb and pg_ctl" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# Keep the postinst from starting a server: invoke-rc.d asks policy-rc.d first, and 101 means "not now".
# Our own policy file is removed again on exit; an existing one is left alone.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 755 "$policy"
  made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT

apt_install() { apt-get install -y --no-install-recommends postgresql; }
if ! apt_install; then
  echo "ensure-postgres: the install failed; refreshing the package lists and trying once more" >&2
  apt-get update
  apt_install
fi

# A cluster the postinst created ("main") must not run, nor start at boot: stop it and set it to manual.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r version cluster _port status _rest; do
    case "$status" in
      online*) pg_ctlcluster "$version" "$cluster" stop || true ;;
    esac
    if [ -f "/etc/postgresql/$version/$cluster/start.conf" ]; then
      echo manual >"/etc/postgresql/$version/$cluster/start.conf"
    fi
  done
fi
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now postgresql >/dev/null 2>&1 || true
fi

if ! installed; then
  echo "ensure-postgres: the postgresql package installed, but no /usr/lib/postgresql/*/bin/initdb appeared" >&2
  exit 1
fi
echo "ensure-postgres: installed $(ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -n 1)"
