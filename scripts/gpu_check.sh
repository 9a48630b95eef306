#!/usr/bin/env bash
# The local backend's CUDA path in under 5 minutes on one GPU: naive / batched / prefix on the gpt-oss-shaped random
# model (sliding windows, sinks, MoE; built from configs/models/gpt-oss-shaped.toml, no download) and on the bundled
# SmolLM2, fp32 (must be token-identical) and bf16 (share identical + first divergent positions), the memory-aware
# batch size, peak memory and a forced OOM that must split and recover; one JSON file of results. Needs a CUDA
# build of torch in .venv (pip install torch; the Makefile installs the CPU build) and the bundled model (make
# setup). Without CUDA it says so and runs only the CPU identity part. Usage: scripts/gpu_check.sh [DATASET] [ROWS] [OUT.json]
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-.venv/bin/python}
exec "$PY" -m toxcmp.bench.gpu_check "${1:-configs/samples/toxicchat0124_test.parquet}" "${2:-32}" "${3:-gpu_check.json}"
