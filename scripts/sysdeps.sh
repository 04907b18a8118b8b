#!/usr/bin/env bash
# Install the Debian packages the tests and the demo run for real, only those missing:
#   redis-server  (fleet budget store), chromium (report rendering), prometheus + promtool
#   (dashboard queries and alert rules). Uses sudo when not root. Idempotent and quiet when
#   everything is present, so `make test` pays nothing on the second run.
set -euo pipefail

declare -A want=([redis-server]=redis-server [chromium]=chromium [prometheus]=prometheus
                 [promtool]=prometheus)
need=()
for cmd in "${!want[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || need+=("${want[$cmd]}")
done
[ ${#need[@]} -eq 0 ] && exit 0
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo=(sudo -n)
    else
        echo "sysdeps: need ${need[*]} and this user cannot install them (no root, no sudo):" >&2
        echo "  apt-get install -y --no-install-recommends ${need[*]}" >&2
        exit 1
    fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "sysdeps: need ${need[*]}; this is not a Debian-like system, install them yourself" >&2
    exit 1
fi
echo "sysdeps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts services it installs; the tests start their own on free ports.
for svc in redis-server prometheus; do
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        "${sudo[@]}" systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
