#!/usr/bin/env bash
# Installs the Debian 12 packages vigil builds and tests with. Idempotent: it asks dpkg which
# packages are missing and runs apt-get only for those, so it prints nothing when all are present.
set -euo pipefail

BUILD_PKGS=(
  build-essential cmake pkg-config git
  clang llvm clang-format libbpf-dev bpftool libelf-dev zlib1g-dev
  capnproto libcapnp-dev libabsl-dev catch2
  libsqlite3-dev libzstd-dev libyaml-cpp-dev libssl-dev libsnappy-dev
  libprotobuf-dev protobuf-compiler nlohmann-json3-dev libjemalloc-dev
)
# Real servers and workloads the tests and benchmarks talk to.
TEST_PKGS=(
  curl procps iproute2 util-linux tmux python3
  prometheus prometheus-alertmanager prometheus-node-exporter redis-server redis-tools
  podman runc busybox-static bpftrace stress-ng nginx wrk hyperfine sqlite3 openssl
  iptables
)
# bench/run.sh runs bcc's runqlat once to show that BCC cannot compile here (no kernel headers).
TEST_PKGS+=(bpfcc-tools time)

want=("${BUILD_PKGS[@]}")
if [[ "${1:-}" != "--build-only" ]]; then
  want+=("${TEST_PKGS[@]}")
fi

missing=()
for p in "${want[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != "installed" ]]; then
    missing+=("$p")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Debian's packaged servers start themselves on install; tests start their own instances.
$SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
