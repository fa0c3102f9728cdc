#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (git, OpenSSH's sshd and client,
# namespaces tools, a venv with the package), then runs lint and the tests.
# Extra arguments go to pytest (for example: bash tests/run.sh -k batching).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v git >/dev/null 2>&1 || missing+=(git)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
# desktop notifications: a session bus, a virtual display, a notification server, its clients
command -v dbus-daemon >/dev/null 2>&1 || missing+=(dbus)
command -v Xvfb >/dev/null 2>&1 || missing+=(xvfb)
command -v dunst >/dev/null 2>&1 || missing+=(dunst)
command -v gdbus >/dev/null 2>&1 || missing+=(libglib2.0-bin)
command -v notify-send >/dev/null 2>&1 || missing+=(libnotify-bin)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" python3 >/dev/null
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q '.[test]'
.venv/bin/ruff check assistant tests bench
.venv/bin/python -m pytest "$@"
