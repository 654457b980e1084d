#!/usr/bin/env bash
# Install PyTorch into the environment of the given python, choosing the build for this machine:
# with an NVIDIA driver, the default (CUDA) build from PyPI; without one, the CPU-only build,
# taken from a local wheel when pip's find-links offers one, else from PyTorch's CPU index.
set -euo pipefail
python=${1:-python3}
pip=("$python" -m pip install --quiet)

if "$python" -c "import torch" 2>/dev/null; then
    exit 0
fi
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "${pip[@]}" "torch>=2.2"
elif "${pip[@]}" --no-index --no-deps "torch==2.13.0+cpu" 2>/dev/null; then
    "${pip[@]}" "torch==2.13.0+cpu"
else
    "${pip[@]}" torch --index-url https://download.pytorch.org/whl/cpu
fi
