#!/usr/bin/env bash
# Set up (or refresh) the project's one environment: .venv at the repository root.
# torch is installed first as the CPU build 2.13.0 (on these machines it comes from local disk), so the
# package's loose `torch>=2.1` requirement is already satisfied and pip never pulls a multi-GB CUDA build.
# On a GPU machine, install the torch build you want into .venv first; this script keeps it if it is >= 2.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -c 'import solversearch, torch; print(f"solversearch ready (torch {torch.__version__})")'
