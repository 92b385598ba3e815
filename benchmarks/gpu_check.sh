#!/usr/bin/env bash
# The GPU check, one script for a session that has a GPU machine (device tool; at most 8 minutes there):
# the probe matrix on CUDA (NCCL, fp32 and bf16, with the optimizer offloaded, DeepSpeedCPUAdam) and the overhead benchmark
# on a ~150M-parameter model, DeepSpeed 0.18.9 (affected) and 0.19.8 (fixed), patched and unpatched.
# Writes benchmarks/results/gpu/.
#
#   bash benchmarks/gpu_check.sh --prepare   # here (CPU, registry reachable): release folders + wheels
#   bash benchmarks/gpu_check.sh --dry-run   # here: check what --prepare made, print the commands
#   bash benchmarks/gpu_check.sh             # on the GPU machine, with carry:
#       [".ds-releases/0.18.9", ".ds-releases/0.19.8", ".gpu-wheels"]
#
# The GPU image has torch (CUDA), ninja, einops, msgpack, psutil, py-cpuinfo and tqdm, but no DeepSpeed and
# no network: DeepSpeed runs from its release folders (pure Python, no ops prebuilt), and the few packages
# it needs that the image lacks travel as wheels in .gpu-wheels (Python 3.12, manylinux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."

RELEASES="0.18.9 0.19.8"
WHEELS=.gpu-wheels
WHEEL_SPECS="hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5"
OUT=benchmarks/results/gpu
MATRIX=(python3 benchmarks/deepspeed_matrix.py --versions $RELEASES --steps 3 --timeout 240 --cpu-adam --out "$OUT")
OVERHEAD=(python3 benchmarks/overhead.py --only offload-ga-drop offload-manual-accumulation bf16-last-micro-batch-7985 --width 6144
          --rows 2048 --steps 10 --repeats 5 --blocks 6 --block-steps 5 --skip-doctor --import-runs 10 --out "$OUT")

mode=${1:-run}
case "$mode" in
  --prepare)
    for version in $RELEASES; do python3 benchmarks/deepspeed_releases.py install "$version"; done
    mkdir -p "$WHEELS"
    # shellcheck disable=SC2086
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" $WHEEL_SPECS
    ls "$WHEELS"
    ;;
  --dry-run)
    missing=0
    for version in $RELEASES; do
      if [ -d ".ds-releases/$version/deepspeed-$version.dist-info" ]; then echo "ok: .ds-releases/$version"
      else echo "missing: .ds-releases/$version (run --prepare)"; missing=1; fi
    done
    for spec in $WHEEL_SPECS; do
      name=${spec%%==*}; name=${name//-/_}
      if ls "$WHEELS"/"$name"-*.whl >/dev/null 2>&1; then echo "ok: $(ls "$WHEELS"/"$name"-*.whl)"
      else echo "missing: wheel $spec in $WHEELS (run --prepare)"; missing=1; fi
    done
    size=$(du -scm .ds-releases/0.18.9 .ds-releases/0.19.8 "$WHEELS" 2>/dev/null | tail -1 | cut -f1)
    echo "carry size: ${size} MiB (limit 64)"
    echo "would run: python3 -m pip install --no-index --no-deps --target /tmp/site $WHEELS/*.whl"
    echo "would run: DS_ACCELERATOR=cuda PYTHONPATH=/tmp/site:. ${MATRIX[*]}"
    echo "would run: DS_ACCELERATOR=cuda PYTHONPATH=/tmp/site:. ${OVERHEAD[*]}"
    exit $missing
    ;;
  run)
    python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device here')"
    python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1
    mkdir -p "$OUT"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/device.csv" || true
    started=$(date +%s)
    "${MATRIX[@]}" 2>&1 | tee "$OUT/matrix.log"
    "${OVERHEAD[@]}" 2>&1 | tee "$OUT/overhead.log"
    echo "gpu_check: $(( $(date +%s) - started )) s" | tee "$OUT/wall.txt"
    ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
