#!/usr/bin/env bash
# Set up a fresh environment with an affected DeepSpeed (0.18.9) and let the doctor prove the bug
# and the fix on it. Usage: bash examples/doctor_demo.sh [deepspeed version]
set -euo pipefail
cd "$(dirname "$0")/.."
DS_VERSION="${1:-0.18.9}"

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel
python -m pip install -q torch==2.13.0   # pin your own torch build on a GPU machine
# DeepSpeed builds from its sdist against the installed torch: no build isolation.
DS_BUILD_OPS=0 python -m pip install -q -c .ci/constraints.txt --no-build-isolation -e ".[probe]" \
    "deepspeed==${DS_VERSION}"

export TORCH_EXTENSIONS_DIR="$PWD/.ds-releases/torch_extensions/site-${DS_VERSION}"
echo "== sftrl-doctor (static: reads metadata and sources, imports neither torch nor DeepSpeed)"
sftrl-doctor || true
echo
echo "== sftrl-doctor --probe (a tiny ZeRO-1/2 offload step in child interpreters, patches off and on)"
sftrl-doctor --probe
