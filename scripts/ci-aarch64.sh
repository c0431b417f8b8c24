#!/usr/bin/env bash
# scripts/ci-aarch64.sh — the AArch64 (NEON) check on an x86-64 Debian 12 machine: cross-build with
# Debian's g++-aarch64-linux-gnu (preset `aarch64`, toolchain cmake/toolchains/aarch64-linux-gnu.cmake)
# and run the reduced operator suite under qemu-user (test preset `aarch64`). Run as root from any
# directory; installs only what is missing. .ci/run calls it with UNIT_ISAS=neon.
#
#   bash scripts/ci-aarch64.sh                  # install, configure, build, reduced suite
#   JOBS=4 bash scripts/ci-aarch64.sh           # build jobs (default: nproc)
#   UNIT_ISAS=neon bash scripts/ci-aarch64.sh   # kernel units for NEON only (no .scalar reruns)
#
# Measured in a clean-clone .ci/run on the 2-core development VM (2026-12-02, UNIT_ISAS=neon):
# build 307 s (-j2), ctest --preset aarch64 (224 tests, 3 skipped) 115 s under qemu.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# The cross compiler, the emulator, GoogleTest's sources (built for the target by CMake) and the
# header-only dependencies (the host's headers serve the target).
pkgs=(cmake make g++-aarch64-linux-gnu qemu-user googletest libeigen3-dev libxsimd-dev xtl-dev)
bash scripts/apt-missing.sh "${pkgs[@]}"

t0=$(date +%s)
isas=()
if [ -n "${UNIT_ISAS:-}" ]; then isas=(-DPOLYATTN_UNIT_ISAS="$UNIT_ISAS"); fi
cmake --preset aarch64 "${isas[@]}"
cmake --build --preset aarch64 -j"$jobs"
t1=$(date +%s)
ctest --preset aarch64
t2=$(date +%s)
echo "polyattn aarch64: build $((t1 - t0)) s (-j$jobs), tests under qemu $((t2 - t1)) s"
