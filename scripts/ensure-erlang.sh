#!/usr/bin/env bash
# Make sure Erlang/OTP's `erl` and `erlc` are installed, from Debian's erlang-nox (no X11, no wx).
#
#     scripts/ensure-erlang.sh
#
# Only bench/bench_beam.py uses them (the BEAM side of its comparison); `make bench` calls this script,
# `make test` does not, and the benchmark itself skips BEAM with one line when `erl` is missing.
#
# Idempotent and quick: when `erl` and `erlc` are on PATH it prints one line and exits. Otherwise it
# needs root (it re-runs itself under sudo when sudo is there). `apt-get update` runs only when the
# install fails without it (empty or stale package lists).
set -euo pipefail

installed() { command -v erl >/dev/null 2>&1 && command -v erlc >/dev/null 2>&1; }

if installed; then
  echo "ensure-erlang: $(command -v erl) is installed"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo -- "$0" "$@"
  fi
  echo "ensure-erlang: Erlang is not installed, and installing it needs root: run this script as root" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure-erlang: no apt-get on this machine: install Erlang/OTP yourself so that erl and erlc" \
       "are on PATH" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y --no-install-recommends erlang-nox; }   # erlc is in erlang-base
if ! apt_install; then
  echo "ensure-erlang: the install failed; refreshing the package lists and trying once more" >&2
  apt-get update
  apt_install
fi

# erlang-base ships systemd units for epmd (the port mapper of distributed Erlang, port 4369). The
# benchmark's VMs are never distributed, so a socket-activated epmd this install enabled is turned off.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now epmd.socket epmd.service >/dev/null 2>&1 || true
fi

if ! installed; then
  echo "ensure-erlang: erlang-nox installed, but erl or erlc is not on PATH" >&2
  exit 1
fi
echo "ensure-erlang: installed $(command -v erl)"
