#!/usr/bin/env bash
# Installs what polyattn needs, only what is missing (run as root): Debian packages, then the
# PyPI packages of the Python module and its tests (Debian packages none of nanobind or
# ml_dtypes), installed with pip for the python3 on PATH.
set -euo pipefail
pkgs=(cmake make g++ libeigen3-dev libxsimd-dev xtl-dev libgtest-dev libbenchmark-dev python3-numpy
  python3-dev python3-pip)
bash "$(dirname "$0")/apt-missing.sh" "${pkgs[@]}"

# PyPI: nanobind (builds the module in the release preset), ml_dtypes (numpy bfloat16) and
# pytest (the module's tests in ctest). --break-system-packages: Debian marks its python3
# externally managed (PEP 668); these packages do not replace any Debian package polyattn uses.
py_missing=()
for m in nanobind ml_dtypes pytest; do
  python3 -c "import $m" 2>/dev/null || py_missing+=("$m")
done
if ((${#py_missing[@]})); then
  echo "polyattn: pip installing ${py_missing[*]}"
  python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    --break-system-packages "${py_missing[@]}"
fi
