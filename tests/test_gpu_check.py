"""benchmarks/gpu_check.sh on the CPU: its stages run with stand-in commands (GPU_CHECK_FAKE_CMD), which record
when they start and end, what command they stand in for, and can hang, ignore SIGTERM, fail or leave a
process behind. Shows: the stages run in order, one at a time (no process of one is alive when the next
starts); a stage over its budget is killed (exit 124) and the rest still run; what a killed stage wrote
stays; the total budget skips the stages that no longer fit; the dry run prints the commands the stages run."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu_check.sh")
STAGES = ["setup", "doctor_probe", "audit_zero2_offload_ga4_bf16", "audit_zero2_ga4_bf16",
          "matrix_0.18.9", "matrix_0.19.8", "overhead"]

# The stand-in: FAKE_SLEEP="stage=seconds ...", FAKE_EXIT="stage=code ...", FAKE_HANG / FAKE_HANG_NO_TERM /
# FAKE_LEAK="stage ...": hang writing a tick every 0.05 s (with SIGTERM ignored), leave a process behind that
# writes a file 0.5 s later.
FAKE = r"""
stage=$GPU_CHECK_STAGE
lookup() { local pair; for pair in $1; do if [ "${pair%%=*}" = "$stage" ]; then echo "${pair#*=}"; return; fi; done; echo "$2"; }
listed() { case " $1 " in *" $stage "*) return 0;; esac; return 1; }
echo "start $stage $(date +%s.%N)" >> "$TRACE/trace"
printf '%s\n' "$GPU_CHECK_STAGE_COMMAND" > "$TRACE/command.$stage"
echo "$GPU_CHECK_STAGE_BUDGET" > "$TRACE/budget.$stage"
echo "stand-in for $stage"
echo "written before any kill" > "$OUT/$stage.partial"
: > "$OUT/$stage.empty"
if listed "$FAKE_LEAK"; then (sleep 0.5; echo leaked > "$TRACE/leaked.$stage") & fi
if listed "$FAKE_HANG_NO_TERM"; then trap '' TERM; fi
if listed "$FAKE_HANG" || listed "$FAKE_HANG_NO_TERM"; then
  while true; do date +%s.%N >> "$TRACE/ticks.$stage"; sleep 0.05; done
fi
sleep "$(lookup "$FAKE_SLEEP" 0)"
echo "end $stage $(date +%s.%N)" >> "$TRACE/trace"
exit "$(lookup "$FAKE_EXIT" 0)"
"""


def environment(tmp_path, **settings):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPU_CHECK_", "FAKE_"))}
    out, trace = tmp_path / "out", tmp_path / "trace"
    out.mkdir(exist_ok=True)
    trace.mkdir(exist_ok=True)
    fake = tmp_path / "fake.sh"
    fake.write_text(FAKE)
    env.update(OUT=str(out), TRACE=str(trace), GPU_CHECK_FAKE_CMD=f"bash {fake}", GPU_CHECK_GRACE="1")
    env.update({k: str(v) for k, v in settings.items()})
    return env


def run_check(env, *args, timeout=60):
    return subprocess.run(["bash", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=timeout)


def stage_lines(out):
    lines = [line.split("\t") for line in (out / "stages.txt").read_text().splitlines()]
    assert all(len(fields) == 4 for fields in lines), lines
    return {name: (status, float(seconds.removesuffix(" s")), files.split() if files != "-" else [])
            for name, status, seconds, files in lines}, [fields[0] for fields in lines]


def trace_events(trace):
    events = [line.split() for line in (trace / "trace").read_text().splitlines()]
    return [(kind, stage, float(when)) for kind, stage, when in events]


def test_stages_in_order_one_at_a_time_killed_stages_keep_their_files(tmp_path):
    env = environment(tmp_path, GPU_CHECK_BUDGET_SETUP=2, GPU_CHECK_BUDGET_DOCTOR=2, GPU_CHECK_BUDGET_AUDIT=2,
                      GPU_CHECK_BUDGET_MATRIX=2, GPU_CHECK_BUDGET_OVERHEAD=2, GPU_CHECK_TOTAL=100,
                      FAKE_HANG="doctor_probe", FAKE_HANG_NO_TERM="matrix_0.18.9", FAKE_LEAK="setup",
                      FAKE_EXIT="audit_zero2_offload_ga4_bf16=3 audit_zero2_ga4_bf16=1")
    started = time.monotonic()
    proc = run_check(env)
    wall = time.monotonic() - started
    out, trace = tmp_path / "out", tmp_path / "trace"
    assert proc.returncode == 124, proc.stdout + proc.stderr  # the first failure: doctor_probe's time limit
    lines, order = stage_lines(out)
    assert order == STAGES
    assert lines["doctor_probe"][0] == "exit 124 (time limit 2 s)"
    assert lines["matrix_0.18.9"][0] == "exit 124 (time limit 2 s)"  # ignored SIGTERM: SIGKILL at the budget's end
    assert lines["audit_zero2_offload_ga4_bf16"][0] == "exit 3 (failed)"
    assert lines["audit_zero2_ga4_bf16"][0] == "exit 1 (ok)"  # `hit`: a finished audit
    for name in ("setup", "matrix_0.19.8", "overhead"):
        assert lines[name][0] == "exit 0"
    for name in ("doctor_probe", "matrix_0.18.9"):
        assert 1.4 <= lines[name][1] <= 3.0, lines[name]
    # What each stage wrote, killed or not, stays and is listed; empty files are removed.
    for name in STAGES:
        assert (out / f"{name}.partial").read_text() == "written before any kill\n"
        assert lines[name][2] == sorted([f"{name}.log", f"{name}.partial"]), lines[name]
        assert not (out / f"{name}.empty").exists()
    # In order, one at a time: no stage starts before the previous one ended, killed ones included
    # (their last tick is the last sign of life of the process group).
    events = trace_events(trace)
    starts = [(stage, when) for kind, stage, when in events if kind == "start"]
    assert [stage for stage, _ in starts] == STAGES
    ends = {stage: when for kind, stage, when in events if kind == "end"}
    for stage in ("doctor_probe", "matrix_0.18.9"):
        assert stage not in ends
        ticks = [float(t) for t in (trace / f"ticks.{stage}").read_text().split()]
        ends[stage] = max(ticks)
    for (previous, _), (following, start) in zip(starts, starts[1:]):
        assert start >= ends[previous], (previous, following)
    assert ends["doctor_probe"] - dict(starts)["doctor_probe"] < 2.2
    # A process the setup stage left behind was stopped with its stage.
    time.sleep(0.6)
    assert not list(trace.glob("leaked.*"))
    assert (out / "wall.txt").read_text().startswith("gpu_check: ")
    assert wall < 15


def test_total_budget_skips_what_no_longer_fits(tmp_path):
    env = environment(tmp_path, GPU_CHECK_TOTAL=4, GPU_CHECK_BUDGET_SETUP=2, GPU_CHECK_BUDGET_DOCTOR=2,
                      GPU_CHECK_BUDGET_AUDIT=5, GPU_CHECK_BUDGET_MATRIX=1, GPU_CHECK_BUDGET_OVERHEAD=1,
                      FAKE_SLEEP="setup=1 doctor_probe=1")
    proc = run_check(env)
    assert proc.returncode == 124, proc.stdout + proc.stderr
    lines, order = stage_lines(tmp_path / "out")
    assert order == STAGES  # every stage has its line, run or skipped
    for name in ("audit_zero2_offload_ga4_bf16", "audit_zero2_ga4_bf16"):  # 5 s: past 4 s, from about 2 s on
        assert lines[name][0].startswith("skipped: no time left (needs 5 s, "), lines[name]
        assert lines[name][2] == []
    for name in ("setup", "doctor_probe", "matrix_0.18.9", "matrix_0.19.8", "overhead"):  # later, smaller: fit
        assert lines[name][0] == "exit 0", lines[name]
    ran = [stage for kind, stage, _ in trace_events(tmp_path / "trace") if kind == "start"]
    assert ran == ["setup", "doctor_probe", "matrix_0.18.9", "matrix_0.19.8", "overhead"]


def test_failed_setup_skips_the_rest(tmp_path):
    proc = run_check(environment(tmp_path, FAKE_EXIT="setup=7"))
    assert proc.returncode == 7
    lines, order = stage_lines(tmp_path / "out")
    assert order == STAGES
    assert lines["setup"][0] == "exit 7 (failed)"
    assert all(lines[name][0] == "skipped: setup failed" for name in STAGES[1:])


def test_setup_skipped_for_time_skips_the_rest(tmp_path):
    proc = run_check(environment(tmp_path, GPU_CHECK_TOTAL=10, GPU_CHECK_BUDGET_SETUP=11, GPU_CHECK_BUDGET_MATRIX=2))
    assert proc.returncode == 124
    lines, order = stage_lines(tmp_path / "out")
    assert order == STAGES and lines["setup"][0].startswith("skipped: no time left")
    assert all(lines[name][0] == "skipped: setup failed" for name in STAGES[1:])


def test_sigterm_stops_the_running_stage_and_says_so(tmp_path):
    env = environment(tmp_path, FAKE_HANG="setup", GPU_CHECK_BUDGET_SETUP=30)
    proc = subprocess.Popen(["bash", SCRIPT], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ticks = tmp_path / "trace" / "ticks.setup"
    deadline = time.monotonic() + 10
    while not (ticks.exists() and ticks.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the stage is running
    proc.send_signal(signal.SIGTERM)  # the lease ends
    output, _ = proc.communicate(timeout=10)
    assert proc.returncode == 143, output
    stopped = time.time()
    lines, order = stage_lines(tmp_path / "out")
    assert order == ["setup"] and lines["setup"][0] == "exit 143 (interrupted)"
    assert (tmp_path / "out" / "setup.partial").exists()
    time.sleep(0.3)
    assert max(float(t) for t in ticks.read_text().split()) < stopped  # the stage's processes are gone


def test_dry_run_prints_the_commands_the_stages_run(tmp_path):
    env = environment(tmp_path)
    for key in [k for k in env if k.startswith("GPU_CHECK_")]:
        del env[key]  # the defaults
    dry = run_check(env, "--dry-run")
    assert dry.returncode in (0, 1), dry.stderr  # 1: release folders or wheels missing here (run --prepare)
    plan = re.findall(r"^stage (\S+) \((\d+) s\): (.*)$", dry.stdout, re.M)
    assert [name for name, _, _ in plan] == STAGES
    budgets = {name: int(budget) for name, budget, _ in plan}
    assert sum(budgets.values()) <= 360
    assert re.search(rf"^budgets: {sum(budgets.values())} s in all, total limit 360 s", dry.stdout, re.M)
    assert f"out: {tmp_path / 'out'}" in dry.stdout

    env["GPU_CHECK_FAKE_CMD"] = environment(tmp_path)["GPU_CHECK_FAKE_CMD"]
    proc = run_check(env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trace = tmp_path / "trace"
    for name, budget, command in plan:
        assert (trace / f"command.{name}").read_text() == command + "\n"
        assert int((trace / f"budget.{name}").read_text()) == budgets[name]

    commands = {name: command for name, _, command in plan}
    out = str(tmp_path / "out")
    assert "python3 -m sftrl_patches.doctor --probe --json" in commands["doctor_probe"]
    assert f"> {out}/doctor_probe_0.18.9.json" in commands["doctor_probe"]
    assert f"{out}/doctor_probe_0.18.9.txt" in commands["doctor_probe"]
    assert "PYTHONPATH=.ds-releases/0.18.9:" in commands["doctor_probe"]
    for config in ("zero2_offload_ga4_bf16", "zero2_ga4_bf16"):
        assert re.search(r"python3 -m sftrl_patches\.doctor audit --probe --json --probe-timeout \d+ "
                         rf"--versions deepspeed==0\.18\.9 --config benchmarks/gpu_configs/{config}\.json "
                         rf"> {re.escape(out)}/audit_probe_{config}\.json$", commands[f"audit_{config}"])
    for version in ("0.18.9", "0.19.8"):
        assert re.search(rf"deepspeed_matrix\.py --versions {re.escape(version)} .*--out {re.escape(out)} "
                         rf"--name deepspeed_matrix_{re.escape(version)}$", commands[f"matrix_{version}"])
    assert commands["overhead"].startswith("python3 benchmarks/overhead.py ")


@pytest.mark.parametrize("name, expected", [
    ("zero2_offload_ga4_bf16", {"device": "cpu"}),
    ("zero2_ga4_bf16", None),
])
def test_held_configs(name, expected):
    with open(os.path.join(ROOT, "benchmarks", "gpu_configs", f"{name}.json")) as handle:
        config = json.load(handle)
    assert config["zero_optimization"]["stage"] == 2
    assert config["zero_optimization"].get("offload_optimizer") == expected
    assert config["gradient_accumulation_steps"] == 4 and config["bf16"]["enabled"] is True
    assert config["train_micro_batch_size_per_gpu"] == 1


def test_script_parses_and_rejects_bad_budgets(tmp_path):
    assert subprocess.run(["bash", "-n", SCRIPT]).returncode == 0
    proc = run_check(environment(tmp_path, GPU_CHECK_BUDGET_MATRIX="1.5"), "--dry-run")
    assert proc.returncode == 2 and "GPU_CHECK_BUDGET_MATRIX" in proc.stderr
