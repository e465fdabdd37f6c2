#!/usr/bin/env bash
# The GPU check for a lent accelerator (see benchmarks/gpu_check.py): parity, torch.compile, activation
# memory, a ~1B DeepSeek-V3-shaped MoE training step in bf16 (tokens/s, MFU) and greedy decoding, ours vs
# transformers. Runs from the source tree with the machine's own torch, nothing installed:
#
#   benchmarks/gpu_check.sh          # CUDA, real shapes (under 8 minutes on one H100/H200)
#   benchmarks/gpu_check.sh --cpu    # tiny shapes on CPU (part of the test suite)
#
# Writes gpu_check.json and gpu_check.md into $OUT when set (or --out DIR).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python3}" "$root/benchmarks/gpu_check.py" "$@"
