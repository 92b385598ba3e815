#!/usr/bin/env bash
# The main job on a fresh machine: a .venv with torch 2.13 (CPU), an affected DeepSpeed (0.18.9,
# the release OpenRLHF 0.9.10 pins), TRL and this package; then the doctor, and the tiny
# SFT-then-RL demo (buggy / fixed / no-offload reference x 3 seeds, about 15 minutes on 2 cores).
# Usage: bash examples/demo.sh [results folder] [extra demo flags, e.g. --seeds 0]
# SFTRL_DEMO_OPENRLHF=1 adds the loss-aggregation half: OpenRLHF 0.9.10's own SFT in the four patch
# configurations of the paper's Table 2 (about 10 more minutes), results in "<results folder>-openrlhf".
# SFTRL_DEMO_OPENRLHF_RL=1 adds SFT-then-RL with both stages on OpenRLHF 0.9.10's own trainers (train_sft,
# then GRPO through train_ppo_ray on a local Ray cluster), both bugs against both fixes (about 15 more
# minutes), in "<results folder>-openrlhf-rl".
# SFTRL_DEMO_LLAMAFACTORY=1 adds Llama-Factory 0.9.5's own SFT (buggy / fixed / reference), in
# "<results folder>-llamafactory".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-results/tiny}"
shift || true
DS_VERSION=0.18.9

python3 -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install -q --upgrade pip setuptools wheel
python -m pip install -q torch==2.13.0   # pin your own torch build on a GPU machine
DS_BUILD_OPS=0 python -m pip install -q -c .ci/constraints.txt --no-build-isolation -e ".[probe,demo]" \
    "deepspeed==${DS_VERSION}" "transformers==5.7.0"   # the release the committed results ran on

export TORCH_EXTENSIONS_DIR="$PWD/.ds-releases/torch_extensions/site-${DS_VERSION}"
export HF_HUB_OFFLINE=1 DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
echo "== sftrl-doctor (static)"
sftrl-doctor || true
echo
echo "== tiny SFT-then-RL demo -> $OUT"
python -m examples.sftrl_tiny.demo --out "$OUT" "$@"

if [ "${SFTRL_DEMO_OPENRLHF:-0}" = "1" ] || [ "${SFTRL_DEMO_OPENRLHF_RL:-0}" = "1" ]; then
    # OpenRLHF cannot pip install on a CPU (flash-attn, vLLM): --no-deps, plus what its SFT and Ray paths
    # import (pip then lists the GPU-side requirements it left out; expected).
    python -m pip install -q --no-deps "openrlhf==0.9.10"
    python -m pip install -q -c .ci/constraints.txt peft torchdata pillow pylatexenc "ray==2.55.0" aiohttp
fi
if [ "${SFTRL_DEMO_OPENRLHF:-0}" = "1" ]; then
    echo
    echo "== the loss-aggregation half on OpenRLHF's own SFT -> ${OUT}-openrlhf"
    python -m examples.sftrl_tiny.openrlhf_demo --out "${OUT}-openrlhf" "$@"
fi
if [ "${SFTRL_DEMO_OPENRLHF_RL:-0}" = "1" ]; then
    echo
    echo "== SFT-then-RL on OpenRLHF's own trainers (GRPO through train_ppo_ray) -> ${OUT}-openrlhf-rl"
    python -m examples.sftrl_tiny.openrlhf_rl_demo --out "${OUT}-openrlhf-rl" "$@"
fi

if [ "${SFTRL_DEMO_LLAMAFACTORY:-0}" = "1" ]; then
    # Llama-Factory 0.9.5 pins transformers <= 5.6.0: its own environment (.lf-venv), DeepSpeed 0.18.4
    # (the newest it allows) in .ds-releases/.
    bash examples/llamafactory_cpu/setup_env.sh .lf-venv
    python benchmarks/deepspeed_releases.py install 0.18.4
    echo
    echo "== the offload bug on Llama-Factory's own SFT -> ${OUT}-llamafactory"
    python -m examples.sftrl_tiny.llamafactory_demo --out "${OUT}-llamafactory" "$@"
fi
