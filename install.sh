#!/usr/bin/env bash
# Install fusebench into ./.venv on a fresh machine: CPU PyTorch (pinned, so pip never pulls a multi-GB CUDA
# build), the package with its test extras at the versions pinned in constraints.txt, and — when run as root or with sudo — the MultiPL-E language toolchains.
# Idempotent: a second run only checks. Usage: bash install.sh [--no-toolchains] [--deepspeed]
#   --deepspeed  also DeepSpeed (configs/accelerate/deepspeed_zero2.yaml, the paper's ZeRO-2), at the pinned version
set -euo pipefail
cd "$(dirname "$0")"
TOOLCHAINS=1 DEEPSPEED=0
for arg in "$@"; do
  case "$arg" in
    --no-toolchains) TOOLCHAINS=0 ;;
    --deepspeed) DEEPSPEED=1 ;;
    *) echo "install.sh: unknown option $arg (options: --no-toolchains, --deepspeed)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v WARNING || true
# torch first and pinned: a plain `torch` requirement on a machine without it may resolve to a CUDA wheel
.venv/bin/python -m pip install -q "torch==2.13.0" 2>&1 | grep -v WARNING || true
# every other package at the exact version the tests passed with (constraints.txt; refresh it with
# scripts/update-constraints.sh). FUSEBENCH_UNPINNED=1 resolves pyproject.toml's ranges instead.
PIN=(-c constraints.txt)
[ "${FUSEBENCH_UNPINNED:-0}" = 1 ] && PIN=()
.venv/bin/python -m pip install -q "${PIN[@]}" -e ".[dev]" 2>&1 | grep -v WARNING || true
.venv/bin/python -c "import fusebench, torch, transformers, lm_eval, mergekit" \
  || { echo "install.sh: the Python environment is incomplete (see pip's messages above)" >&2; exit 1; }
if [ "$DEEPSPEED" = 1 ]; then
  # built against the venv's torch without build isolation (which would fetch a CUDA torch); no ops compiled ahead
  # of time (DS_BUILD_OPS=0): the few a run needs are JIT-compiled on first use
  DS_BUILD_OPS=0 .venv/bin/python -m pip install -q --no-build-isolation "${PIN[@]}" deepspeed 2>&1 \
    | grep -v WARNING || true
  .venv/bin/python -c "import deepspeed" \
    || { echo "install.sh: DeepSpeed did not install (see pip's messages above)" >&2; exit 1; }
fi
if [ "$TOOLCHAINS" = 1 ]; then
  if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
    bash .ci/setup-toolchains.sh
  else
    echo "install.sh: not root and no sudo: skipping the MultiPL-E toolchains (code execution tests will skip)" >&2
  fi
fi
echo "install.sh: ready — .venv/bin/fusebench --help"
