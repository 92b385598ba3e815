"""What the patches cost: step time of patched 0.18.9 against unpatched 0.18.9 and upstream 0.19.x,
side by side in one run; the wall time `import sftrl_patches` adds to a bare interpreter; and the
doctor's static and --probe wall times. Writes benchmarks/results/overhead.{json,md}.

    python benchmarks/overhead.py [--affected 0.18.9] [--fixed 0.19.8] [--steps 60] [--repeats 3]

Targets: patched / upstream step time <= 1.02; import <= 15 ms; static doctor <= 1 s; probe <= 60 s.
The step benchmark uses a ~1M-parameter MLP, ZeRO-2, offload to CPU, GA 8, fp32, one CPU rank.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import deepspeed_releases  # noqa: E402

STEP_CHILD = r"""
import json, sys, time
from sftrl_patches.probes.deepspeed_offload import prepare_environment, skip_shm_build
prepare_environment()
import sftrl_patches, torch, deepspeed
skip_shm_build()
import logging; logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
deepspeed.init_distributed(dist_backend="gloo", verbose=False)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(512, 1024), torch.nn.Tanh(), torch.nn.Linear(1024, 512))
config = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 8, "gradient_clipping": 0.0,
          "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": False}},
          "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False, "steps_per_print": 1 << 30}
engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=1e-3), config=config)
x, y = torch.randn(8, 512), torch.randn(8, 512)
def step():
    for _ in range(8):
        engine.backward(torch.nn.functional.mse_loss(engine(x), y)); engine.step()
for _ in range(5): step()
times = []
for _ in range(int(sys.argv[1])):
    t = time.perf_counter(); step(); times.append(time.perf_counter() - t)
print(json.dumps({"state": sftrl_patches.status("deepspeed-offload-ga-drop").state, "times": times}))
"""


def step_times(version, patched, steps):
    env = deepspeed_releases.child_env(version)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env["PYTHONPATH"]])
    env["SFTRL_PATCHES_DISABLE"] = "" if patched else "1"
    env["PYTHONWARNINGS"] = "ignore"
    out = subprocess.run([sys.executable, "-c", STEP_CHILD, str(steps)], env=env, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def wall(command, env=None, runs=1):
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - started)
    return times


def import_cost(runs):
    env = dict(os.environ, PYTHONPATH=ROOT)
    bare = [sys.executable, "-c", "pass"]
    armed = [sys.executable, "-c", "import sftrl_patches"]
    pairs = [(wall(bare, env)[0], wall(armed, env)[0]) for _ in range(runs)]  # interleaved against drift
    # -X importtime measures the import itself, independent of interpreter start-up noise.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import sftrl_patches"], env=env,
                          capture_output=True, text=True)
    cumulative_us = next(int(line.split("|")[1]) for line in proc.stderr.splitlines()
                         if line.rstrip().endswith("| sftrl_patches"))
    return {"bare_median_ms": 1000 * statistics.median(p[0] for p in pairs),
            "with_import_median_ms": 1000 * statistics.median(p[1] for p in pairs),
            "added_median_ms": 1000 * statistics.median(p[1] - p[0] for p in pairs),
            "importtime_cumulative_ms": cumulative_us / 1000, "runs": runs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--affected", default="0.18.9")
    parser.add_argument("--fixed", default="0.19.8")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the three step configs")
    parser.add_argument("--import-runs", type=int, default=40)
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    for version in (args.affected, args.fixed):
        deepspeed_releases.install(version)

    configs = {"unpatched": (args.affected, False), "patched": (args.affected, True), "upstream": (args.fixed, True)}
    samples = {name: [] for name in configs}
    states = {}
    for _ in range(args.repeats):  # interleave so machine noise hits every config alike
        for name, (version, patched) in configs.items():
            result = step_times(version, patched, args.steps)
            samples[name].extend(result["times"])
            states[name] = result["state"]
    step = {name: {"median_ms": 1000 * statistics.median(t), "mean_ms": 1000 * statistics.fmean(t),
                   "state": states[name], "n": len(t)} for name, t in samples.items()}
    ratios = {"patched_over_upstream": step["patched"]["median_ms"] / step["upstream"]["median_ms"],
              "patched_over_unpatched": step["patched"]["median_ms"] / step["unpatched"]["median_ms"]}

    doctor_env = deepspeed_releases.child_env(args.affected)
    doctor_env["PYTHONPATH"] = os.pathsep.join([ROOT, doctor_env["PYTHONPATH"]])
    doctor = [sys.executable, "-m", "sftrl_patches.doctor"]
    doctor_static = wall(doctor, doctor_env, runs=5)
    doctor_probe = wall(doctor + ["--probe"], doctor_env, runs=1)
    result = {
        "meta": {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                 "python": platform.python_version(),
                 "command": " ".join(["python", "benchmarks/overhead.py", *(argv if argv is not None else sys.argv[1:])])},
        "step": step, "ratios": ratios, "import": import_cost(args.import_runs),
        "doctor": {"static_median_s": statistics.median(doctor_static), "probe_s": doctor_probe[0]},
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "overhead.json"), "w") as handle:
        json.dump(result, handle, indent=1)
    with open(os.path.join(args.out, "overhead.md"), "w") as handle:
        handle.write(to_markdown(result, args))
    print(to_markdown(result, args))
    return 0


def to_markdown(r, args):
    s, i, d = r["step"], r["import"], r["doctor"]
    return "\n".join([
        "# Overhead", "",
        f"Measured {r['meta']['date']} on {r['meta']['machine']}, Python {r['meta']['python']}. "
        f"Command: `{r['meta']['command']}`.", "",
        f"Optimizer step (ZeRO-2, offload, GA 8, ~1M-parameter MLP, one CPU rank; median of {s['patched']['n']} "
        "steps, configs interleaved):", "",
        "| config | DeepSpeed | patch state | median step (ms) |", "|---|---|---|---|",
        f"| unpatched | {args.affected} | {s['unpatched']['state']} | {s['unpatched']['median_ms']:.2f} |",
        f"| patched | {args.affected} | {s['patched']['state']} | {s['patched']['median_ms']:.2f} |",
        f"| upstream fix | {args.fixed} | {s['upstream']['state']} | {s['upstream']['median_ms']:.2f} |", "",
        f"- patched ÷ upstream: **{r['ratios']['patched_over_upstream']:.3f}** (target ≤ 1.02)",
        f"- patched ÷ unpatched: {r['ratios']['patched_over_unpatched']:.3f}",
        f"- `import sftrl_patches`: {i['importtime_cumulative_ms']:.1f} ms by `-X importtime`; "
        f"{i['added_median_ms']:.1f} ms added to a bare interpreter's wall time (median of {i['runs']} "
        f"interleaved pairs; bare {i['bare_median_ms']:.1f} ms) (target ≤ 15 ms)",
        f"- `sftrl-doctor` static: {d['static_median_s']:.2f} s (target ≤ 1 s)",
        f"- `sftrl-doctor --probe`: {d['probe_s']:.1f} s (target ≤ 60 s on two cores)", ""])


if __name__ == "__main__":
    sys.exit(main())
