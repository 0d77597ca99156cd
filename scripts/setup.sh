#!/usr/bin/env bash
# One-time set-up on a fresh Debian machine (idempotent): the OpenCL CPU driver (PoCL) when no OpenCL platform is
# installed, and a virtual environment in .venv with the library and every optional part (torch, pyopencl,
# triton, optuna, pandas, matplotlib). Run as root or with sudo available.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  if [ -z "${_APT_UPDATED:-}" ]; then as_root apt-get update -qq; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# OpenCL: an ICD loader plus PoCL's CPU driver, unless some OpenCL platform is already registered.
if ! ls /etc/OpenCL/vendors/*.icd >/dev/null 2>&1; then
  echo "setup: installing the OpenCL CPU driver (Debian's pocl-opencl-icd)"
  apt_install pocl-opencl-icd ocl-icd-libopencl1
fi
for pkg in "$@"; do apt_install "$pkg"; done  # extra Debian packages asked for by the caller (tests: postgresql, oclgrind)

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
PIP=(.venv/bin/python -m pip -q --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing torch (CPU build)"
  # This pin is the CPU wheel kept on these machines; elsewhere fall back to PyTorch's CPU index.
  "${PIP[@]}" install torch==2.13.0 2>/dev/null \
    || "${PIP[@]}" install torch --index-url https://download.pytorch.org/whl/cpu
fi
echo "setup: installing convt-autotune with all extras"
"${PIP[@]}" install -e '.[all,test]' 2>&1 | grep -vE "^WARNING: Location|^$" || true
.venv/bin/python -c "import autotune, backends; print('setup: ok, backends:', ', '.join(backends.names()))"
