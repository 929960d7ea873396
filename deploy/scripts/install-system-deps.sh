#!/bin/sh
# Install, with apt, the system packages that the tests (and `make demo`) run for real, when missing:
# PostgreSQL, Redis, nginx with the RTMP and stream modules, ffmpeg, Chromium, openssl (the agent's TLS
# test makes a certificate with it), python3-venv, and a C compiler with Python's headers (the compiled
# stat reader, deploy/scripts/build_stat_reader.py).
set -eu
need=""
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
for pkg in postgresql redis-server nginx libnginx-mod-rtmp libnginx-mod-stream ffmpeg chromium openssl; do
    have "$pkg" || need="$need $pkg"
done
# Debian's python3 needs python3-venv for `python3 -m venv`; other Pythons bring ensurepip themselves.
python3 -c "import ensurepip" 2>/dev/null || need="$need python3-venv"
command -v cc >/dev/null 2>&1 || need="$need gcc libc6-dev"
python3 -c "import os, sysconfig, sys; sys.exit(not os.path.exists(sysconfig.get_paths()['include'] + '/Python.h'))" \
    || need="$need python3-dev"
if [ -z "$need" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "Missing system packages:$need" >&2
    echo "Install them with: sudo apt-get install -y --no-install-recommends$need" >&2
    exit 1
fi
echo "Installing system packages:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $need
