"""Run the probe over every DeepSpeed release from 0.15.1 to the newest 0.19.x, with and without
the patches, and write benchmarks/results/deepspeed_matrix.{json,md}.

    python benchmarks/deepspeed_matrix.py                      # every release (installs missing ones)
    python benchmarks/deepspeed_matrix.py --versions 0.18.9 0.19.8 --steps 2

Cases per release: ZeRO-1 and ZeRO-2 with offload, GA 2/4/8, fp32/bf16; ZeRO-2 offload GA=1 with
4 backward() calls and the boundary set; ZeRO-2 without offload GA 4 (DeepSpeed #7718).
A cell is "ok" when every micro-batch weight is within 0.01 of 1 (and, in fp32, the parameters
match plain PyTorch within 1e-6); otherwise it shows the weights of the worst step.
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


def matrix_cases(steps):
    cases = []
    for stage in (1, 2):
        for dtype in ("fp32", "bf16"):
            for ga in (2, 4, 8):
                cases.append({"label": f"Z{stage} {dtype} GA{ga}", "stage": stage, "dtype": dtype, "ga": ga,
                              "steps": steps})
    cases.append({"label": "Z2 fp32 GA1x4 backward", "stage": 2, "ga": 4, "mode": "multi_backward", "steps": steps})
    cases.append({"label": "Z2 no-offload GA4", "stage": 2, "ga": 4, "offload": False, "steps": steps})
    return cases


def cell(result):
    if "error" in result:
        return "error"
    if case_is_correct(result):
        return "ok"
    return "[" + ",".join(f"{w:.2g}" for w in result["weights"]) + "]"


def run_release(version, cases, timeout):
    env = deepspeed_releases.child_env(version)
    row = {"version": version}
    for label, patched in (("unpatched", False), ("patched", True)):
        try:
            row[label] = run_child(cases, patched=patched, timeout=timeout, env=env)
        except Exception as exc:  # one broken release must not stop the matrix
            row[label] = {"error": str(exc)[-1500:]}
    return row


def to_markdown(rows, cases, meta):
    labels = [c["label"] for c in cases]
    lines = [f"# DeepSpeed probe matrix", "",
             f"Measured {meta['date']} on {meta['machine']}, torch {meta['torch']}, one rank, CPU accelerator, "
             f"{meta['steps']} SGD steps per case. Command: `{meta['command']}` ({meta['wall_minutes']} min).", "",
             "A cell is `ok` when every micro-batch reached the optimizer with weight 1 (±0.01; fp32 also "
             "parameters within 1e-6 of plain PyTorch), else the weights of the worst step. Each cell: "
             "unpatched / patched.", "",
             "| release | patch state | " + " | ".join(labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for row in rows:
        unpatched, patched = row["unpatched"], row["patched"]
        if "error" in unpatched or "error" in patched:
            lines.append(f"| {row['version']} | probe failed | " + " | ".join("" for _ in labels) + " |")
            continue
        states = patched["patches"]
        state = ", ".join(sorted({f"{s}" for s in (states["deepspeed-offload-ga-drop"],
                                                    states["deepspeed-offload-multi-backward"])}))
        cells = [f"{cell(u)} / {cell(p)}" for u, p in zip(unpatched["results"], patched["results"])]
        lines.append(f"| {row['version']} | {state} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="*", help="default: every release from 0.15.1 on")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    versions = args.versions or deepspeed_releases.available_releases()
    cases = matrix_cases(args.steps)
    started = time.time()
    rows = []
    for version in versions:
        deepspeed_releases.install(version)
        row = run_release(version, cases, args.timeout)
        rows.append(row)
        print(f"{version}: " + (" ".join(f"{cell(u)}/{cell(p)}" for u, p in zip(row["unpatched"].get("results", []),
                                                                               row["patched"].get("results", [])))
                                or "probe failed"), flush=True)
    from importlib import metadata
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "torch": metadata.version("torch"), "steps": args.steps,
            "command": "python benchmarks/deepspeed_matrix.py" + (f" --versions {' '.join(args.versions)}"
                                                                   if args.versions else ""),
            "wall_minutes": round((time.time() - started) / 60, 1)}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "deepspeed_matrix.json"), "w") as handle:
        json.dump({"meta": meta, "cases": cases, "rows": rows}, handle, indent=1)
    with open(os.path.join(args.out, "deepspeed_matrix.md"), "w") as handle:
        handle.write(to_markdown(rows, cases, meta))
    print(f"wrote {args.out}/deepspeed_matrix.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
