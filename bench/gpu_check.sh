#!/usr/bin/env bash
# bf16 LoRA vs QLoRA on an NVIDIA GPU, results in one file (default: gpu_check.md; the
# device tool's $OUT when set). Needs torch with CUDA, transformers, peft, bitsandbytes,
# accelerate, datasets, pydantic, toolz on that machine's python3 (no network there:
# carry missing ones as wheels). Finishes in under 5 minutes on one H100/H200.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-.}/gpu_check.md}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONPATH="$PWD/src:${PYTHONPATH:-}"
timeout 290 python3 bench/gpu_check.py "$out"
