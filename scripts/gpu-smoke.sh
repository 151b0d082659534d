#!/usr/bin/env bash
# GPU smoke test: the quickstart (SFT -> reward -> PPO) and the DPO quickstart on one NVIDIA GPU,
# then per stage: wall time, tokens/s and peak GPU memory. On a GPU node, from the repository:
#   bash scripts/gpu-smoke.sh                 # full quickstarts (a few minutes)
#   bash scripts/gpu-smoke.sh --steps 20      # every stage capped at 20 steps
# Then the GPU test tier: pytest -m gpu
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
python benchmarks/gpu_smoke.py "$@"
