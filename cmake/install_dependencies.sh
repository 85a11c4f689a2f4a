#!/usr/bin/env bash
# Installs, through apt-get, whatever torchtrain needs to build and test that is not already installed.
# Idempotent and quick when everything is there. Run as root (or with sudo available).
# With --fuzz, also clang and its runtimes (libFuzzer, sanitizers), which only the fuzz build needs.
set -euo pipefail

packages=(g++ cmake ninja-build libtorch-dev nlohmann-json3-dev catch2 libgloo-dev libbenchmark-dev libxml2-utils
          zlib1g-dev libcurl4-openssl-dev libsqlite3-dev dataset-fashion-mnist jargon-text)
if [ "${1:-}" = "--fuzz" ]; then
  packages+=(clang libclang-rt-dev)
elif [ $# -gt 0 ]; then
  echo "usage: $0 [--fuzz]" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "Installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}" </dev/null
