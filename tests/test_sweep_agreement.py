"""The records are the probe's summary: on every cell of the committed sweep, the audit's verdict on that cell's
run description agrees with what the probe measured there (benchmarks/results/deepspeed_sweep.json).

- a wrong (silent) unpatched cell is hit by some record; a right one is hit by none;
- with the patches, a cell is right exactly when every record that hits it was applied in that run;
- no cell is left `unknown`: the sweep's run descriptions are complete.
A cell that crashed is loud, not silent, and is listed rather than matched.
"""
import json
import os

import pytest

import deepspeed_sweep
from sftrl_patches import PATCHES
from sftrl_patches.verdict import audit

RESULTS = os.path.join(deepspeed_sweep.RESULTS, "deepspeed_sweep.json")
# Cells the records do not explain, each with why; the test fails if one appears or disappears anywhere else.
UNEXPLAINED = {
    ("Z0 no-offload bf16 GA4 adamw", "0.18.6"): (
        "from 0.18.6 on (every release to 0.19.8) the AdamW trajectory ends 0.0068 from torch AdamW fed the right "
        "gradient, against 0.001 up to 0.17.5 (BF16_Optimizer), past the probe's bf16 tolerance of 0.005; the SGD "
        "cells of the same configuration are right (every micro-batch weight 1 within 0.003), so no micro-batch is "
        "lost: FP16_UnfusedOptimizer accumulates the bf16 gradients in bf16, and Adam's normalisation turns that "
        "rounding into sign flips of tiny components. A precision change, not yet a record"),
}


@pytest.fixture(scope="module")
def sweep():
    with open(RESULTS, encoding="utf-8") as handle:
        return json.load(handle)


def _cells(sweep):
    points = {deepspeed_sweep.label(p): p for p in sweep["design"]}
    for version, release in sorted(sweep["releases"].items()):
        for label, cell in sorted(release["cells"].items()):
            yield version, release, points[label], label, cell


def verdicts(point, version):
    run = deepspeed_sweep.run_description(point, version)
    findings = audit([p for p in PATCHES.values() if p.distribution == "deepspeed"], run)
    return ({f["check"] for f in findings if f["verdict"] == "hit"},
            {f["check"] for f in findings if f["verdict"] == "unknown"})


def test_the_committed_sweep_is_the_design_the_script_runs(sweep):
    assert sweep["design"] == deepspeed_sweep.covering_design()
    assert len(sweep["releases"]) >= 2


def _documented(label, version):
    from sftrl_patches._version import parse
    return any(label == known and parse(version) >= parse(first) for known, first in UNEXPLAINED)


def test_every_cell_is_explained_by_the_records(sweep):
    disagreements, crashed, documented = [], [], set()
    for version, release, point, label, cell in _cells(sweep):
        if "error" in cell["unpatched"]:
            crashed.append(f"{version} {label}")
            continue
        if _documented(label, version):
            documented.add((label, version, cell["unpatched"]["right"], cell["patched"]["right"]))
            continue
        hit, unknown = verdicts(point, version)
        if unknown:
            disagreements.append(f"{version} {label}: unknown for {sorted(unknown)}")
        wrong = not cell["unpatched"]["right"]
        if wrong != bool(hit):
            disagreements.append(f"{version} {label}: probe {'wrong' if wrong else 'right'} unpatched, "
                                 f"records hit: {sorted(hit) or 'none'}")
        applied = {name for name in hit if release["patched_states"].get(name) == "patched"}
        expected_right = applied == hit
        if "error" not in cell["patched"] and cell["patched"]["right"] != expected_right:
            disagreements.append(f"{version} {label}: probe {'right' if cell['patched']['right'] else 'wrong'} "
                                 f"patched, records hit {sorted(hit)}, applied {sorted(applied)}")
    assert not disagreements, "\n".join(disagreements)
    # the documented exceptions hold where documented: wrong with and without the patches, no record hitting them
    for label, version, right, patched_right in documented:
        point = {deepspeed_sweep.label(p): p for p in sweep["design"]}[label]
        assert not right and not patched_right and verdicts(point, version)[0] == set(), (label, version)


def test_the_summary_names_every_wrong_configuration(sweep):
    with open(os.path.join(deepspeed_sweep.RESULTS, "deepspeed_sweep.md"), encoding="utf-8") as handle:
        committed = handle.read()
    assert committed == deepspeed_sweep.summary(sweep)


def test_the_design_covers_every_pair_and_the_seeds():
    import itertools
    design = deepspeed_sweep.covering_design()
    names = list(deepspeed_sweep.FACTORS)
    valid = [dict(zip(names, v)) for v in itertools.product(*deepspeed_sweep.FACTORS.values())]
    valid = [p for p in valid if deepspeed_sweep.valid(p)]
    wanted = {((a, p[a]), (b, p[b])) for p in valid for a, b in itertools.combinations(names, 2)}
    have = {((a, p[a]), (b, p[b])) for p in design for a, b in itertools.combinations(names, 2)}
    assert wanted <= have
    assert all(seed in design for seed in deepspeed_sweep.SEEDS)


def test_readme_and_docs_state_what_the_committed_sweep_holds(sweep):
    import re
    root = os.path.dirname(deepspeed_sweep.RESULTS.rstrip(os.sep).rsplit(os.sep, 1)[0])
    md = deepspeed_sweep.summary(sweep)
    minutes = re.search(r"([0-9.]+) minutes on this machine", md).group(1)
    configurations = len(sweep["design"])
    for page in ("README.md", os.path.join("docs", "patches.md")):
        with open(os.path.join(root, page), encoding="utf-8") as handle:
            text = " ".join(handle.read().split())
        assert f"{configurations} configurations" in text, page
        assert f"{minutes} min" in text, page
    assert len(sweep["releases"]) == 40
