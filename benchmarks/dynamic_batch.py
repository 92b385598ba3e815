"""OpenRLHF dynamic batching on OpenRLHF's own ppo_train: what reaches the optimizer, and what the fix costs.

    python benchmarks/dynamic_batch.py               # the matrix below; two rows timed over 32 repeats (about 4 min)
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
from sftrl_patches.probes import launch_command  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
CHILD = os.path.join(ROOT, "tests", "openrlhf_dynamic_child.py")
STAND_INS = os.path.join(ROOT, "examples", "openrlhf_cpu", "stand_ins")
# (OpenRLHF, the DeepSpeed it pins or one of that window, ranks, --adam_offload)
ROWS = [("0.9.10", "0.18.6", 2, False), ("0.9.10", "0.18.9", 1, True), ("0.9.10", "0.17.6", 1, False),
        ("0.10.3", "0.18.9", 1, False),
        ("0.11.2", "0.19.6", 1, False), ("0.11.2", "0.19.6", 1, True)]
CONFIGS = ("unpatched", "deepspeed_only", "patched")
# Timed (every repeat builds three DeepSpeed engines: the other rows run once, for accuracy):
# 0.9.10 carries the loss window and the boundary, 0.11.2 the boundary alone.
TIMED = {("0.9.10", "0.18.9", 1, True), ("0.11.2", "0.19.6", 1, False)}


def child_env(openrlhf, deepspeed):
    folder = os.path.join(ROOT, ".orl-releases", openrlhf)
    if not os.path.isdir(os.path.join(folder, "openrlhf")):
        raise SystemExit(f"OpenRLHF {openrlhf} is not in .orl-releases/ (run .ci/run, or pip install --no-deps "
                         f"--target .orl-releases/{openrlhf} openrlhf=={openrlhf})")
    if not deepspeed_releases.is_installed(deepspeed):
        raise SystemExit(f"DeepSpeed {deepspeed}: python benchmarks/deepspeed_releases.py install {deepspeed}")
    env = deepspeed_releases.child_env(deepspeed)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, STAND_INS, folder, env.get("PYTHONPATH")]))
    env.update(DS_ACCELERATOR="cpu", PYTHONWARNINGS="ignore", SFTRL_PATCHES_DISABLE="", HF_HUB_OFFLINE="1")
    return env


def run_row(openrlhf, deepspeed, ranks, offload, trainer, repeats):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        args = [CHILD, "--trainer", trainer, "--repeats", str(repeats), "--out", out] + (["--offload"] if offload else [])
        proc = subprocess.run(launch_command(sys.executable, ranks, args), env=child_env(openrlhf, deepspeed),
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0 or not os.path.exists(out):
            raise SystemExit(f"child failed for {openrlhf}/{deepspeed}/{trainer}:\n{proc.stderr[-3000:]}")
        with open(out, encoding="utf-8") as handle:
            return json.load(handle)


def summarise(result):
    row = {}
    for config in CONFIGS:
        steps = result[config]["steps"]
        if result[config].get("error"):
            row[config] = {"error": result[config]["error"].splitlines()[0][:120]}
            continue
        seconds = result[config]["ppo_train_seconds"]
        row[config] = {"max_relative_diff": max(s["relative_diff"] for s in steps),
                       "max_abs_diff": max(s["max_abs_diff"] for s in steps),
                       "first_step_weights": steps[0]["weights"],
                       "leak": [round(s["residual"], 4) for s in steps],
                       "micro_batches": [s["micro_batches"] for s in steps],
                       "seconds_per_step": [t / len(steps) for t in seconds]}
    pairs = []
    if "error" not in row["unpatched"] and "error" not in row["patched"]:
        # seconds[0] ran beside the gradient checks; the ratios pair the later, interleaved repeats
        pairs = list(zip(row["patched"]["seconds_per_step"], row["unpatched"]["seconds_per_step"]))[1:]
    if pairs:
        ratios = [p / u for p, u in pairs]
        row["time_ratio"] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
                             "pairs": len(ratios), "unpatched_step_seconds": statistics.median(u for _, u in pairs)}
    return row


def component_costs(calls=20000):
    """What the patch itself adds, timed in-process without DeepSpeed (the end-to-end ratio above is
    within this machine's noise): the training_step wrapper per micro-batch, and the loss window of
    0.8.6-0.10.2 per micro-batch (token count as a Python float, scale) with a window of 3."""
    import torch
    from types import SimpleNamespace
    from sftrl_patches.loss_window import DynamicStepWindows
    from sftrl_patches.patches.openrlhf_dynamic_batch import wrap_training_step

    class Engine:
        def set_gradient_accumulation_boundary(self, is_boundary):
            self.boundary = is_boundary

        def zero_optimization_stage(self):
            return 2

    def training_step(self, experience, kl_ctl, step):
        return None
    wrapped = wrap_training_step("actor")(training_step)
    flags = [0, 0, 1] * (calls // 3)
    trainer = SimpleNamespace(args=SimpleNamespace(use_dynamic_batch=True), actor=SimpleNamespace(model=Engine()),
                              replay_buffer=SimpleNamespace(dynamic_optimizer_step=flags))
    started = time.perf_counter()
    for step in range(len(flags)):
        wrapped(trainer, None, 0.0, step)
    wrapper = (time.perf_counter() - started) / len(flags)
    started = time.perf_counter()
    for step in range(len(flags)):
        training_step(trainer, None, 0.0, step)
    wrapper -= (time.perf_counter() - started) / len(flags)

    items = [SimpleNamespace(action_mask=torch.ones(1, 300, dtype=torch.bool)) for _ in flags]
    buffer = SimpleNamespace(dynamic_optimizer_step=flags, dynamic_loss_scale=[1 / 3] * len(flags))
    windows = DynamicStepWindows(items, buffer, count=lambda item: item.action_mask.sum().item())
    started = time.perf_counter()
    for _ in windows:
        pass
    window = (time.perf_counter() - started) / len(flags)
    return {"training_step_wrapper_us": wrapper * 1e6, "loss_window_us": window * 1e6}


def _cell(config, text):
    return f"crash: {config['error']}" if "error" in config else text(config)


def markdown(rows, command, wall, costs):
    lines = [f"# OpenRLHF dynamic batching on its own ppo_train (`{command}`, {wall:.0f} s)", "",
             "3 optimizer steps, fp32. diff: the worst step's |update - token-mean gradient| / |token-mean gradient|; "
             "weights: least-squares share of each micro-batch in step 1 (1 each is right); leak: per step, the "
             "part of the update no micro-batch of its step explains; time: ppo_train seconds per optimizer step, "
             "patched / unpatched, median [min, max] over the interleaved repeats after the first (which runs beside "
             "the gradient checks). Patched includes this package's DeepSpeed patches where they apply.", "",
             "| OpenRLHF | DeepSpeed | ranks | offload | trainer | unpatched: diff, weights, leak | DeepSpeed patches only: diff "
             "| patched: diff (max abs) | time patched/unpatched |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("time_ratio")
        unpatched = _cell(r["unpatched"], lambda c: f"{c['max_relative_diff']:.2f}, {c['first_step_weights']}, {c['leak']}")
        deepspeed_only = _cell(r["deepspeed_only"], lambda c: f"{c['max_relative_diff']:.2g}")
        patched = _cell(r["patched"], lambda c: f"{c['max_relative_diff']:.1e} ({c['max_abs_diff']:.1e})")
        timing = f"{t['median']:.3f} [{t['min']:.3f}, {t['max']:.3f}]" if t else "n/a"
        lines.append(f"| {r['openrlhf']} | {r['deepspeed']} | {r['ranks']} | {'yes' if r['offload'] else 'no'} | "
                     f"{r['trainer']} | {unpatched} | {deepspeed_only} | {patched} | {timing} |")
    timed = [r for r in rows if r.get("time_ratio")]
    costs_line = (f"What the patch itself adds per micro-batch, timed in-process without DeepSpeed: the training_step "
                  f"wrapper {costs['training_step_wrapper_us']:.1f} µs; the loss window of 0.8.6-0.10.2 (token count "
                  f"as a Python float, one window of 3 on one rank) {costs['loss_window_us']:.1f} µs.")
    if timed:  # with --repeats 1 nothing is timed end to end
        per_step = 4 * (costs["training_step_wrapper_us"] + costs["loss_window_us"]) * 1e-6
        shortest = min(r["time_ratio"]["unpatched_step_seconds"] for r in timed)
        costs_line += (" Against the unpatched optimizer steps timed above (" + ", ".join(
            f"{r['openrlhf']}/{r['trainer']}: {1e3 * r['time_ratio']['unpatched_step_seconds']:.0f} ms" for r in timed)
            + f", 2-4 micro-batches each) that is at most {per_step / shortest:.5f} of a step, before the window's "
            "one all-reduce per step (and, on a GPU, one device sync per micro-batch for the token count: not "
            "measurable here).")
    lines += ["", costs_line]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=32, help="interleaved repeats per configuration (timing)")
    parser.add_argument("--trainers", default="actor,critic")
    options = parser.parse_args(argv)
    started = time.time()
    rows = []
    for openrlhf, deepspeed, ranks, offload in ROWS:
        for trainer in options.trainers.split(","):
            print(f"{openrlhf} / DeepSpeed {deepspeed} / {ranks} rank(s) / offload {offload} / {trainer}", flush=True)
            repeats = options.repeats if (openrlhf, deepspeed, ranks, offload) in TIMED else 1
            summary = summarise(run_row(openrlhf, deepspeed, ranks, offload, trainer, repeats))
            rows.append(dict(openrlhf=openrlhf, deepspeed=deepspeed, ranks=ranks, offload=offload, trainer=trainer,
                             **summary))
    costs = component_costs()
    wall = time.time() - started
    command = "python benchmarks/dynamic_batch.py" + (f" --repeats {options.repeats}" if options.repeats != 32 else "")
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "dynamic_batch.json"), "w") as handle:
        json.dump({"command": command, "wall_seconds": round(wall), "rows": rows, "component_costs": costs},
                  handle, indent=1)
    text = markdown(rows, command, wall, costs)
    with open(os.path.join(RESULTS, "dynamic_batch.md"), "w") as handle:
        handle.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
