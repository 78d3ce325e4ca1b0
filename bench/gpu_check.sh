#!/usr/bin/env bash
# The device check: bf16 extraction / forward, fusion step / CLM step time and memory, hf vs vLLM scores on SmolLM2,
# a 2-GPU FSDP smoke. Fits 10 minutes on one H200. Writes $OUT/gpu_check.json (else bench/gpu_check.json).
# Usage: bash bench/gpu_check.sh [--dry-run]   (--dry-run, or no GPU: the same steps on CPU at the quick size)
# Offline: uses ./.venv if the tree carries one, else the machine's python3 if it has torch; steps that need what
# the machine lacks (vLLM, a cached SmolLM2, a second GPU) are skipped with the reason recorded in the JSON.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT_FILE="${OUT:-bench}/gpu_check.json"
PY=python3
[ -x .venv/bin/python ] && .venv/bin/python -c "import torch" 2>/dev/null && PY=.venv/bin/python
if ! "$PY" -c "import torch, transformers" 2>/dev/null; then
  mkdir -p "$(dirname "$OUT_FILE")"
  printf '{"device": "unknown", "figures": {}, "skipped": {"all": "no python with torch and transformers (%s)"}}\n' \
    "$PY" > "$OUT_FILE"
  cat "$OUT_FILE"
  exit 0
fi
exec "$PY" bench/gpu_check.py --out "$OUT_FILE" "$@"
