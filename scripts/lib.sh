# Shared by the scripts: install what the lab needs, build d11 once.
# Sourced, not run.

# Debian packages the lab and its tests use (only when root; nothing else is touched).
D11_PACKAGES=(iproute2 ethtool nftables tcpdump tshark iperf3 iputils-ping iputils-tracepath traceroute python3-scapy procps curl openssl ca-certificates bird2 gobgpd bind9-dnsutils nsd unbound dnsperf nginx wrk)
# Daemons the interop tests and benches run inside lab namespaces (or on loopback);
# their packages' services must never start on the host.
D11_HOST_SERVICES_OFF=(bird.service gobgpd.service nsd.service unbound.service nginx.service)

d11_install_packages() {
  if [ "$(id -u)" -ne 0 ]; then
    echo "note: not root, so no packages are installed and the root end-to-end tests are listed as ignored" >&2
    return 0
  fi
  local missing=()
  for p in "${D11_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; answer no without a prompt.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    # No service starts during the install (invoke-rc.d asks policy-rc.d).
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      policy=/usr/sbin/policy-rc.d
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    fi
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ -n "$policy" ]; then rm -f "$policy"; fi
    if command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now "${D11_HOST_SERVICES_OFF[@]}" >/dev/null 2>&1 || true
    fi
  fi
}

# Builds the one binary, in release mode (the lab forwards frames; speed matters).
d11_build() {
  cargo build --release --locked -p d11-cli >&2
  D11="${CARGO_TARGET_DIR:-$(pwd)/target}/release/d11"
  export D11
}
