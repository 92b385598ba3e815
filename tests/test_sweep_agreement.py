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


def test_every_cell_is_explained_by_the_records(sweep):
    disagreements, crashed = [], []
    for version, release, point, label, cell in _cells(sweep):
        if "error" in cell["unpatched"]:
            crashed.append(f"{version} {label}")
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
