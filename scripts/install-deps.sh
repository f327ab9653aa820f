#!/usr/bin/env bash
# Installs the Debian packages that building, running and testing pushai
# need, skipping those already installed. Runs apt-get through sudo when not
# root. Usage: scripts/install-deps.sh [--test]   (--test adds the test tools)
set -euo pipefail

packages=(build-essential pkg-config libh2o-evloop-dev libssl-dev libjansson-dev libsqlite3-dev
          libsodium-dev libcurl4-openssl-dev libpq-dev python3 curl)
if [ "${1:-}" = "--test" ]; then
    packages+=(libcmocka-dev postgresql wrk nginx-light)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    sudo="sudo"
fi
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
