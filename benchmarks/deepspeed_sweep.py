"""Search the configuration space for silent gradient bugs, on DeepSpeed releases, with and without the patches:
a pairwise design on every release (benchmarks/results/deepspeed_sweep.{json,md}), or with --grid every valid
one-rank combination on the releases at the known windows' edges (deepspeed_grid.{json,md}).

    python benchmarks/deepspeed_sweep.py                          # pairwise, every release under .ds-releases/
    python benchmarks/deepspeed_sweep.py --grid                   # the full grid, the EDGES releases
    python benchmarks/deepspeed_sweep.py --versions 0.18.4 0.18.9 --out /tmp/sweep

Factors (GA 4 micro-batches of 2 samples, 3 optimizer steps, tiny MLP; see the probe,
sftrl_patches/probes/deepspeed_offload.py): ZeRO stage 0-3; optimizer offload none/cpu; parameter offload
(ZeRO-3); fp32, bf16, fp16 with a static loss scale of 1 or DeepSpeed's dynamic one (from 2**8);
grad_accum_dtype default or fp32; the client's SGD (whose update the probe solves for per-micro-batch
weights) or AdamW, or DeepSpeed's own Adam from an `optimizer` block (DeepSpeedCPUAdam with offload, FusedAdam
without; both compared as a trajectory with torch Adam fed the right gradient); accumulation by DeepSpeed's GA,
several backward() with the boundary set, without it, or `managed_gradient_accumulation: false` (0.19.4+;
0.19.5+ with offload); gradient clipping off or at 0.3 (below this model's gradient norm, so it acts); one or
two ranks (not run on 0.18.7-0.18.9, whose step() crashes with two CPU ranks: upstream #7828). Every pair of
values that can go together appears in at least one pairwise case (a greedy covering design after the seeds,
the same on every release). DeepSpeed's Adam is JIT-built once per release (its include path is the release's, so a build
is not shared between releases): about a minute of g++ a release on 2 cores.

A cell is right when every step's update is the step's mean gradient (the probe's case_is_correct).
tests/test_sweep_agreement.py holds the audit's verdict on each cell's run description equal to what the
probe saw: a wrong unpatched cell is hit by some record, a right one by none, and a patched cell is right
exactly when every record that hits it is patched there. A killed run keeps the releases it finished.
"""
import argparse
import itertools
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import deepspeed_releases  # noqa: E402
from sftrl_patches._version import parse  # noqa: E402
from sftrl_patches.probes import case_is_correct, run_child  # noqa: E402

RESULTS = os.path.join(ROOT, "benchmarks", "results")
GA, STEPS, CLIP = 4, 3, 0.3
FACTORS = {
    "stage": (0, 1, 2, 3),
    "offload": (False, True),
    "offload_param": (False, True),
    "dtype": ("fp32", "bf16", "fp16", "fp16-dynamic"),
    "grad_accum_dtype": (None, "fp32"),
    "optimizer": ("sgd", "adamw", "deepspeed_adam"),
    "mode": ("ga", "multi_backward", "no_boundary", "unmanaged"),
    "clip": (0.0, CLIP),
    "ranks": (1, 2),
}
# The full grid runs on the releases on both sides of every known window's edge (registry records' first affected
# and first fixed releases, and the releases their version conditions name: 0.19.8's compact fp32 accumulation), and
# the newest. tests/test_sweep_agreement.py derives the edges from the records and holds this list to them.
EDGES = ("0.15.1", "0.15.2", "0.17.5", "0.17.6", "0.18.2", "0.18.3", "0.18.4", "0.18.5", "0.18.6", "0.18.9",
         "0.19.0", "0.19.7", "0.19.8")
# Two CPU ranks crash in step() on these (upstream #7828, loud, not silent: benchmarks/deepspeed_matrix.py --ranks 2).
TWO_RANK_CRASH = ("0.18.7", "0.18.8", "0.18.9")


def valid(point):
    """Combinations DeepSpeed accepts in some release (release-specific limits: runnable())."""
    if point["stage"] == 0 and point["offload"]:
        return False  # offloading needs ZeRO
    if point["offload_param"] and point["stage"] != 3:
        return False  # parameter offload is ZeRO-3's
    if point["optimizer"] != "sgd" and point["mode"] != "ga":
        return False  # the Adam trajectory probe accumulates through DeepSpeed's GA only
    if point["grad_accum_dtype"] and point["dtype"] == "fp32":
        return False  # the same as the default
    return True


def runnable(point, version):
    """Whether `version` has what the point needs."""
    v = parse(version)
    if point["ranks"] > 1 and version in TWO_RANK_CRASH:
        return False
    if point["mode"] == "unmanaged":
        return v >= parse("0.19.5") or (v >= parse("0.19.4") and not point["offload"])
    return True


def _point(stage, offload, dtype="fp32", mode="ga", optimizer="sgd", grad_accum_dtype=None, clip=0.0,
           offload_param=False, ranks=1):
    return {"stage": stage, "offload": offload, "offload_param": offload_param, "dtype": dtype,
            "grad_accum_dtype": grad_accum_dtype, "optimizer": optimizer, "mode": mode, "clip": clip, "ranks": ranks}


# Pairs cannot see a bug that needs three settings at once (ZeRO-2 + offload + accumulation): the design starts
# from what users run most (the HF Trainer's and OpenRLHF's settings) and the known bugs' own cases.
SEEDS = (
    _point(2, True), _point(1, True), _point(2, True, "bf16"), _point(2, False), _point(2, False, "bf16"),
    _point(2, True, mode="multi_backward"), _point(2, True, mode="no_boundary"), _point(2, False, mode="no_boundary"),
    _point(1, False, "bf16", grad_accum_dtype="fp32"), _point(0, False, "bf16"), _point(0, False, "bf16",
                                                                                         optimizer="adamw"),
    _point(2, True, "bf16", optimizer="adamw"), _point(3, False, "bf16"), _point(2, False, "fp16-dynamic"),
    _point(2, True, optimizer="deepspeed_adam"), _point(3, True, "bf16", offload_param=True),
    _point(2, True, ranks=2), _point(2, False, ranks=2),
    # what the full grid found on 0.19.8, followed on every release
    _point(0, False, "fp16-dynamic"), _point(1, False, "bf16", "no_boundary", grad_accum_dtype="fp32"),
    _point(2, True, "bf16", "no_boundary", grad_accum_dtype="fp32"),
)


GRID_FACTORS = {**FACTORS, "ranks": (1,)}  # two ranks: in the pairwise design on every release


def full_grid(factors=GRID_FACTORS, valid=valid):
    """Every valid combination, in a fixed order (one rank)."""
    points = [dict(zip(factors, values)) for values in itertools.product(*factors.values())]
    return [p for p in points if valid(p)]


def covering_design(factors=FACTORS, valid=valid, seeds=SEEDS):
    """The seeds, then a greedy set of valid points until every valid pair of values appears (deterministic)."""
    names = list(factors)
    points = [dict(zip(names, values)) for values in itertools.product(*factors.values())]
    points = [p for p in points if valid(p)]

    def pairs(point):
        return {((a, point[a]), (b, point[b])) for a, b in itertools.combinations(names, 2)}

    uncovered = set().union(*(pairs(p) for p in points))
    chosen = [dict(seed) for seed in seeds]
    for seed in chosen:
        uncovered -= pairs(seed)
    while uncovered:
        best = max(points, key=lambda p: len(pairs(p) & uncovered))
        chosen.append(best)
        uncovered -= pairs(best)
    return chosen


def label(point):
    parts = [f"Z{point['stage']}", "offload" if point["offload"] else "no-offload"]
    if point["offload_param"]:
        parts.append("param-offload")
    parts.append(point["dtype"])
    if point["grad_accum_dtype"]:
        parts.append(f"{point['grad_accum_dtype']}-accum")
    parts.append({"ga": f"GA{GA}", "multi_backward": f"GA1x{GA} boundary", "no_boundary": f"GA1x{GA} no-boundary",
                  "unmanaged": f"GA1x{GA} unmanaged"}[point["mode"]])
    parts.append({"deepspeed_adam": "ds-adam"}.get(point["optimizer"], point["optimizer"]))
    if point["clip"]:
        parts.append(f"clip {point['clip']}")
    if point["ranks"] > 1:
        parts.append(f"{point['ranks']} ranks")
    return " ".join(parts)


def probe_case(point):
    """The probe's case dict for a design point."""
    case = {"label": label(point), "stage": point["stage"], "offload": point["offload"], "ga": GA,
            "mode": point["mode"], "steps": STEPS, "clip": point["clip"]}
    dtype = point["dtype"]
    case["dtype"] = "fp16" if dtype.startswith("fp16") else dtype
    if dtype == "fp16-dynamic":
        case["loss_scale"] = "dynamic"
    if point["grad_accum_dtype"]:
        case["grad_accum_dtype"] = point["grad_accum_dtype"]
    if point["optimizer"] != "sgd":
        case["optimizer"] = point["optimizer"]
    if point["offload_param"]:
        case["offload_param"] = True
    return case


def run_description(point, version):
    """The run description sftrl_patches' records read (sftrl_patches.conditions.FIELDS) for a design point."""
    dtype = "fp16" if point["dtype"].startswith("fp16") else point["dtype"]
    accumulation = {"ga": "engine", "multi_backward": "boundary", "no_boundary": "manual",
                    "unmanaged": "unmanaged"}[point["mode"]]
    return {"trainer": "deepspeed", "uses_deepspeed": True, "zero_stage": point["stage"],
            "offload_optimizer": "cpu" if point["offload"] else "none",
            "gradient_accumulation_steps": GA if point["mode"] == "ga" else 1,
            "micro_batches_per_step": GA, "accumulation": accumulation, "data_parallel_size": point["ranks"],
            "precision": dtype, "grad_accum_dtype": point["grad_accum_dtype"] or dtype,
            "immediate_grad_update": False, "pipeline_parallel": False,
            "optimizer": "deepspeed" if point["optimizer"] == "deepspeed_adam" else "client",
            # DeepSpeed's Adam block: FusedAdam without offload, its CPU Adam with it
            "fused_adam": point["optimizer"] == "deepspeed_adam" and not point["offload"],
            "fp16_loss_scale": "dynamic" if point["dtype"] == "fp16-dynamic" else (1.0 if dtype == "fp16" else None),
            "gradient_clipping": point["clip"], "versions": {"deepspeed": version}, "sources": {}}


def _cell(result, compact=False):
    if "error" in result:
        return {"right": False, "error": result["error"][:300]}
    right = case_is_correct(result)
    if compact and right:  # the grid keeps the numbers of wrong cells only: a right cell is all weights 1
        return {"right": True}
    steps = result.get("steps", [])
    return {"right": right, "weights": [s["weights"] for s in steps],
            "residual": [round(s.get("residual", 0.0), 4) for s in steps],
            "max_param_diff": result.get("max_param_diff"), "optimizer_class": steps[0].get("optimizer") if steps else None}


KINDS = {  # --grid writes another file: the pairwise design's results stay as they are
    "pairwise": {"file": "deepspeed_sweep", "design": covering_design, "compact": False},
    "grid": {"file": "deepspeed_grid", "design": full_grid, "compact": True},
}


def sweep(versions, out_dir, timeout, kind="pairwise", rerun_patched=()):
    """Run the design on each release not yet in the results (a killed run goes on from there). `rerun_patched`:
    releases already there whose patched half runs again (after a change to the patches; the unpatched half runs
    with every patch off, so the change cannot touch it)."""
    design = KINDS[kind]["design"]()
    os.makedirs(out_dir, exist_ok=True)
    raw_path = os.path.join(out_dir, KINDS[kind]["file"] + ".json")
    data = {"schema": "sftrl-sweep/2", "kind": kind, "ga": GA, "steps": STEPS,
            "factors": {k: list(v) for k, v in FACTORS.items()}, "design": design, "releases": {}}
    if os.path.exists(raw_path):  # a killed run keeps what it finished: go on from there
        with open(raw_path, encoding="utf-8") as handle:
            previous = json.load(handle)
        if previous.get("design") == design:
            data["releases"] = previous.get("releases", {})
    for version in versions:
        again = version in rerun_patched and version in data["releases"]
        if version in data["releases"] and not again:
            continue
        started = time.time()
        points = [p for p in design if runnable(p, version)]
        env = deepspeed_releases.child_env(version)  # its own torch extension folder: a rerun reuses the builds
        release = data["releases"][version] if again else {"cells": {}}
        for patched in (True,) if again else (False, True):
            key = "patched" if patched else "unpatched"
            for ranks in sorted({p["ranks"] for p in points}):  # one child per rank count
                chosen = [p for p in points if p["ranks"] == ranks]
                payload = run_child([probe_case(p) for p in chosen], patched=patched, nprocs=ranks, env=env,
                                    timeout=timeout)
                for point, result in zip(chosen, payload["results"]):
                    release["cells"].setdefault(label(point), {})[key] = _cell(result, KINDS[kind]["compact"])
                release[f"{key}_states"] = {n: s for n, s in payload["patches"].items()}
        release["patched_rerun_seconds" if again else "seconds"] = round(time.time() - started, 1)
        data["releases"][version] = release
        with open(raw_path, "w", encoding="utf-8") as handle:  # after every release: a killed run loses one
            json.dump(data, handle, indent=None if KINDS[kind]["compact"] else 1, sort_keys=True)
        wrong = sum(not c["unpatched"]["right"] for c in release["cells"].values())
        still = sum(not c["patched"]["right"] for c in release["cells"].values())
        print(f"{version}: {len(points)} cases, {wrong} wrong unpatched, {still} wrong patched, "
              f"{release['patched_rerun_seconds' if again else 'seconds']} s", flush=True)
    with open(os.path.join(out_dir, KINDS[kind]["file"] + ".md"), "w", encoding="utf-8") as handle:
        handle.write(summary(data))
    return data


def _ranges(versions, all_versions):
    """Consecutive runs of `versions` within `all_versions`, as "a-b" strings."""
    runs, current = [], []
    for version in all_versions:
        if version in versions:
            current.append(version)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return ", ".join(r[0] if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _weights_text(cell):
    if "error" in cell:
        return "crash: " + cell["error"].split(":")[0]
    if not cell["weights"] or not cell["weights"][0]:
        return f"off by {cell['max_param_diff']:.2g} (AdamW trajectory)"
    worst = max(cell["weights"], key=lambda w: max(abs(x - 1) for x in w) if w else 0)
    text = "[" + ", ".join(f"{x:.2g}" for x in worst) + "]"
    if max(cell["residual"]) > 0.01:
        text += " + leak"
    return text


def _minutes(data):
    text = f"{sum(r['seconds'] for r in data['releases'].values()) / 60:.1f} minutes on this machine"
    again = {v: r["patched_rerun_seconds"] for v, r in data["releases"].items() if "patched_rerun_seconds" in r}
    if again:
        releases = f"{len(again)} release" + ("s" if len(again) > 1 else "")
        text += (f" (then the patched half again on {releases} after a change to the patches (--rerun-patched), "
                 f"{sum(again.values()) / 60:.1f} minutes)")
    return text


def summary(data):
    """The wrong regions a person reads: per configuration (pairwise) or per region of the grid, the releases where
    it is wrong, and how."""
    if data.get("kind") == "grid":
        return grid_summary(data)
    releases = sorted(data["releases"], key=parse)
    labels = sorted({lab for r in data["releases"].values() for lab in r["cells"]})
    lines = ["# DeepSpeed configuration sweep", "",
             f"`python benchmarks/deepspeed_sweep.py`: {len(data['design'])} configurations (every pair of factor "
             f"values at least once), GA {data['ga']}, {data['steps']} optimizer steps, one or two ranks, on "
             f"{len(releases)} releases ({', '.join(releases)}), with and without the patches. "
             f"{_minutes(data)}. Two-rank cells are not run on {', '.join(TWO_RANK_CRASH)} (upstream #7828: "
             "step() crashes with two CPU ranks).", "",
             "Wrong without the patches (weights of the worst step; 1 = a micro-batch counted; "
             "\"leak\": a later step carries earlier ones):", "",
             "| configuration | wrong on | how (first such release) | with the patches, still wrong on |",
             "|---|---|---|---|"]
    right_everywhere = []
    for lab in labels:
        cells = {v: data["releases"][v]["cells"][lab] for v in releases if lab in data["releases"][v]["cells"]}
        wrong = [v for v, c in cells.items() if not c["unpatched"]["right"]]
        if not wrong:
            right_everywhere.append(lab)
            continue
        still = [v for v, c in cells.items() if not c["patched"]["right"]]
        lines.append(f"| {lab} | {_ranges(wrong, releases)} | {_weights_text(cells[wrong[0]]['unpatched'])} | "
                     f"{_ranges(still, releases) or 'none'} |")
    lines += ["", f"Right on every release swept, without the patches ({len(right_everywhere)}): "
              + "; ".join(right_everywhere) + ".", ""]
    return "\n".join(lines)


def _region(points):
    """The factor values every point of a group shares: the group's description."""
    shared = [(name, points[0][name]) for name in FACTORS if all(p[name] == points[0][name] for p in points)]
    return ", ".join(f"{name}={value}" for name, value in shared) or "(nothing in common)"


def verdicts(point, version):
    """(records hit, records unknown): the DeepSpeed records' verdicts on a cell's run description."""
    from sftrl_patches import PATCHES
    from sftrl_patches.verdict import audit
    findings = audit([p for p in PATCHES.values() if p.distribution == "deepspeed"], run_description(point, version))
    return ({f["check"] for f in findings if f["verdict"] == "hit"},
            {f["check"] for f in findings if f["verdict"] == "unknown"})


def _adam_at_zero0(dtype):
    def matches(point):
        return (point["stage"] == 0 and point["optimizer"] != "sgd" and point["dtype"].startswith(dtype)
                and point["grad_accum_dtype"] is None)
    return matches


def _adam_in_the_7788_wrapper(point):
    """bf16 + fp32 grad_accum_dtype without offload, ZeRO-0 or 1: on 0.17.6-0.18.4 DeepSpeed builds an fp16 wrapper
    here instead of BF16_Optimizer (#7788), so its Adam cells meet the same 16-bit precision as ZeRO-0's."""
    return (point["stage"] in (0, 1) and point["optimizer"] != "sgd" and point["dtype"] == "bf16"
            and point["grad_accum_dtype"] == "fp32" and not point["offload"])


_ADAM_PRECISION = (
    "an Adam trajectory (client AdamW or DeepSpeed's Adam) in {dtype} ends 0.0065-0.0072 from torch Adam fed "
    "the right gradient (one rank; 0.019 with two), past the probe's 16-bit tolerance of 0.005{since}; the SGD cells "
    "of the same configurations are right (every micro-batch weight 1 within 0.003, or the loss-scale record's 1/256), "
    "so no micro-batch is lost: the fp16 wrappers (FP16_UnfusedOptimizer, FP16_Optimizer) sum the 16-bit gradients "
    "in 16 bits, and Adam's normalisation turns that rounding into sign flips of tiny components. A precision "
    "matter, not yet a record")

# Cells the records do not explain, documented instead: (which cells, first release, last release or None, reason).
# tests/test_sweep_agreement.py fails if such a cell appears anywhere else, or stops being wrong where documented;
# the grid's summary names them.
DOCUMENTED_NAME = "16-bit Adam precision (documented, not a record)"
DOCUMENTED = (
    (_adam_at_zero0("bf16"), "0.17.6", None,
     _ADAM_PRECISION.format(dtype="bf16 at ZeRO-0", since=", from 0.17.6 on (0.001 up to 0.17.5, BF16_Optimizer); on "
                            "0.17.6-0.18.5 the records' faults come first and the patched cell shows this one")),
    (_adam_at_zero0("fp16"), "0.15.1", None, _ADAM_PRECISION.format(dtype="fp16 at ZeRO-0", since=" on every release")),
    (_adam_in_the_7788_wrapper, "0.17.6", "0.18.4",
     _ADAM_PRECISION.format(dtype="bf16 with fp32 grad_accum_dtype (ZeRO-0 or 1, no offload)",
                            since=" on 0.17.6-0.18.4, where DeepSpeed builds the fp16 wrappers instead of BF16_Optimizer "
                            "(0.17.6's new DDP_BFLOAT16 shares BFLOAT16's value \"bf16\"; PR #7788, 0.18.5), so the "
                            "fp32 accumulation asked for does not run; on 0.18.3-0.18.4 deepspeed-loss-scale-unapplied "
                            "comes first and the patched cell shows this one")),
)




def documented(point, version):
    """DOCUMENTED_NAME when the cell is one of the documented ones at this release, else None."""
    for matches, first, last, _ in DOCUMENTED:
        if matches(point) and parse(version) >= parse(first) and (last is None or parse(version) <= parse(last)):
            return DOCUMENTED_NAME
    return None


def _why(point, version, cells):
    """What explains a wrong cell: the records the audit says hit its run description, or the crash it met; and the
    documented precision matter where the cell stays wrong with the patches for that reason."""
    cell = cells[version]
    if "error" in cell["unpatched"]:
        return "crash: " + cell["unpatched"]["error"].split(":")[0]
    text = ", ".join(sorted(verdicts(point, version)[0]))
    precision = not cell["patched"]["right"] and documented(point, version)
    if precision:
        return f"{text}; with the patches, {precision}" if text else precision
    return text or "none"


def _explained(point, releases, cells):
    """_why over the releases a region is wrong on: one text, or each change named with the release it starts at."""
    parts = []
    for version in releases:
        why = _why(point, version, cells)
        if not parts or parts[-1][1] != why:
            parts.append((version, why))
    return parts[0][1] if len(parts) == 1 else "; then ".join(f"{why} (from {v})" for v, why in parts)


def grid_summary(data):
    """Wrong cells grouped by where they are wrong (unpatched, patched); each group named by what its
    configurations share."""
    releases = sorted(data["releases"], key=parse)
    points = {label(p): p for p in data["design"]}
    groups = {}
    for lab, point in points.items():
        cells = {v: data["releases"][v]["cells"][lab] for v in releases if lab in data["releases"][v]["cells"]}
        wrong = tuple(v for v, c in cells.items() if not c["unpatched"]["right"])
        still = tuple(v for v, c in cells.items() if not c["patched"]["right"])
        if wrong or still:
            groups.setdefault((wrong, still, _explained(point, wrong or still, cells)), []).append(point)
    cells_run = sum(len(r["cells"]) for r in data["releases"].values())
    lines = ["# DeepSpeed full grid at the window edges", "",
             f"`python benchmarks/deepspeed_sweep.py --grid`: every valid combination of the factors "
             f"({len(data['design'])} configurations), GA {data['ga']}, {data['steps']} optimizer steps, one rank, on "
             f"{len(releases)} of the {len(EDGES)} releases on both sides of the known windows' edges "
             f"({', '.join(releases)}), with and without the patches: {cells_run} cells run twice. {_minutes(data)}."
             + (f" Not run yet: {', '.join(v for v in EDGES if v not in releases)}." if set(EDGES) - set(releases)
                else ""), "",
             "| release | configurations run | wrong without the patches | wrong with them |", "|---|---|---|---|"]
    for version in releases:
        cells = data["releases"][version]["cells"].values()
        lines.append(f"| {version} | {len(cells)} | {sum(not c['unpatched']['right'] for c in cells)} | "
                     f"{sum(not c['patched']['right'] for c in cells)} |")
    lines += ["", "Wrong regions (configurations grouped by the releases where they are wrong; a region is named by "
              "the factor values all its configurations share; a crash is loud, not silent):", "",
              "| region | configurations | wrong on, without the patches | still wrong with them | what explains it "
              "(records hit, or a crash; where it changes, from which release) | example |",
              "|---|---|---|---|---|---|"]
    for (wrong, still, why), members in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        example = label(members[0])
        # the grid's releases are not consecutive: each one named, never a range
        lines.append(f"| {_region(members)} | {len(members)} | {', '.join(wrong) or 'none'} | "
                     f"{', '.join(still) or 'none'} | {why} | {example} |")
    lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", nargs="*", help="releases (default: every one installed under .ds-releases/)")
    parser.add_argument("--out", default=RESULTS, help="folder for deepspeed_sweep.{json,md} (default: %(default)s)")
    parser.add_argument("--timeout", type=int, default=1800,
                        help="seconds per child (default: %(default)s; a grid child runs 756 cases)")
    parser.add_argument("--grid", action="store_true",
                        help="the full grid (default releases: the window edges) into deepspeed_grid.{json,md}")
    parser.add_argument("--rerun-patched", nargs="+", metavar="VERSION",
                        help="run the patched half again on these releases, already in the results (after a change "
                             "to the patches); with no --versions only these run")
    parser.add_argument("--design", action="store_true", help="print the design and exit")
    args = parser.parse_args(argv)
    kind = "grid" if args.grid else "pairwise"
    if args.design:
        for point in KINDS[kind]["design"]():
            print(label(point))
        return 0
    versions = args.versions or args.rerun_patched or (list(EDGES) if args.grid else sorted(
        (v for v in deepspeed_releases.available_releases() if deepspeed_releases.is_installed(v)), key=parse))
    missing = [v for v in versions if not deepspeed_releases.is_installed(v)]
    if missing:
        raise SystemExit(f"not installed: {' '.join(missing)} (python benchmarks/deepspeed_releases.py install ...)")
    sweep(versions, args.out, args.timeout, kind, rerun_patched=args.rerun_patched or ())
    return 0


if __name__ == "__main__":
    sys.exit(main())
