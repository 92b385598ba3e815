"""The run-time line against the audit: on each one-rank configuration of the pairwise sweep's design, the verdict
the line prints when DeepSpeed builds the engine (sftrl_patches/runtime_report.py, read from the live engine) and
the audit's verdict on the same configuration's run description. Writes benchmarks/results/runtime_agreement.{json,md}.

    python benchmarks/runtime_agreement.py                        # the grid's window-edge releases
    python benchmarks/runtime_agreement.py --versions 0.18.9

One probe child per configuration (the line is printed once per process), one optimizer step, SFTRL_PATCHES_REPORT
collecting its JSON event. A difference is confident when both say hit or not-hit and disagree; the line may say
unknown where only the loop decides (how it calls backward() and step() with GA 1), which no engine knows when it
is built. tests/test_runtime_report.py holds the committed file to that rule.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepspeed_releases  # noqa: E402
import deepspeed_sweep  # noqa: E402
from sftrl_patches.probes import launch_command  # noqa: E402

RESULTS = os.path.join(HERE, "results")
DEFAULT_VERSIONS = deepspeed_sweep.EDGES  # where the records change: the releases the grid runs


def runtime_verdicts(point, version, timeout=600):
    """{record: verdict} from the run-time event of a one-step probe child of this configuration."""
    env = deepspeed_releases.child_env(version)
    env["PYTHONPATH"] = os.pathsep.join([deepspeed_sweep.ROOT, env["PYTHONPATH"]])
    env["PYTHONWARNINGS"] = "ignore"
    env.pop("SFTRL_PATCHES_DISABLE", None)
    with tempfile.TemporaryDirectory(prefix="sftrl-runtime-") as tmp:
        report = os.path.join(tmp, "report.jsonl")
        case = dict(deepspeed_sweep.probe_case(point), steps=1)
        command = launch_command(sys.executable, 1, ["-m", "sftrl_patches.probes.deepspeed_offload", "--cases",
                                                     json.dumps([case]), "--out", os.path.join(tmp, "out.json")])
        proc = subprocess.run(command, env=dict(env, SFTRL_PATCHES_REPORT=report), capture_output=True, text=True,
                              timeout=timeout)
        if not os.path.exists(report):
            return {"error": (proc.stderr.strip().splitlines() or ["no event written"])[-1][:300]}
        with open(report, encoding="utf-8") as handle:
            event = json.loads(handle.readline())
    return {f["check"]: f["verdict"] for f in event["findings"]}


def compare(version):
    points = [p for p in deepspeed_sweep.covering_design() if p["ranks"] == 1 and deepspeed_sweep.runnable(p, version)]
    started, rows = time.time(), []
    for point in points:
        runtime = runtime_verdicts(point, version)
        hit, unknown = deepspeed_sweep.verdicts(point, version)
        audit = {name: "hit" if name in hit else "unknown" if name in unknown else "not-hit"
                 for name in runtime if name != "error"}
        rows.append({"label": deepspeed_sweep.label(point), "runtime": runtime, "audit": audit})
    return {"points": len(points), "rows": rows, "seconds": round(time.time() - started, 1)}


def differences(row):
    """(record, runtime, audit) wherever the two verdicts differ."""
    return [(name, verdict, row["audit"][name]) for name, verdict in sorted(row["runtime"].items())
            if name != "error" and verdict != row["audit"][name]]


def summary(data):
    lines = ["# The run-time line against the audit", "",
             f"`python benchmarks/runtime_agreement.py --versions {' '.join(data['releases'])}`: each one-rank "
             "configuration of the pairwise sweep's design, one probe child each; the run-time verdict (from the live "
             "engine) beside the audit's (from the run description).", "",
             "| release | configurations | verdicts compared | equal | run time unknown, the audit decides | "
             "confident differences | failed children | minutes |", "|---|---|---|---|---|---|---|---|"]
    for version, result in data["releases"].items():
        rows = [r for r in result["rows"] if "error" not in r["runtime"]]
        diffs = [d for r in rows for d in differences(r)]
        compared = sum(len(r["audit"]) for r in rows)
        unknown = sum(1 for _, runtime, _ in diffs if runtime == "unknown")
        lines.append(f"| {version} | {result['points']} | {compared} | {compared - len(diffs)} | {unknown} | "
                     f"{len(diffs) - unknown} | {len(result['rows']) - len(rows)} | {result['seconds'] / 60:.1f} |")
    lines += ["", "Where the run-time line says unknown and the audit decides (record: configurations):", ""]
    gaps = {}
    for result in data["releases"].values():
        for row in result["rows"]:
            for name, runtime, audit in differences(row):
                gaps.setdefault((name, runtime, audit), set()).add(row["label"])
    lines += [f"- {name}: run time {runtime}, audit {audit}: {', '.join(sorted(labels))}"
              for (name, runtime, audit), labels in sorted(gaps.items())] or ["- none"]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="+", default=list(DEFAULT_VERSIONS))
    parser.add_argument("--out", default=RESULTS)
    args = parser.parse_args(argv)
    missing = [v for v in args.versions if not deepspeed_releases.is_installed(v)]
    if missing:
        raise SystemExit(f"not installed: {' '.join(missing)} (python benchmarks/deepspeed_releases.py install ...)")
    data = {"schema": "sftrl-runtime-agreement/1", "releases": {}}
    for version in args.versions:
        data["releases"][version] = compare(version)
        print(f"{version}: {data['releases'][version]['seconds']} s", flush=True)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "runtime_agreement.json"), "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "runtime_agreement.md"), "w", encoding="utf-8") as handle:
        handle.write(summary(data))
    print(summary(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
