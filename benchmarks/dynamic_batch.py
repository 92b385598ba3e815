"""OpenRLHF's dynamic batching drives DeepSpeed with GA=1 and several backward() calls per optimizer
step, never calling set_gradient_accumulation_boundary(). Measure which micro-batches reach the
optimizer, with and without this package's patches, and write results/dynamic_batch.{json,md}.

    python benchmarks/dynamic_batch.py                         # DeepSpeed 0.18.9 and 0.19.8, one rank
    python benchmarks/dynamic_batch.py --versions 0.18.6 --nprocs 2

Probe mode "no_boundary": 4 backward() calls of loss/4, then one step() (the probe's
"multi_backward" mode is the documented way, with the boundary set on the last call).
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deepspeed_releases  # noqa: E402
from sftrl_patches.probes import case_is_correct, run_child  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
CASES = [{"label": f"Z{stage} {'offload' if offload else 'no offload'}", "stage": stage, "ga": 4,
          "mode": "no_boundary", "offload": offload, "steps": 1}
         for offload in (False, True) for stage in (1, 2)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", nargs="+", default=["0.18.9", "0.19.8"])
    parser.add_argument("--nprocs", type=int, default=1)
    options = parser.parse_args(argv)
    rows, started = [], time.time()
    for version in options.versions:
        deepspeed_releases.install(version)
        for patched in (False, True):
            payload = run_child(CASES, patched=patched, nprocs=options.nprocs, env=deepspeed_releases.child_env(version))
            for result in payload["results"]:
                rows.append({"deepspeed": version, "patched": patched, "case": result["case"]["label"],
                             "weights": result.get("weights"), "max_param_diff": result.get("max_param_diff"),
                             "correct": case_is_correct(result), "error": result.get("error")})
    os.makedirs(RESULTS, exist_ok=True)
    suffix = "" if options.nprocs == 1 else f"_{options.nprocs}ranks"
    with open(os.path.join(RESULTS, f"dynamic_batch{suffix}.json"), "w") as handle:
        json.dump({"nprocs": options.nprocs, "wall_seconds": round(time.time() - started, 1), "rows": rows},
                  handle, indent=1)
    lines = [f"# GA=1, 4 backward() without the boundary ({options.nprocs} rank(s), "
             f"`python benchmarks/dynamic_batch.py{' --nprocs ' + str(options.nprocs) if options.nprocs > 1 else ''}`)",
             "", "| DeepSpeed | patches | case | micro-batch weights | max param diff |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['deepspeed']} | {'on' if row['patched'] else 'off'} | {row['case']} | "
                     f"{row['weights']} | {row['max_param_diff']:.3g} |" if row["error"] is None else
                     f"| {row['deepspeed']} | {'on' if row['patched'] else 'off'} | {row['case']} | error | |")
    with open(os.path.join(RESULTS, f"dynamic_batch{suffix}.md"), "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
