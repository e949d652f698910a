#!/usr/bin/env bash
# Set up (or refresh) the project's one environment: .venv at the repository root.
# torch is installed first as the CPU build 2.13.0 (on these machines it comes from local disk), so the
# package's loose `torch>=2.1` requirement is already satisfied and pip never pulls a multi-GB CUDA build.
# On a GPU machine, install the torch build you want into .venv first; this script keeps it if it is >= 2.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Fashion-MNIST (the bundled image models' data and the offline FD's reference set) comes from a Debian package.
FASHION_DIR=${SOLVERSEARCH_FASHION_DIR:-/usr/share/datasets/fashion-mnist}
if [ ! -f "$FASHION_DIR/t10k-images-idx3-ubyte.gz" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO=sudo; fi
  if ! { command -v apt-get >/dev/null 2>&1 && $SUDO apt-get update -qq \
         && $SUDO apt-get install -y -qq dataset-fashion-mnist; }; then
    echo "WARNING: could not install the Debian package dataset-fashion-mnist; the Fashion-MNIST models, data" \
         "and FD tests will be unavailable (install it with apt-get, or set SOLVERSEARCH_FASHION_DIR)" >&2
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check torch==2.13.0
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
.venv/bin/python -c 'import solversearch, torch; print(f"solversearch ready (torch {torch.__version__})")'
