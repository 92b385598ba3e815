#!/usr/bin/env bash
# The GPU check, for a session that has a GPU machine for a short lease (device tool; 15 minutes of device time in
# all, each start costs minutes): stages, one after the other, each under its own time limit, at most 6 minutes in
# all by default, each writing its results as soon as it has them, so that a run cut short leaves what it finished:
#
#   setup                   CUDA present?  the wheels into /tmp/site, nvidia-smi          -> device.csv
#   doctor_probe            sftrl-doctor --probe --json on CUDA, DeepSpeed 0.18.9           -> doctor_probe_0.18.9.json, .txt
#   audit_<config>          sftrl-doctor audit --probe --json, DeepSpeed 0.18.9, on the held configs in
#                           benchmarks/gpu_configs/ (no `optimizer` block: probed with torch SGD, no JIT build)
#                                                                                           -> audit_probe_<config>.json
#   matrix_0.18.9           the probe matrix on 0.18.9, then (its own process) on 0.19.8
#   matrix_0.19.8                                                                           -> deepspeed_matrix_<release>.json, .md
#   overhead                the overhead benchmark (ZeRO-2 + offload GA 8, patched 0.18.9 vs 0.19.8) -> overhead.json, .md
#
# Every stage writes its output to $OUT/<stage>.log and appends a line to $OUT/stages.txt:
#   <stage> TAB exit <status> [(ok) | (failed) | (time limit N s)] TAB <seconds> s TAB <files it wrote, or ->
#   <stage> TAB skipped: no time left (...) | skipped: setup failed TAB 0.0 s TAB -
# Exit 124 is a stage that hit its time limit (SIGTERM, then SIGKILL after a grace period; the whole process group
# of the stage, so no GPU process outlives its stage). A stage runs only when its whole budget fits in what is left
# of the total; later, smaller stages still run. The script's exit status: 0 when every stage finished, else the
# first failure's (124 for a stage skipped for time); after a failed (or skipped) setup the others are skipped.
# Files a killed stage wrote stay; empty ones (a JSON whose writer was killed) are removed.
#
#   bash benchmarks/gpu_check.sh --prepare   # here (CPU, registry reachable): release folders + wheels
#   bash benchmarks/gpu_check.sh --dry-run   # here: check what --prepare made, print the stage plan
#   bash benchmarks/gpu_check.sh             # on the GPU machine (device tool, timeout_s 420 or more), with carry:
#       [".ds-releases/0.18.9", ".ds-releases/0.19.8", ".gpu-wheels"]
#
# Results go to $OUT (what the device tool brings back), else benchmarks/results/gpu.
# Budgets in whole seconds, from the environment: GPU_CHECK_BUDGET_SETUP (15), GPU_CHECK_BUDGET_DOCTOR (50),
# GPU_CHECK_BUDGET_AUDIT (35, each config), GPU_CHECK_BUDGET_MATRIX (80, each release), GPU_CHECK_BUDGET_OVERHEAD
# (65), GPU_CHECK_TOTAL (360), GPU_CHECK_GRACE (5: SIGTERM this long before the budget ends, SIGKILL at its end).
# The probe and matrix children get their own timeouts from these budgets, so that a slow child is recorded as an
# error and the stage still writes its file. GPU_CHECK_MATRIX_ARGS and GPU_CHECK_OVERHEAD_ARGS replace the
# default arguments (e.g. GPU_CHECK_MATRIX_ARGS="--steps 3 --cpu-adam" with a larger GPU_CHECK_BUDGET_MATRIX: its
# JIT build of DeepSpeedCPUAdam takes about a minute per release).
# GPU_CHECK_FAKE_CMD (tests): every stage runs `bash -c "$GPU_CHECK_FAKE_CMD"` instead of its command, with
# GPU_CHECK_STAGE, GPU_CHECK_STAGE_BUDGET and GPU_CHECK_STAGE_COMMAND (the real command) in its environment.
#
# The GPU image has torch (CUDA), ninja, einops, msgpack, psutil, py-cpuinfo and tqdm, but no DeepSpeed and
# no network: DeepSpeed runs from its release folders (pure Python, no ops prebuilt), and the few packages
# it needs that the image lacks travel as wheels in .gpu-wheels (Python 3.12, manylinux x86_64).
set -euo pipefail
cd "$(dirname "$0")/.."

RELEASES="0.18.9 0.19.8"
PROBE_RELEASE=0.18.9
WHEELS=.gpu-wheels
WHEEL_SPECS="hjson==3.1.0 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5"
CONFIGS="benchmarks/gpu_configs/zero2_offload_ga4_bf16.json benchmarks/gpu_configs/zero2_ga4_bf16.json"
OUT=${OUT:-benchmarks/results/gpu}
MATRIX_ARGS=${GPU_CHECK_MATRIX_ARGS:-"--steps 3"}
OVERHEAD_ARGS=${GPU_CHECK_OVERHEAD_ARGS:-"--only offload-ga-drop --width 4096 --rows 1024 --steps 5 --repeats 1 --blocks 2 --block-steps 3 --skip-doctor --import-runs 5"}

whole_seconds() {  # NAME VALUE: a whole number of seconds, at least 1, or exit 2
  if ! [[ $2 =~ ^[0-9]+$ ]] || [ "$2" -lt 1 ]; then
    echo "gpu_check: $1 must be a whole number of seconds, at least 1 (got '$2')" >&2; exit 2
  fi
  echo "$2"
}
B_SETUP=$(whole_seconds GPU_CHECK_BUDGET_SETUP "${GPU_CHECK_BUDGET_SETUP:-15}")
B_DOCTOR=$(whole_seconds GPU_CHECK_BUDGET_DOCTOR "${GPU_CHECK_BUDGET_DOCTOR:-50}")
B_AUDIT=$(whole_seconds GPU_CHECK_BUDGET_AUDIT "${GPU_CHECK_BUDGET_AUDIT:-35}")
B_MATRIX=$(whole_seconds GPU_CHECK_BUDGET_MATRIX "${GPU_CHECK_BUDGET_MATRIX:-80}")
B_OVERHEAD=$(whole_seconds GPU_CHECK_BUDGET_OVERHEAD "${GPU_CHECK_BUDGET_OVERHEAD:-65}")
TOTAL=$(whole_seconds GPU_CHECK_TOTAL "${GPU_CHECK_TOTAL:-360}")
GRACE=$(whole_seconds GPU_CHECK_GRACE "${GPU_CHECK_GRACE:-5}")

at_least_1() { if [ "$1" -lt 1 ]; then echo 1; else echo "$1"; fi; }
# Two probe children (unpatched, patched) per doctor run, audit and matrix release, with room for start-up.
PROBE_TIMEOUT=$(at_least_1 $(( (B_DOCTOR - GRACE - 4) / 2 )))
AUDIT_TIMEOUT=$(at_least_1 $(( (B_AUDIT - GRACE - 4) / 2 )))
MATRIX_TIMEOUT=$(at_least_1 $(( (B_MATRIX - GRACE - 6) / 2 )))

# The stages: name, budget (s), exit codes that count as finished, command (run by `bash -c` in the repository root).
NAMES=() BUDGETS=() OKS=() COMMANDS=()
add_stage() { NAMES+=("$1"); BUDGETS+=("$2"); OKS+=("$3"); COMMANDS+=("$4"); }

o=$(printf %q "$OUT")
release_env="PYTHONPATH=.ds-releases/$PROBE_RELEASE:\$PYTHONPATH TORCH_EXTENSIONS_DIR=.ds-releases/torch_extensions/$PROBE_RELEASE"
add_stage setup "$B_SETUP" 0 \
  "python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else \"no CUDA device here\")' && python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site $WHEELS/*.whl && { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > $o/device.csv || true; }"
# sftrl-doctor is `python3 -m sftrl_patches.doctor` (the package is not installed there: PYTHONPATH). Exit 1 is
# "action needed" (doctor) or "hit" (audit): a finished report. The text form is rendered from the JSON.
doctor_json="$o/doctor_probe_$PROBE_RELEASE.json"
add_stage doctor_probe "$B_DOCTOR" "0 1" \
  "$release_env python3 -m sftrl_patches.doctor --probe --json --probe-timeout $PROBE_TIMEOUT > $doctor_json; status=\$?; if [ -s $doctor_json ]; then python3 -c 'import json, sys; from sftrl_patches.doctor.render import to_text; print(to_text(json.load(open(sys.argv[1]))))' $doctor_json > $o/doctor_probe_$PROBE_RELEASE.txt; fi; exit \$status"
for config in $CONFIGS; do
  name=$(basename "$config" .json)
  add_stage "audit_$name" "$B_AUDIT" "0 1" \
    "$release_env python3 -m sftrl_patches.doctor audit --probe --json --probe-timeout $AUDIT_TIMEOUT --versions deepspeed==$PROBE_RELEASE --config $config > $o/audit_probe_$name.json"
done
for version in $RELEASES; do  # one process per release, one after the other: each writes its file when it finishes
  add_stage "matrix_$version" "$B_MATRIX" 0 \
    "python3 benchmarks/deepspeed_matrix.py --versions $version $MATRIX_ARGS --timeout $MATRIX_TIMEOUT --out $o --name deepspeed_matrix_$version"
done
add_stage overhead "$B_OVERHEAD" 0 "python3 benchmarks/overhead.py $OVERHEAD_ARGS --out $o"

budget_sum() { local sum=0 b; for b in "${BUDGETS[@]}"; do sum=$((sum + b)); done; echo "$sum"; }

now_ms() { date +%s%3N; }
seconds_text() { printf '%d.%d' $(($1 / 1000)) $(($1 % 1000 / 100)); }     # 12345 ms -> 12.3
duration() { printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)); }             # for timeout(1)
snapshot() { find "$OUT" -type f ! -name stages.txt ! -name wall.txt -printf '%P\t%T@\t%s\n' 2>/dev/null | LC_ALL=C sort; }

record() {  # a line of stages.txt, also on stdout (the device tool's output tail)
  printf '%s\t%s\t%s s\t%s\n' "$1" "$2" "$3" "$4" | tee -a "$OUT/stages.txt"
}

CURRENT_PID="" CURRENT_STAGE="" CURRENT_START=0 RUN_START=0
on_signal() {  # the lease ends: stop the stage's whole process group, say so, keep what is there
  trap - TERM INT HUP
  if [ -n "$CURRENT_PID" ]; then
    kill -TERM -- "-$CURRENT_PID" 2>/dev/null || true
    sleep 1
    kill -KILL -- "-$CURRENT_PID" 2>/dev/null || true
    record "$CURRENT_STAGE" "exit 143 (interrupted)" "$(seconds_text $(( $(now_ms) - CURRENT_START )))" -
  fi
  echo "gpu_check: interrupted after $(seconds_text $(( $(now_ms) - RUN_START ))) s" | tee "$OUT/wall.txt"
  exit 143
}

run_stage() {  # NAME BUDGET OKS COMMAND; sets STAGE_STATUS (0 when finished)
  local name=$1 budget=$2 oks=$3 command=$4 before after rc grace_ms term_ms start elapsed note files="" file
  grace_ms=$((GRACE * 1000)); [ "$grace_ms" -gt $((budget * 250)) ] && grace_ms=$((budget * 250))
  term_ms=$((budget * 1000 - grace_ms))
  local runner=(bash -c "$command")
  [ -n "${GPU_CHECK_FAKE_CMD:-}" ] && runner=(bash -c "$GPU_CHECK_FAKE_CMD")
  before=$(snapshot)
  start=$(now_ms)
  echo "== $name (budget $budget s) =="
  # timeout(1) puts itself and the stage in a process group of their own (its pid): signals reach all of it.
  GPU_CHECK_STAGE=$name GPU_CHECK_STAGE_BUDGET=$budget GPU_CHECK_STAGE_COMMAND=$command \
    timeout --kill-after="$(duration "$grace_ms")" "$(duration "$term_ms")" "${runner[@]}" \
    > "$OUT/$name.log" 2>&1 < /dev/null &
  CURRENT_PID=$! CURRENT_STAGE=$name CURRENT_START=$start
  { wait "$CURRENT_PID"; } 2>/dev/null && rc=0 || rc=$?   # (no "Killed" job notice on stderr)
  kill -KILL -- "-$CURRENT_PID" 2>/dev/null || true   # anything the stage left running in the background
  CURRENT_PID=""
  elapsed=$(( $(now_ms) - start ))
  after=$(snapshot)
  while IFS=$'\t' read -r file _; do
    [ -n "$file" ] || continue
    if [ -s "$OUT/$file" ]; then files="$files${files:+ }$file"; else rm -f "$OUT/$file"; fi
  done < <(LC_ALL=C comm -13 <(printf '%s\n' "$before") <(printf '%s\n' "$after"))
  if [ "$rc" -eq 137 ] && [ "$elapsed" -ge "$term_ms" ]; then rc=124; fi   # SIGKILL after the grace period
  if [ "$rc" -eq 124 ]; then note=" (time limit $budget s)"
  elif [[ " $oks " == *" $rc "* ]]; then note=$([ "$rc" -eq 0 ] || echo " (ok)")
  else note=" (failed)"; fi
  record "$name" "exit $rc$note" "$(seconds_text "$elapsed")" "${files:--}"
  if [ "$rc" -ne 0 ] && [[ " $oks " != *" $rc "* ]]; then
    tail -n 5 "$OUT/$name.log" 2>/dev/null | sed 's/^/    /' || true
    STAGE_STATUS=$rc
  else
    STAGE_STATUS=0
  fi
}

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
    for config in $CONFIGS; do
      if [ -f "$config" ]; then echo "ok: $config"; else echo "missing: $config"; missing=1; fi
    done
    # du fails on a folder --prepare has not made yet; pipefail must not end the dry run there
    size=$( (du -scm .ds-releases/0.18.9 .ds-releases/0.19.8 "$WHEELS" 2>/dev/null || true) | tail -1 | cut -f1)
    echo "carry size: ${size} MiB (limit 64)"
    echo "out: $OUT"
    echo "environment: DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:<repository root>"
    for i in "${!NAMES[@]}"; do
      echo "stage ${NAMES[$i]} (${BUDGETS[$i]} s): ${COMMANDS[$i]}"
    done
    sum=$(budget_sum)
    echo "budgets: $sum s in all, total limit $TOTAL s (GPU_CHECK_TOTAL)$([ "$sum" -le "$TOTAL" ] || echo ': the last stages will be skipped')"
    exit $missing
    ;;
  run)
    set +e
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}" DS_ACCELERATOR=cuda PYTHONUNBUFFERED=1
    mkdir -p "$OUT" || exit 1
    : > "$OUT/stages.txt"
    trap on_signal TERM INT HUP
    RUN_START=$(now_ms)
    status=0 setup_failed=0
    for i in "${!NAMES[@]}"; do
      name=${NAMES[$i]} budget=${BUDGETS[$i]}
      if [ "$setup_failed" -eq 1 ]; then
        record "$name" "skipped: setup failed" 0.0 -
        continue
      fi
      elapsed=$(( $(now_ms) - RUN_START ))
      if [ $((elapsed + budget * 1000)) -gt $((TOTAL * 1000)) ]; then
        record "$name" "skipped: no time left (needs $budget s, $(seconds_text $((TOTAL * 1000 - elapsed))) s left)" 0.0 -
        [ "$status" -eq 0 ] && status=124
        [ "$name" = setup ] && setup_failed=1
        continue
      fi
      run_stage "$name" "$budget" "${OKS[$i]}" "${COMMANDS[$i]}"
      if [ "$STAGE_STATUS" -ne 0 ]; then
        [ "$status" -eq 0 ] && status=$STAGE_STATUS
        [ "$name" = setup ] && setup_failed=1
      fi
    done
    echo "gpu_check: $(seconds_text $(( $(now_ms) - RUN_START ))) s, exit $status" | tee "$OUT/wall.txt"
    exit "$status"
    ;;
  *) echo "usage: bash benchmarks/gpu_check.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
