"""What autoload adds to interpreter start when no target is imported.

Builds this package's wheel, makes two fresh virtual environments that differ only in that
wheel (one has sftrl_patches.pth + _sftrl_patches_autoload.py, the other nothing), and times
`python -c pass` in both, interleaved, many runs. Also times `-X importtime` of the module.
Writes benchmarks/results/autoload_startup.{json,md}.

    python benchmarks/autoload_startup.py [--runs 300]

Target: at most 5 ms added (difference of medians).
"""
import argparse
import glob
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET_MS = 5.0


def build_wheel(folder):
    """This package's wheel, built into `folder`; returns its path."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", folder,
                    ROOT], check=True)
    (wheel,) = glob.glob(os.path.join(folder, "*.whl"))
    return wheel


def fresh_venv(folder, wheel=None):
    """A venv without pip (so no other start-up file), with `wheel` installed if given; returns its python."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", folder], check=True)
    python = os.path.join(folder, "bin", "python")
    if wheel:
        subprocess.run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index",
                        wheel], check=True)
    return python


def make_environments(work):
    """(python with the wheel, python without it)."""
    wheel = build_wheel(os.path.join(work, "wheels"))
    return fresh_venv(os.path.join(work, "with"), wheel), fresh_venv(os.path.join(work, "without"))


def start_ms(python, env):
    began = time.perf_counter()
    subprocess.run([python, "-c", "pass"], env=env, check=True)
    return (time.perf_counter() - began) * 1000


def importtime_us(python, env):
    err = subprocess.run([python, "-X", "importtime", "-c", "pass"], env=env, capture_output=True, text=True,
                         check=True).stderr
    rows = [line for line in err.splitlines() if line.rstrip().endswith("_sftrl_patches_autoload")]
    return int(rows[-1].split("|")[1]) if rows else None


def summary(times):
    ordered = sorted(times)
    return {"median_ms": statistics.median(times), "mean_ms": statistics.fmean(times),
            "p10_ms": ordered[len(ordered) // 10], "p90_ms": ordered[(9 * len(ordered)) // 10], "runs": len(times)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300, help="interpreter starts per environment (default 300)")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SFTRL_PATCHES"))}
    with tempfile.TemporaryDirectory() as work:
        with_pth, without = make_environments(work)
        for python in (with_pth, without):  # warm the file cache
            for _ in range(5):
                start_ms(python, env)
        times = {"with": [], "without": []}
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            times["with"].append(start_ms(with_pth, env))
            times["without"].append(start_ms(without, env))
        module_us = [importtime_us(with_pth, env) for _ in range(20)]
    result = {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
              "with": summary(times["with"]), "without": summary(times["without"]),
              "import_self_us_median": statistics.median([u for u in module_us if u is not None])}
    result["added_ms"] = result["with"]["median_ms"] - result["without"]["median_ms"]
    result["ratio"] = result["with"]["median_ms"] / result["without"]["median_ms"]
    result["target_ms"] = TARGET_MS
    result["meets_target"] = result["added_ms"] <= TARGET_MS
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "autoload_startup.json"), "w") as handle:
        json.dump(result, handle, indent=2)
    w, wo = result["with"], result["without"]
    table = "\n".join([
        "# Autoload: interpreter start-up cost when no target is imported", "",
        f"`python benchmarks/autoload_startup.py --runs {args.runs}`; Python {result['python']}, "
        f"{result['cpus']} CPUs, {result['platform']}. `python -c pass` in two fresh venvs that differ only in this "
        "package's wheel, interleaved.", "",
        "| environment | median ms | mean ms | p10 ms | p90 ms | runs |", "|---|---|---|---|---|---|",
        f"| without sftrl-patches | {wo['median_ms']:.2f} | {wo['mean_ms']:.2f} | {wo['p10_ms']:.2f} | "
        f"{wo['p90_ms']:.2f} | {wo['runs']} |",
        f"| with sftrl-patches (autoload armed) | {w['median_ms']:.2f} | {w['mean_ms']:.2f} | {w['p10_ms']:.2f} | "
        f"{w['p90_ms']:.2f} | {w['runs']} |", "",
        f"Added: {result['added_ms']:.2f} ms (ratio {result['ratio']:.3f}); target ≤ {TARGET_MS:g} ms: "
        f"{'met' if result['meets_target'] else 'NOT met'}. `-X importtime` self time of `_sftrl_patches_autoload`: "
        f"{result['import_self_us_median']:.0f} µs (median of 20).", ""])
    with open(os.path.join(args.out, "autoload_startup.md"), "w") as handle:
        handle.write(table)
    print(table)
    return 0 if result["meets_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
