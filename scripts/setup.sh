#!/usr/bin/env bash
# Installs the Debian packages Waymark needs to build and test.
# Idempotent: packages already installed are skipped, and apt-get is not
# touched at all when nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev clang-format
  libboost-dev nlohmann-json3-dev libcli11-dev libhowardhinnant-date-dev tzdata
  libgtest-dev libgmock-dev libbenchmark-dev
  libjemalloc-dev libsqlite3-dev libkainjow-mustache-dev libvalijson-dev libtomlplusplus-dev
  libspdlog-dev libcurl4-openssl-dev libssl-dev libcpp-httplib-dev libluajit-5.1-dev
  libnats-dev nats-server libpqxx-dev libpq-dev postgresql
  python3-aiosmtpd openssl graphviz hyperfine
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
