#!/usr/bin/env bash
# scripts/apt-missing.sh PKG... — installs, as root, those of the named Debian packages that are
# not installed yet (one apt-get update and install for all of them); nothing when all are.
# Shared by scripts/deps.sh and scripts/ci-aarch64.sh.
set -euo pipefail
missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "polyattn: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
