#!/usr/bin/env bash
# Installs the Debian packages polyattn needs, only those that are missing (run as root).
set -euo pipefail
pkgs=(cmake make g++ libeigen3-dev libxsimd-dev xtl-dev libgtest-dev libbenchmark-dev python3-numpy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "polyattn: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
