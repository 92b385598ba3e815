"""What the patches cost: for each DeepSpeed patch, the step time of the patched affected release
against the upstream-fixed way on the same configuration, interleaved; the wall time
`import sftrl_patches` adds to a bare interpreter; and the doctor's static and --probe wall times.
Writes benchmarks/results/overhead.{json,md}.

    python benchmarks/overhead.py [--steps 30] [--repeats 5] [--blocks 20] [--only offload-ga-drop ...]

Each scenario runs a ~1M-parameter MLP, fp32, one CPU rank, 8 micro-batches per optimizer step:
  offload-ga-drop         ZeRO-2 + offload, GA 8: patched 0.18.9 vs 0.19.8 (upstream fix)
  offload-multi-backward  ZeRO-2 + offload, GA 1, 8 backward() with the boundary set: 0.18.9 vs 0.19.8
  zero2-ga-7718           ZeRO-2, no offload, GA 8: patched 0.17.6 vs 0.18.6 (fixed since 0.18.3)
  offload-manual-accumulation  ZeRO-2 + offload, GA 1, 8 backward(), no boundary: patched 0.19.8 vs
                          the documented call pattern (boundary set) on 0.19.8 (no upstream fix exists)
  offload-manual-accumulation-same-calls  the same, against the same calls unpatched (which leak)
  bf16-last-micro-batch-7985  bf16 + ZeRO-1 + fp32 grad accumulation (BF16_Optimizer), GA 8: patched
                          0.18.9 vs 0.19.8 (one rank: the cost of the reordering, not its effect)
  zero0-bf16-unfused-7837  ZeRO-0 + bf16 (FP16_UnfusedOptimizer), GA 8: patched 0.17.6 vs 0.18.6
  loss-scale-unapplied    ZeRO-0 + fp16, static loss scale 128 (FP16_UnfusedOptimizer), GA 8: patched 0.19.8
                          vs 0.18.2, the last release that scaled the loss inside the wrapper (no upstream fix)
--only runs some scenarios and keeps the others' rows from the committed file, each with the date and
command that measured it.
A repeat runs both sides once, alternating which goes first; the ratio is patched / upstream of the
two medians; the table gives the median ratio over the repeats with its min and max. Separate
processes differ by far more than any patch costs on this machine, so each scenario also runs once
in a single process with the patch applied and reverted between blocks of steps (--blocks).
Targets: patched / upstream <= 1.02; import <= 15 ms; static doctor <= 1 s; probe <= 60 s.
"""
import argparse
import compileall
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import deepspeed_releases  # noqa: E402

STEP_CHILD = r"""
import json, sys, time
from sftrl_patches.probes.deepspeed_offload import allow_fp16_on_cpu, prepare_environment, skip_shm_build
prepare_environment()
import sftrl_patches, torch, deepspeed
skip_shm_build()
if sys.argv[2] == "z0_fp16_ga":
    allow_fp16_on_cpu()  # the CPU accelerator refuses fp16 where oneDNN lacks its kernels; torch computes it
import logging; logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
deepspeed.init_distributed(dist_backend="gloo", verbose=False)
steps, mode, offload, patch = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", sys.argv[4]
width, rows, blocks = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(width, 2 * width), torch.nn.Tanh(), torch.nn.Linear(2 * width, width))
bf16 = mode == "bf16_ga"  # bf16 + ZeRO-1 + fp32 grad accumulation: BF16_Optimizer
zero = {"stage": 1 if bf16 else 2, "contiguous_gradients": True, "overlap_comm": False}
if mode.startswith("z0_"):  # ZeRO-0 in 16 bits: DeepSpeed's FP16_UnfusedOptimizer wraps the client's SGD
    zero = {"stage": 0}
if offload:
    zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
config = {"train_micro_batch_size_per_gpu": rows, "gradient_accumulation_steps": 8 if mode.endswith("ga") else 1,
          "gradient_clipping": 0.0, "zero_optimization": zero,
          "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False, "steps_per_print": 1 << 30}
if bf16:
    config.update(bf16={"enabled": True}, data_types={"grad_accum_dtype": "fp32"})
if mode == "z0_bf16_ga":
    config["bf16"] = {"enabled": True}
if mode == "z0_fp16_ga":  # a static scale: a dynamic one would skip overflowing steps, another workload
    config["fp16"] = {"enabled": True, "loss_scale": 128}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1e-3), config=config)
dtype = next(engine.module.parameters()).dtype
x, y = torch.randn(rows, width, device=engine.device, dtype=dtype), torch.randn(rows, width, device=engine.device)
def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()
def step():
    for i in range(8):
        if mode == "multi_backward":
            engine.set_gradient_accumulation_boundary(i == 7)
        engine.backward(torch.nn.functional.mse_loss(engine(x).float(), y))
        if mode.endswith("ga"):
            engine.step()
    if not mode.endswith("ga"):
        engine.step()
def timed(count):
    times = []
    for _ in range(count):
        sync(); t = time.perf_counter(); step(); sync(); times.append(time.perf_counter() - t)
    return times
state = sftrl_patches.status(patch).state
for _ in range(5): step()
if not blocks:
    print(json.dumps({"state": state, "times": timed(steps)}))
    sys.exit(0)
# Same process: the patch switched on and off between blocks of `steps` steps, in the order on-off, off-on,
# ..., so that drift over the run falls on both sides alike; one untimed step after each switch.
times = {"on": [], "off": []}
for block in range(blocks):
    for side in (("on", "off") if block % 2 == 0 else ("off", "on")):
        switched = (sftrl_patches.apply if side == "on" else sftrl_patches.revert)(patch).state
        if switched != ("patched" if side == "on" else "reverted"):
            sys.exit(f"switching {patch} {side} left it {switched}")
        step()
        times[side].append(timed(steps))
print(json.dumps({"state": state, "on": times["on"], "off": times["off"]}))
"""

# name -> (mode, offload, (affected release, patched), (upstream-fixed release, its call mode))
SCENARIOS = {
    "offload-ga-drop": ("ga", True, "0.18.9", ("0.19.8", "ga")),
    "offload-multi-backward": ("multi_backward", True, "0.18.9", ("0.19.8", "multi_backward")),
    "zero2-ga-7718": ("ga", False, "0.17.6", ("0.18.6", "ga")),
    "offload-manual-accumulation": ("no_boundary", True, "0.19.8", ("0.19.8", "multi_backward")),
    # the same calls unpatched (they leak): what the patch itself adds to that call pattern
    "offload-manual-accumulation-same-calls": ("no_boundary", True, "0.19.8", ("0.19.8", "no_boundary")),
    "bf16-last-micro-batch-7985": ("bf16_ga", False, "0.18.9", ("0.19.8", "bf16_ga")),
    "zero0-bf16-unfused-7837": ("z0_bf16_ga", False, "0.17.6", ("0.18.6", "z0_bf16_ga")),
    # fp16 at ZeRO-0 is affected from 0.18.3 on with no fix: 0.18.2 is the way it worked before
    "loss-scale-unapplied": ("z0_fp16_ga", False, "0.19.8", ("0.18.2", "z0_fp16_ga")),
}
PATCH_OF = {"offload-manual-accumulation-same-calls": "offload-manual-accumulation"}  # else the scenario's name


def step_times(version, patched, steps, mode, offload, patch, width=512, rows=8, blocks=0):
    env = deepspeed_releases.child_env(version)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env["PYTHONPATH"]])
    env["SFTRL_PATCHES_DISABLE"] = "" if patched else "1"
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run([sys.executable, "-c", STEP_CHILD, str(steps), mode, "1" if offload else "0",
                           "deepspeed-" + patch, str(width), str(rows), str(blocks)], env=env, capture_output=True, text=True)
    lines = proc.stdout.strip().splitlines()
    if not lines or not lines[-1].startswith("{"):
        raise RuntimeError(f"step child for {version} exited {proc.returncode}: {proc.stderr[-2000:]}")
    # The timings are printed before the interpreter exits; an abort at exit (seen once with bf16 on
    # CPU) is recorded, not fatal.
    return dict(json.loads(lines[-1]), exit_code=proc.returncode)


def measure_scenario(name, steps, repeats, width=512, rows=8):
    mode, offload, affected, (fixed, fixed_mode) = SCENARIOS[name]
    ratios, medians, states, aborted = [], {"patched": [], "upstream": []}, {}, []
    for repeat in range(repeats):
        sides = [("patched", affected, mode), ("upstream", fixed, fixed_mode)]
        if repeat % 2:
            sides.reverse()  # alternate the order so drift hits both sides alike
        got = {}
        for side, version, side_mode in sides:
            result = step_times(version, side == "patched", steps, side_mode, offload, PATCH_OF.get(name, name),
                                width, rows)
            got[side] = statistics.median(result["times"])
            states[side] = result["state"]
            if result["exit_code"]:
                aborted.append(f"{side} {version}: exit {result['exit_code']}")
        for side in got:
            medians[side].append(1000 * got[side])
        ratios.append(got["patched"] / got["upstream"])
    return {"mode": mode, "offload": offload, "affected": affected, "fixed": fixed, "fixed_mode": fixed_mode,
            "states": states, "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios), "patched_ms": statistics.median(medians["patched"]),
            "upstream_ms": statistics.median(medians["upstream"]), "repeats": repeats, "steps": steps,
            "aborted_at_exit": aborted,
            "parameters": 4 * width * width + 3 * width, "rows": rows}


def measure_same_process(name, steps, blocks, width=512, rows=8):
    """The patch's own cost: the affected release in one process, the patch applied and reverted between
    blocks of steps. The other side is the unpatched release: for #7985 on one rank that is correct and
    does the same work; for the others it is the bug's (cheaper or dearer) work."""
    mode, offload, affected, _ = SCENARIOS[name]
    result = step_times(affected, True, steps, mode, offload, PATCH_OF.get(name, name), width, rows, blocks)
    pairs = [statistics.median(on) / statistics.median(off) for on, off in zip(result["on"], result["off"])]
    on_ms = 1000 * statistics.median(t for block in result["on"] for t in block)
    off_ms = 1000 * statistics.median(t for block in result["off"] for t in block)
    return {"state": result["state"], "on_ms": on_ms, "off_ms": off_ms, "ratio": on_ms / off_ms,
            "block_ratio_min": min(pairs), "block_ratio_max": max(pairs), "blocks": blocks, "steps": steps,
            "exit_code": result["exit_code"]}


WRAPPER_CALLS, WRAPPER_REPEATS = 100_000, 7


def epilogue_wrapper_cost_us(calls=WRAPPER_CALLS, repeats=WRAPPER_REPEATS):
    """What the #7985 wrapper adds to one backward() beyond the work it reorders: its own Python, timed
    around stand-ins whose epilogue does nothing (best of `repeats`, per call, in microseconds)."""
    import timeit
    from sftrl_patches.patches.deepspeed_bf16_epilogue import wrap_backward_epilogue

    class BF16_Optimizer:  # the wrapper acts on this class name only
        immediate_grad_update = False

        def backward_epilogue(self):
            pass

    class Engine:
        optimizer = BF16_Optimizer()

    def original(self):  # 0.18.x's body, less the all-reduce: it calls the optimizer's epilogue
        self.optimizer.backward_epilogue()

    wrapped, engine = wrap_backward_epilogue(original), Engine()
    best = {name: min(timeit.repeat(lambda: function(engine), number=calls, repeat=repeats)) / calls
            for name, function in (("original", original), ("wrapped", wrapped))}
    return 1e6 * (best["wrapped"] - best["original"])


def wall(command, env=None, runs=1, cwd=None):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return times


def import_cost(runs):
    """The import as a user gets it: from a copy of the package compiled the way `pip install` leaves it
    (this machine sets PYTHONDONTWRITEBYTECODE, so the working tree would be recompiled at every start)."""
    with tempfile.TemporaryDirectory(prefix="sftrl-import-") as tmp:
        shutil.copytree(os.path.join(ROOT, "sftrl_patches"), os.path.join(tmp, "sftrl_patches"),
                        ignore=shutil.ignore_patterns("__pycache__"))
        compileall.compile_dir(os.path.join(tmp, "sftrl_patches"), quiet=1)
        compiled = _import_timings(dict(os.environ, PYTHONPATH=tmp), runs, cwd=tmp)  # cwd: not the source tree
    from_source = _import_timings(dict(os.environ, PYTHONPATH=ROOT, PYTHONDONTWRITEBYTECODE="1"), 0, cwd=ROOT)
    return dict(compiled, source_importtime_cumulative_ms=from_source["importtime_cumulative_ms"])


def _import_timings(env, runs, cwd):
    bare = [sys.executable, "-c", "pass"]
    armed = [sys.executable, "-c", "import sftrl_patches"]
    pairs = [(wall(bare, env, cwd=cwd)[0], wall(armed, env, cwd=cwd)[0]) for _ in range(runs)]  # interleaved
    # -X importtime measures the import itself, independent of interpreter start-up noise.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sftrl_patches"], env=env, cwd=cwd,
                          capture_output=True, text=True)
    cumulative_us = next(int(line.split("|")[1]) for line in proc.stderr.splitlines()
                         if line.rstrip().endswith("| sftrl_patches"))
    timings = {"importtime_cumulative_ms": cumulative_us / 1000, "runs": runs}
    if pairs:
        timings.update(bare_median_ms=1000 * statistics.median(p[0] for p in pairs),
                       with_import_median_ms=1000 * statistics.median(p[1] for p in pairs),
                       added_median_ms=1000 * statistics.median(p[1] - p[0] for p in pairs))
    return timings


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per child")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds per scenario")
    parser.add_argument("--blocks", type=int, default=20,
                        help="same-process measure: blocks per side, the patch switched on and off between them "
                             "(0: skip it)")
    parser.add_argument("--block-steps", type=int, default=10, help="timed optimizer steps per block")
    parser.add_argument("--only", nargs="+", choices=sorted(SCENARIOS), help="default: every scenario")
    parser.add_argument("--width", type=int, default=512, help="MLP width (hidden = 2x); 512 is ~1M parameters")
    parser.add_argument("--rows", type=int, default=8, help="rows per micro-batch")
    parser.add_argument("--skip-doctor", action="store_true", help="only the step benchmark and the import cost")
    parser.add_argument("--import-runs", type=int, default=40)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    names = args.only or list(SCENARIOS)
    command = " ".join(["python", "benchmarks/overhead.py", *(argv if argv is not None else sys.argv[1:])])
    for name in names:
        for version in (SCENARIOS[name][2], SCENARIOS[name][3][0]):
            deepspeed_releases.install(version)
    scenarios = kept_scenarios(os.path.join(args.out, "overhead.json"), names) if args.only else {}
    for name in names:
        scenarios[name] = measure_scenario(name, args.steps, args.repeats, args.width, args.rows)
        scenarios[name]["measured"] = {"date": time.strftime("%Y-%m-%d"), "command": command}
        print(f"{name}: {scenarios[name]['ratio_median']:.3f} "
              f"[{scenarios[name]['ratio_min']:.3f}, {scenarios[name]['ratio_max']:.3f}]", flush=True)
        if args.blocks and name not in PATCH_OF:  # PATCH_OF rows share their patch's same-process run
            same = scenarios[name]["same_process"] = measure_same_process(name, args.block_steps, args.blocks,
                                                                          args.width, args.rows)
            print(f"{name}, same process, on / off: {same['ratio']:.3f} "
                  f"[{same['block_ratio_min']:.3f}, {same['block_ratio_max']:.3f}]", flush=True)

    doctor_env = deepspeed_releases.child_env("0.18.9")
    doctor_env["PYTHONPATH"] = os.pathsep.join([ROOT, doctor_env["PYTHONPATH"]])
    doctor = [sys.executable, "-m", "sftrl_patches.doctor"]
    doctor_static = [float("nan")] if args.skip_doctor else wall(doctor, doctor_env, runs=5)
    doctor_probe = [float("nan")] if args.skip_doctor else wall(doctor + ["--probe"], doctor_env, runs=1)
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "python": platform.python_version(), "device": _device(),
                 "command": command},
        "scenarios": {name: scenarios[name] for name in SCENARIOS if name in scenarios}, "import": import_cost(args.import_runs),
        "epilogue_wrapper_us": epilogue_wrapper_cost_us(),
        "doctor": {"static_median_s": statistics.median(doctor_static), "probe_s": doctor_probe[0]},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "overhead.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "overhead.md"), "w") as handle:
        handle.write(to_markdown(result))
    print(to_markdown(result))
    return 0


def kept_scenarios(path, rerun):
    """With --only: the other scenarios' rows as the committed file has them, each stamped with the run that
    measured them (rows from before the stamp took the file's own date and command)."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as handle:
        previous = json.load(handle)
    meta = previous["meta"]
    return {name: dict(row, measured=row.get("measured") or {"date": meta["date"], "command": meta["command"]})
            for name, row in previous["scenarios"].items() if name not in rerun and name in SCENARIOS}


def _device():
    probe = "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU')"
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip() or "CPU"


def _same_process_cells(name, scenario):
    same = scenario.get("same_process")
    if same is None:
        return f"– | see {PATCH_OF[name]}" if name in PATCH_OF else "– | –"
    return (f"{same['on_ms']:.2f} / {same['off_ms']:.2f} | **{same['ratio']:.3f}** "
            f"[{same['block_ratio_min']:.3f}, {same['block_ratio_max']:.3f}]")


def to_markdown(r):
    i, d = r["import"], r["doctor"]
    lines = ["# Overhead", "",
             f"Measured {r['meta']['date']} on {r['meta']['machine']}, Python {r['meta']['python']}. "
             f"Command: `{r['meta']['command']}`.", "",
             f"Optimizer step, {next(iter(r['scenarios'].values()))['parameters'] / 1e6:.1f}M-parameter MLP, "
             f"{next(iter(r['scenarios'].values()))['rows']} rows per micro-batch, fp32, ZeRO-2, one rank on "
             f"{r['meta']['device']}, 8 micro-batches per step. Ratio: "
             "patched / upstream-fixed of the median step time, median over the interleaved repeats [min, max]. "
             "bf16-last-micro-batch-7985 runs bf16 + ZeRO-1 (BF16_Optimizer); zero0-bf16-unfused-7837 and "
             "loss-scale-unapplied run ZeRO-0 in bf16 and in fp16 with a static loss scale of 128 "
             "(FP16_UnfusedOptimizer).", "",
             "Same process: the affected release in one process, the patch applied and reverted between blocks "
             "of steps (on-off, off-on, ...); median step with the patch on / off, [min, max] over the block "
             "pairs. Off is the bug's own work: for #7985 on one rank that is correct and the same work in "
             "another order, so the ratio is the wrapper's own cost; for the others it is what the fix costs "
             "over the buggy run.", "",
             "| patch | configuration | patched | upstream-fixed | median step (ms) patched / fixed | ratio [min, max] "
             "| same process: ms on / off | ratio on / off [min, max] |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in r["scenarios"].items():
        config = f"{'offload' if s['offload'] else 'no offload'}, {s['mode']}"
        fixed = s["fixed"] + ("" if s["fixed_mode"] == s["mode"] else f" ({s['fixed_mode']})")
        if s["fixed"] == s["affected"]:
            fixed += ", patch off"  # the same release: the other side runs with SFTRL_PATCHES_DISABLE
        lines.append(f"| {name} | {config} | {s['affected']} ({s['states'].get('patched')}) | {fixed} | "
                     f"{s['patched_ms']:.2f} / {s['upstream_ms']:.2f} | **{s['ratio_median']:.3f}** "
                     f"[{s['ratio_min']:.3f}, {s['ratio_max']:.3f}] | {_same_process_cells(name, s)} |")
    earlier = {}
    for name, s in r["scenarios"].items():
        measured = s.get("measured")
        if measured and (measured["date"], measured["command"]) != (r["meta"]["date"], r["meta"]["command"]):
            earlier.setdefault((measured["date"], measured["command"]), []).append(name)
    for (date, command), names in earlier.items():
        lines += ["", f"Measured earlier, {date}, by `{command}`: {', '.join(names)}."]
    aborted = [f"{name}: {', '.join(s['aborted_at_exit'])}" for name, s in r["scenarios"].items()
               if s.get("aborted_at_exit")]
    if aborted:
        lines += ["", "Children that aborted after printing their timings (kept): " + "; ".join(aborted) + "."]
    lines += ["", "Target: ratio ≤ 1.02.", ""]
    wrapper_us, bf16 = r.get("epilogue_wrapper_us"), r["scenarios"].get("bf16-last-micro-batch-7985")
    if wrapper_us is not None and bf16:
        share = 8 * wrapper_us / (1000 * bf16["patched_ms"])
        lines += [f"bf16-last-micro-batch-7985's wrapper adds {wrapper_us:.2f} µs of its own Python to each "
                  f"backward() (timed around stand-ins whose epilogue does nothing; best of {WRAPPER_REPEATS} × "
                  f"{WRAPPER_CALLS:,} calls): "
                  f"{8 * wrapper_us:.1f} µs per 8-micro-batch step, {100 * share:.3f}% of the "
                  f"{bf16['patched_ms']:.2f} ms step above. The rest of what it runs is 0.19.0's own work in 0.19.0's "
                  "order.", ""]
    lines += [
              f"- `import sftrl_patches`, compiled as `pip install` leaves it: {i['importtime_cumulative_ms']:.1f} ms "
              f"by `-X importtime`; {i['added_median_ms']:.1f} ms added to a bare interpreter's wall time (median "
              f"of {i['runs']} interleaved pairs; bare {i['bare_median_ms']:.1f} ms) (target ≤ 15 ms). From source, "
              f"compiled at every start (PYTHONDONTWRITEBYTECODE): {i['source_importtime_cumulative_ms']:.1f} ms "
              "by `-X importtime`",
              f"- `sftrl-doctor` static: {d['static_median_s']:.2f} s (target ≤ 1 s)",
              f"- `sftrl-doctor --probe`: {d['probe_s']:.1f} s (target ≤ 60 s on two cores)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
