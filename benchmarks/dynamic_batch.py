"""OpenRLHF dynamic batching on OpenRLHF's own ppo_train: what reaches the optimizer, and what the fix costs.

    python benchmarks/dynamic_batch.py               # the matrix below, 5 interleaved repeats (about 4 min)
    python benchmarks/dynamic_batch.py --repeats 1   # accuracy only

Runs tests/openrlhf_dynamic_child.py (3 optimizer steps, 2-4 micro-batches of uneven length per
step, fp32, SGD) for the actor and the critic on each (OpenRLHF, DeepSpeed, ranks, offload) row,
with none of this package's patches, with its DeepSpeed patches only, and with all of them, and
writes results/dynamic_batch.{json,md}: per configuration, the worst step's distance from the
step's token-mean gradient, the micro-batch weights of the first step, the leak (the part of an
update no micro-batch of its step explains), and the median ppo_train time patched / unpatched.
Needs the release folders .ci/run installs (.orl-releases/, .ds-releases/).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import deepspeed_releases  # noqa: E402
from sftrl_patches.probes import free_port, launch_command  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CHILD = os.path.join(ROOT, "tests", "openrlhf_dynamic_child.py")
STAND_INS = os.path.join(ROOT, "examples", "openrlhf_cpu", "stand_ins")
# (OpenRLHF, the DeepSpeed it pins or one of that window, ranks, --adam_offload)
ROWS = [("0.9.10", "0.18.6", 2, False), ("0.9.10", "0.18.9", 1, True), ("0.10.3", "0.18.9", 1, False),
        ("0.11.2", "0.19.6", 1, False), ("0.11.2", "0.19.6", 1, True)]
CONFIGS = ("unpatched", "deepspeed_only", "patched")


def child_env(openrlhf, deepspeed, ranks):
    folder = os.path.join(ROOT, ".orl-releases", openrlhf)
    if not os.path.isdir(os.path.join(folder, "openrlhf")):
        raise SystemExit(f"OpenRLHF {openrlhf} is not in .orl-releases/ (run .ci/run, or pip install --no-deps "
                         f"--target .orl-releases/{openrlhf} openrlhf=={openrlhf})")
    if not deepspeed_releases.is_installed(deepspeed):
        raise SystemExit(f"DeepSpeed {deepspeed}: python benchmarks/deepspeed_releases.py install {deepspeed}")
    env = deepspeed_releases.child_env(deepspeed)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, STAND_INS, folder, env.get("PYTHONPATH")]))
    env.update(DS_ACCELERATOR="cpu", PYTHONWARNINGS="ignore", SFTRL_PATCHES_DISABLE="", HF_HUB_OFFLINE="1")
    if ranks == 1:  # what torch.distributed.run would give a single process
        env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    return env


def run_row(openrlhf, deepspeed, ranks, offload, trainer, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        args = [CHILD, "--trainer", trainer, "--repeats", str(repeats), "--out", out] + (["--offload"] if offload else [])
        proc = subprocess.run(launch_command(sys.executable, ranks, args), env=child_env(openrlhf, deepspeed, ranks),
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"child failed for {openrlhf}/{deepspeed}/{trainer}:\n{proc.stderr[-3000:]}")
        with open(out, encoding="utf-8") as handle:
            return json.load(handle)


def summarise(result):
    row = {}
    for config in CONFIGS:
        steps = result[config]["steps"]
        row[config] = {"max_relative_diff": max(s["relative_diff"] for s in steps),
                       "max_abs_diff": max(s["max_abs_diff"] for s in steps),
                       "first_step_weights": steps[0]["weights"],
                       "leak": [round(s["residual"], 4) for s in steps],
                       "micro_batches": [s["micro_batches"] for s in steps],
                       "seconds": result[config]["ppo_train_seconds"]}
    ratios = [p / u for p, u in zip(row["patched"]["seconds"], row["unpatched"]["seconds"])]
    row["time_ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    return row


def markdown(rows, command, wall):
    lines = [f"# OpenRLHF dynamic batching on its own ppo_train (`{command}`, {wall:.0f} s)", "",
             "3 optimizer steps, fp32. diff: the worst step's |update - token-mean gradient| / |token-mean gradient|; "
             "weights: least-squares share of each micro-batch in step 1 (1 each is right); leak: per step, the "
             "part of the update no micro-batch of its step explains; time: median ppo_train seconds patched / "
             "unpatched [min, max] over the repeats.", "",
             "| OpenRLHF | DeepSpeed | ranks | offload | trainer | unpatched: diff, weights, leak | DeepSpeed patches only: diff "
             "| patched: diff (max abs) | time patched/unpatched |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        u, d, p, t = r["unpatched"], r["deepspeed_only"], r["patched"], r["time_ratio"]
        lines.append(f"| {r['openrlhf']} | {r['deepspeed']} | {r['ranks']} | {'yes' if r['offload'] else 'no'} | "
                     f"{r['trainer']} | {u['max_relative_diff']:.2f}, {u['first_step_weights']}, {u['leak']} | "
                     f"{d['max_relative_diff']:.2g} | {p['max_relative_diff']:.1e} ({p['max_abs_diff']:.1e}) | "
                     f"{t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}] |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per configuration (timing)")
    parser.add_argument("--trainers", default="actor,critic")
    options = parser.parse_args(argv)
    started = time.time()
    rows = []
    for openrlhf, deepspeed, ranks, offload in ROWS:
        for trainer in options.trainers.split(","):
            print(f"{openrlhf} / DeepSpeed {deepspeed} / {ranks} rank(s) / offload {offload} / {trainer}", flush=True)
            summary = summarise(run_row(openrlhf, deepspeed, ranks, offload, trainer, options.repeats))
            rows.append(dict(openrlhf=openrlhf, deepspeed=deepspeed, ranks=ranks, offload=offload, trainer=trainer,
                             **summary))
    wall = time.time() - started
    command = "python benchmarks/dynamic_batch.py" + (f" --repeats {options.repeats}" if options.repeats != 5 else "")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "dynamic_batch.json"), "w") as handle:
        json.dump({"command": command, "wall_seconds": round(wall), "rows": rows}, handle, indent=1)
    text = markdown(rows, command, wall)
    with open(os.path.join(RESULTS, "dynamic_batch.md"), "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
