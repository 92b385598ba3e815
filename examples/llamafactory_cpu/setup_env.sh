#!/usr/bin/env bash
# Llama-Factory 0.9.5 in an environment of its own (it pins transformers <= 5.6.0, trl <= 0.24.0,
# accelerate <= 1.11.0), CPU torch, this package installed editable (autoload reaches the torchrun
# child Llama-Factory re-executes itself in). Not installed: gradio/av/modelscope (web UI and media,
# unused by `llamafactory-cli train`), torchvision/torchaudio (no CPU wheels matching torch here;
# examples/llamafactory_cpu/stand_ins has an import-only torchaudio). DeepSpeed comes from a
# .ds-releases/ folder on PYTHONPATH, so its pure-Python dependencies are installed here.
#   bash examples/llamafactory_cpu/setup_env.sh [VENV]     (default .lf-venv)
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${1:-.lf-venv}
python3 -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade pip setuptools wheel
"$PY" -m pip install -q torch==2.13.0
"$PY" -m pip install -q -c .ci/constraints.txt "transformers==5.6.0" "trl==0.24.0" "accelerate==1.11.0" \
    "datasets==4.0.0" "peft==0.18.1" "tyro<0.9.0" "torchdata==0.11.0" einops fire omegaconf pandas pyyaml \
    safetensors scipy sentencepiece tiktoken protobuf matplotlib numpy packaging pydantic \
    hjson msgpack ninja psutil py-cpuinfo tqdm
"$PY" -m pip install -q --no-deps "llamafactory==0.9.5"
"$PY" -m pip install -q -c .ci/constraints.txt --no-deps -e .
echo "$VENV ready: $("$PY" -c 'import llamafactory, transformers; print("llamafactory", llamafactory.__version__, "transformers", transformers.__version__)')"
