#!/usr/bin/env bash
# scripts/ci-aarch64.sh — the AArch64 (NEON) check on an x86-64 Debian 12 machine: cross-build with
# Debian's g++-aarch64-linux-gnu (preset `aarch64`, toolchain cmake/toolchains/aarch64-linux-gnu.cmake)
# and run the reduced operator suite under qemu-user (test preset `aarch64`). Run as root from any
# directory; installs only what is missing. Not part of .ci/run; README, "Supported CPUs and ARM".
#
#   bash scripts/ci-aarch64.sh            # install, configure, build, reduced suite
#   JOBS=4 bash scripts/ci-aarch64.sh     # build jobs (default: nproc)
#
# Measured on the 2-core development VM with other builds running (2026-12-02): clean build of
# the emulation set 11 min 48 s wall at -j2 (11.5 CPU-minutes); ctest --preset aarch64 (218 tests, -j2) 8 min 55 s wall,
# 6.1 CPU-minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}

# The cross compiler, the emulator, GoogleTest's sources (built for the target by CMake) and the
# header-only dependencies (the host's headers serve the target).
pkgs=(cmake make g++-aarch64-linux-gnu qemu-user googletest libeigen3-dev libxsimd-dev xtl-dev)
bash scripts/apt-missing.sh "${pkgs[@]}"

t0=$(date +%s)
cmake --preset aarch64
cmake --build --preset aarch64 -j"$jobs"
t1=$(date +%s)
ctest --preset aarch64
t2=$(date +%s)
echo "polyattn aarch64: build $((t1 - t0)) s (-j$jobs), tests under qemu $((t2 - t1)) s"
