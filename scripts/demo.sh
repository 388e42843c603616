#!/usr/bin/env bash
# The narrated demo: build d11, bring up the carrier lab (a phone, four
# routers, a switch, a server), ping and trace the path, show the elements'
# counters, and take everything down again.
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

LAB=demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
trap '"$D11" down --name "$LAB" >/dev/null 2>&1 || true' EXIT
"$D11" down --name "$LAB" >/dev/null 2>&1 || true

say "Chapter 7 begins: build the lab from netns/carrier.toml (one namespace per node, real veth and TAP wires)"
run "$D11" up -t netns/carrier.toml --name "$LAB"

say "The phone pings the server: every router answers ARP, forwards by longest prefix, decrements TTL"
run "$D11" exec --name "$LAB" phone -- ping -c 3 -i 0.2 203.0.113.10

say "traceroute lists each router in order: each sends ICMP time exceeded when TTL reaches zero"
run "$D11" exec --name "$LAB" phone -- traceroute -n -q 1 -w 1 203.0.113.10

say "tracepath finds the path MTU (the phone's radio link is 1400 bytes)"
run "$D11" exec --name "$LAB" phone -- tracepath -n 203.0.113.10

say "Only the MACs change hop by hop, never the IP addresses: one ping captured on every wire"
run "$D11" capture --name "$LAB" -w "/run/d11/$LAB/demo.pcapng" -- "$D11" exec --name "$LAB" phone -- ping -c 1 203.0.113.10
run tshark -r "/run/d11/$LAB/demo.pcapng" -Y icmp.type==8 -T fields -E header=y \
  -e frame.interface_name -e eth.src -e eth.dst -e ip.src -e ip.dst -e ip.ttl 2>/dev/null

say "What each element did: frames in and out per port, drops by reason, restarts"
run "$D11" status --name "$LAB"

say "Tear down: every namespace, wire and process goes"
run "$D11" down --name "$LAB"
trap - EXIT
