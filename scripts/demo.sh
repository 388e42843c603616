#!/usr/bin/env bash
# The narrated demo: build d11, then `d11 demo` — bring up the whole story
# (netns/double11.toml: the phone, the mobile core, the carriers, the cloud
# gateway, the vSwitches, the load balancer and two controllers), place the
# order, trace it on every wire, tell chapter by chapter what actually
# happened, and take everything down again (also on error or Ctrl-C).
# Usage: scripts/demo.sh [d11 demo options, e.g. -w FILE.pcapng]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then exec sudo -E env "PATH=$PATH" bash "$0" "$@"; fi
  echo "demo.sh: the lab creates network namespaces, so it must run as root" >&2
  exit 1
fi
. scripts/lib.sh
d11_install_packages
d11_build
# The binary is where cargo put it (CARGO_TARGET_DIR, if set, moves it).
D11="${CARGO_TARGET_DIR:-$(pwd)/target}/release/d11"

# A run killed outright (SIGKILL) may have left the demo's own lab behind.
"$D11" down --name demo >/dev/null 2>&1 || true
exec "$D11" demo "$@"
