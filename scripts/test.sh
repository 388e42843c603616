#!/usr/bin/env bash
# Every test of double11: unit tests with byte fixtures, simulator scenarios
# (no root), and, when run as root, end-to-end tests in real namespaces.
# Usage: scripts/test.sh            (CI runs exactly this through .ci/run)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
d11_install_packages

# Labs a killed earlier run may have left (only labs of the test suite: t-*).
if [ "$(id -u)" -eq 0 ] && [ -d /run/d11 ]; then
  for lab in /run/d11/t-*; do
    [ -d "$lab" ] && cargo run -q --release --locked -p d11-cli -- down --name "$(basename "$lab")" || true
  done
fi

# Build once (release, so the end-to-end tests forward at a realistic rate),
# then run every test binary; root end-to-end tests serialise themselves.
cargo build --release --locked --workspace --all-targets
cargo test --release --locked --workspace --no-fail-fast
