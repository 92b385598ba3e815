"""Run the probe over every DeepSpeed release from 0.15.1 to the newest 0.19.x, with and without
the patches, and write benchmarks/results/deepspeed_matrix.{json,md}.

    python benchmarks/deepspeed_matrix.py                      # every release (installs missing ones)
    python benchmarks/deepspeed_matrix.py --versions 0.18.9 0.19.8 --steps 4
    python benchmarks/deepspeed_matrix.py --rerun-patched 0.18.3 0.18.4   # after a change to the patches

Cases per release, 3 optimizer steps each: ZeRO-1 and ZeRO-2 with offload, GA 4/8, fp32/bf16;
ZeRO-2 offload GA=1 with 4 backward() calls and the boundary set; GA=1 with 4 backward() calls and
the boundary never set (manual accumulation, OpenRLHF's dynamic batching), ZeRO-1/2, with and
without offload; ZeRO-2 without offload GA 4 fp32 and GA 8 bf16 (DeepSpeed #7718); ZeRO-1 bf16 with fp32
accumulation (what asks for BF16_Optimizer); with --cpu-adam, DeepSpeed's own offload optimizer
(DeepSpeedCPUAdam) against torch Adam, in fp32 and with fp16 master weights. With --ranks 2 every
case runs on two gloo ranks (#7985 needs two: `--ranks 2 --only fp32-accum`).
A cell is "ok" when at every step every micro-batch weight is within 0.01 of 1 (and, in fp32, the
parameters match plain PyTorch within 1e-6); "uneven" when already the first step's update is no
one weight per micro-batch (parts of the parameters weighted differently); "leak" when a later
step's update carries what no micro-batch of that step explains; otherwise the weights of the worst
step.
"""
import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deepspeed_releases  # noqa: E402
from sftrl_patches.probes import case_is_correct, run_child  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def matrix_cases(steps, cpu_adam=False, ranks=1):
    cases = []
    for stage in (1, 2):
        for dtype in ("fp32", "bf16"):
            for ga in (4, 8):  # GA 2 is exact by accident under bug 1 (first + last is everything)
                cases.append({"label": f"Z{stage} {dtype} GA{ga}", "stage": stage, "dtype": dtype, "ga": ga,
                              "steps": steps})
    cases.append({"label": "Z2 GA1x4 backward, boundary set", "stage": 2, "ga": 4, "mode": "multi_backward",
                  "steps": steps})
    for stage in (1, 2):
        for offload in (True, False):
            cases.append({"label": f"Z{stage} {'offload' if offload else 'no-offload'} GA1x4 backward, no boundary",
                          "stage": stage, "ga": 4, "mode": "no_boundary", "offload": offload, "steps": steps})
    cases.append({"label": "Z2 no-offload GA4", "stage": 2, "ga": 4, "offload": False, "steps": steps})
    cases.append({"label": "Z2 no-offload bf16 GA8", "stage": 2, "ga": 8, "offload": False, "dtype": "bf16",
                  "steps": steps})
    # what asks for BF16_Optimizer (one rank: #7985 needs two; 0.18.3-0.18.4 build the fp16 one instead, #7788)
    cases.append({"label": "Z1 no-offload bf16 fp32-accum GA4", "stage": 1, "ga": 4, "offload": False,
                  "dtype": "bf16", "grad_accum_dtype": "fp32", "steps": steps})
    if cpu_adam:  # DeepSpeed's own offload optimizer against torch Adam (JIT-builds cpu_adam once per release)
        cases.append({"label": "Z2 DeepSpeedCPUAdam GA4", "stage": 2, "ga": 4, "optimizer": "deepspeed_adam",
                      "steps": steps})
        cases.append({"label": "Z2 DeepSpeedCPUAdam fp16 master weights GA4", "stage": 2, "ga": 4, "dtype": "fp16",
                      "master_weights": "fp16", "optimizer": "deepspeed_adam", "steps": steps})
    if ranks > 1:  # labels of their own, so that one-rank and several-rank matrices can be summarised together
        cases = [dict(case, label=f"{case['label']}, {ranks} ranks") for case in cases]
    return cases


def cell(result):
    if "error" in result:
        return "crash" if "Error" in result["error"] else "error"
    if case_is_correct(result):
        return "ok"
    if result["weights"] and max(abs(w) for w in result["weights"]) < 0.01:
        # next to nothing arrives (0.18.3-0.18.4's update / 65536): rounding, not a leak, is what is left over
        return _weights_text(result["weights"])
    if result["steps"] and result["steps"][0].get("residual", 0.0) > 0.01:
        return "uneven"  # already the first step: parts of the parameters took different weights (#7985)
    if max(step.get("residual", 0.0) for step in result["steps"]) > 0.01:
        return "leak"  # later steps carry gradients of earlier ones
    if not result["weights"]:  # an Adam case: no weights to fit, the trajectory is off by this much
        return f"off {result['max_param_diff']:.1g}"
    return _weights_text(result["weights"])


def _weights_text(weights):
    return "[" + ",".join(f"{w:.2g}" for w in weights) + "]"


# The summary in docs/patches.md: case groups of the matrices (one rank, DeepSpeedCPUAdam, two ranks), one column each.
GROUPS = [
    ("ZeRO-2 offload GA 4/8, fp32+bf16", ("Z2 fp32 GA4", "Z2 fp32 GA8", "Z2 bf16 GA4", "Z2 bf16 GA8")),
    ("ZeRO-1 offload GA 4/8, fp32+bf16", ("Z1 fp32 GA4", "Z1 fp32 GA8", "Z1 bf16 GA4", "Z1 bf16 GA8")),
    ("ZeRO-2 offload GA=1, 4× backward(), boundary set", ("Z2 GA1x4 backward, boundary set",)),
    ("GA=1, 4× backward(), no boundary, offload (ZeRO-1/2)",
     ("Z1 offload GA1x4 backward, no boundary", "Z2 offload GA1x4 backward, no boundary")),
    ("GA=1, 4× backward(), no boundary, no offload (ZeRO-1/2)",
     ("Z1 no-offload GA1x4 backward, no boundary", "Z2 no-offload GA1x4 backward, no boundary")),
    ("ZeRO-2 no offload GA 4 fp32 / GA 8 bf16 (#7718)", ("Z2 no-offload GA4", "Z2 no-offload bf16 GA8")),
    ("ZeRO-1 bf16, fp32 accumulation, one rank (#7788)", ("Z1 no-offload bf16 fp32-accum GA4",)),
    ("ZeRO-1 bf16, fp32 accumulation, two ranks (#7985)", ("Z1 no-offload bf16 fp32-accum GA4, 2 ranks",)),
    ("DeepSpeedCPUAdam, ZeRO-2 offload GA 4, fp32 / fp16 master weights, against torch Adam",
     ("Z2 DeepSpeedCPUAdam GA4", "Z2 DeepSpeedCPUAdam fp16 master weights GA4")),
]


def group_state(cells):
    """One word for a group of cells: ok, crash, leak, uneven, wrong, or – when none was measured."""
    if not cells:
        return "–"
    for word in ("crash", "error", "leak", "uneven"):
        if word in cells:
            return f"**{word}**"
    return "ok" if all(c == "ok" for c in cells) else "**wrong**"


def summary(matrices):
    """Markdown: one row per release, one column per group, unpatched → patched, over the given matrices."""
    rows = {}
    for matrix in matrices:
        labels = [case["label"] for case in matrix["cases"]]
        for row in matrix["rows"]:
            entry = rows.setdefault(row["version"], {"cells": {}, "patched": ""})
            pairs = zip(row["unpatched"].get("results", []), row["patched"].get("results", []))
            for label, (unpatched, patched) in zip(labels, pairs):
                entry["cells"][label] = (cell(unpatched), cell(patched))
            entry["patched"] = entry["patched"] or patch_states(row["patched"].get("patches", {}))
    lines = ["| release | patches applied | " + " | ".join(title for title, _ in GROUPS) + " |",
             "|" + "---|" * (len(GROUPS) + 2)]
    for version in sorted(rows, key=lambda v: tuple(map(int, v.split(".")))):
        entry = rows[version]
        columns = []
        for _, labels in GROUPS:
            measured = [entry["cells"][label] for label in labels if label in entry["cells"]]
            before, after = group_state([u for u, _ in measured]), group_state([p for _, p in measured])
            columns.append("–" if before == "–" else f"{before} → {after}")
        lines.append(f"| {version} | {entry['patched']} | " + " | ".join(columns) + " |")
    return "\n".join(lines) + "\n"


def load_matrices(names, folder=RESULTS):
    """The committed results `folder`/NAME.json of each name, in order."""
    matrices = []
    for name in names:
        with open(os.path.join(folder, name + ".json")) as handle:
            matrices.append(json.load(handle))
    return matrices


def patch_states(states):
    patched = sorted(name.replace("deepspeed-", "") for name, state in states.items()
                     if name.startswith("deepspeed-") and state == "patched")
    return ", ".join(patched) or "none applies"


def run_release(version, cases, timeout, ranks=1):
    env = deepspeed_releases.child_env(version)
    row = {"version": version}
    for label, patched in (("unpatched", False), ("patched", True)):
        try:
            row[label] = run_child(cases, patched=patched, nprocs=ranks, timeout=timeout, env=env)
        except Exception as exc:  # one broken release must not stop the matrix
            row[label] = {"error": str(exc)[-1500:]}
    return row


def to_markdown(rows, cases, meta):
    labels = [c["label"] for c in cases]
    lines = [f"# DeepSpeed probe matrix", "",
             f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, {_ranks_text(meta.get('ranks', 1))}, "
             f"{meta['accelerator']} accelerator, "
             f"{meta['steps']} SGD steps per case. Command: `{meta['command']}` ({meta['wall_minutes']} min)."
             + "".join(f" Then the patched half of {', '.join(r['versions'])} again after a change to the patches, "
                       f"{r['date']}: `{r['command']}` ({r['wall_minutes']} min)."
                       for r in meta.get("patched_reruns", ())), "",
             "A cell is `ok` when at every step every micro-batch reached the optimizer with weight 1 (±0.01; fp32 "
             "also parameters within 1e-6 of plain PyTorch), `uneven` when already the first step's update is no one "
             "weight per micro-batch (over 1% unexplained: parts of the parameters weighted differently), `leak` "
             "when a later step's update carries gradients no micro-batch of that step explains (over 1%), `crash` "
             "when the step raised, else the weights of the worst step. Each cell: unpatched / patched; `patched` lists the patches applied.", "",
             "| release | patched | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for row in rows:
        unpatched, patched = row["unpatched"], row["patched"]
        if "error" in unpatched or "error" in patched:
            lines.append(f"| {row['version']} | probe failed | " + " | ".join("" for _ in labels) + " |")
            continue
        state = patch_states(patched["patches"])
        cells = [f"{cell(u)} / {cell(p)}" for u, p in zip(unpatched["results"], patched["results"])]
        lines.append(f"| {row['version']} | {state} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rerun_patched(versions, out, name, timeout):
    """Replace the patched half of `versions`' rows in out/name.json, with the file's own cases and rank count, and
    record the rerun in its meta (the table then shows both runs' dates and minutes)."""
    path = os.path.join(out, name + ".json")
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    rows = {row["version"]: row for row in data["rows"]}
    missing = [v for v in versions if v not in rows]
    if missing:
        raise SystemExit(f"{path} has no row for {' '.join(missing)}: --rerun-patched replaces rows, it adds none")
    started = time.time()
    for version in versions:
        env = deepspeed_releases.child_env(version)
        try:
            rows[version]["patched"] = run_child(data["cases"], patched=True, nprocs=data["meta"].get("ranks", 1),
                                                 timeout=timeout, env=env)
        except Exception as exc:
            rows[version]["patched"] = {"error": str(exc)[-1500:]}
        print(f"{version}: " + " ".join(cell(p) for p in rows[version]["patched"].get("results", [])), flush=True)
    data["meta"].setdefault("patched_reruns", []).append(
        {"versions": list(versions), "date": time.strftime("%Y-%m-%d"),
         "command": f"python benchmarks/deepspeed_matrix.py --rerun-patched {' '.join(versions)}"
                    + (f" --name {name}" if name != "deepspeed_matrix" else ""),
         "wall_minutes": round((time.time() - started) / 60, 1)})
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1)
    with open(os.path.join(out, name + ".md"), "w", encoding="utf-8") as handle:
        handle.write(to_markdown(data["rows"], data["cases"], data["meta"]))
    print(f"wrote {out}/{name}.md", flush=True)
    return 0


def _ranks_text(ranks):
    return "one rank" if ranks == 1 else f"{ranks} gloo ranks"


def _accelerator(rows):
    names = {row[side].get("accelerator") for row in rows for side in ("unpatched", "patched")} - {None}
    return ", ".join(sorted(names)) or "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="*", help="default: every release from 0.15.1 on")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", default=RESULTS)
    parser.add_argument("--cpu-adam", action="store_true",
                        help="add the cases with DeepSpeed's own offload optimizer (DeepSpeedCPUAdam) against torch Adam "
                             "(JIT-builds it once per release, about a minute each)")
    parser.add_argument("--ranks", type=int, default=1,
                        help="gloo ranks per run (2 for #7985; ZeRO-1/2 steps crash with two CPU ranks on "
                             "0.18.7-0.18.9, #7828, so pair it with --only fp32-accum there)")
    parser.add_argument("--only", default=None, metavar="TEXT",
                        help="run only the cases whose label contains TEXT (e.g. DeepSpeedCPUAdam)")
    parser.add_argument("--name", default="deepspeed_matrix", help="file name of the results, without extension")
    parser.add_argument("--rerun-patched", nargs="+", metavar="VERSION",
                        help="run the patched half of these releases again, in place in --name's committed file, "
                             "with its cases (after a change to the patches; the unpatched half runs with every "
                             "patch off, so the change cannot touch it)")
    parser.add_argument("--summary", nargs="+", metavar="NAME",
                        help="print the per-group summary of these results in --out (e.g. deepspeed_matrix "
                             "deepspeed_matrix_cpu_adam) and run nothing")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(load_matrices(args.summary, args.out)), end="")
        return 0
    if args.rerun_patched:
        return rerun_patched(args.rerun_patched, args.out, args.name, args.timeout)
    versions = args.versions or deepspeed_releases.available_releases()
    if args.ranks < 1:
        parser.error("--ranks must be at least 1")
    cases = [case for case in matrix_cases(args.steps, args.cpu_adam, args.ranks) if args.only is None or args.only in case["label"]]
    if not cases:
        parser.error(f"--only {args.only!r} matches no case")
    started = time.time()
    rows = []
    for version in versions:
        deepspeed_releases.install(version)
        row = run_release(version, cases, args.timeout, args.ranks)
        rows.append(row)
        print(f"{version}: " + (" ".join(f"{cell(u)}/{cell(p)}" for u, p in zip(row["unpatched"].get("results", []),
                                                                               row["patched"].get("results", [])))
                                or "probe failed"), flush=True)
    from importlib import metadata
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": metadata.version("torch"), "steps": args.steps, "ranks": args.ranks, "accelerator": _accelerator(rows),
            "command": "python benchmarks/deepspeed_matrix.py" + (f" --versions {' '.join(args.versions)}"
                                                                   if args.versions else "")
                       + (" --cpu-adam" if args.cpu_adam else "")
                       + (f" --ranks {args.ranks}" if args.ranks > 1 else "")
                       + (f" --only {args.only}" if args.only else "")
                       + (f" --name {args.name}" if args.name != "deepspeed_matrix" else ""),
            "wall_minutes": round((time.time() - started) / 60, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, args.name + ".json"), "w") as handle:
        json.dump({"meta": meta, "cases": cases, "rows": rows}, handle, indent=1)
    with open(os.path.join(args.out, args.name + ".md"), "w") as handle:
        handle.write(to_markdown(rows, cases, meta))
    print(f"wrote {args.out}/{args.name}.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
