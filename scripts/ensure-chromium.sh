#!/usr/bin/env bash
# Make sure Debian's chromium is installed: the browser tests drive it through Playwright with
# executable_path=/usr/lib/chromium/chromium (Playwright never downloads a browser of its own here).
# Idempotent and quick when chromium is already there; `apt-get update` runs only when the package
# lists do not know chromium yet (a fresh machine), not on every call.
set -euo pipefail

CHROMIUM=/usr/lib/chromium/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive

# apt-cache prints "Candidate: (none)" or nothing at all when the lists are empty or stale.
if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then
    echo "ensure-chromium: apt-get update (the package lists do not offer chromium yet)"
    $SUDO apt-get update -qq
fi

echo "ensure-chromium: installing Debian's chromium (about 25 s)"
# chromium-sandbox (the only Recommends) is not needed: the tests run chromium with --no-sandbox.
if ! $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
    echo "ensure-chromium: install failed, refreshing the package lists once and retrying"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "ensure-chromium: chromium installed but $CHROMIUM is missing" >&2
    exit 1
fi
echo "ensure-chromium: $("$CHROMIUM" --version 2>/dev/null || echo chromium) at $CHROMIUM"
