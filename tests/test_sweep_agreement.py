"""The records are the probe's summary: on every cell of the committed sweeps, the audit's verdict on that cell's
run description agrees with what the probe measured there (benchmarks/results/deepspeed_sweep.json, the pairwise
design on every release; benchmarks/results/deepspeed_grid.json, the full grid at the window edges).

- a wrong (silent) unpatched cell is hit by some record; a right one is hit by none;
- with the patches, a cell is right exactly when every record that hits it was applied in that run;
- no cell is left `unknown`: the sweep's run descriptions are complete.
A cell that crashed is loud, not silent, and is listed rather than matched.
"""
import json
import os

import pytest

import deepspeed_sweep

RESULTS = {kind: os.path.join(deepspeed_sweep.RESULTS, spec["file"] + ".json")
           for kind, spec in deepspeed_sweep.KINDS.items()}


@pytest.fixture(scope="module", params=sorted(RESULTS))
def sweep(request):
    with open(RESULTS[request.param], encoding="utf-8") as handle:
        return json.load(handle)


def _cells(sweep):
    points = {deepspeed_sweep.label(p): p for p in sweep["design"]}
    for version, release in sorted(sweep["releases"].items()):
        for label, cell in sorted(release["cells"].items()):
            yield version, release, points[label], label, cell


verdicts = deepspeed_sweep.verdicts


def test_the_committed_sweep_is_the_design_the_script_runs(sweep):
    assert sweep["design"] == deepspeed_sweep.KINDS[sweep["kind"]]["design"]()
    assert len(sweep["releases"]) >= 2


def _documented(point, version):
    return deepspeed_sweep.documented(point, version) is not None


def test_every_cell_is_explained_by_the_records(sweep):
    disagreements, crashed, documented = [], [], set()
    for version, release, point, label, cell in _cells(sweep):
        if "error" in cell["unpatched"]:
            crashed.append(f"{version} {label}")
            continue
        # a documented cell that is right, or that a record hits anyway, meets the records' rule like any other
        if _documented(point, version) and not cell["unpatched"]["right"] and not verdicts(point, version)[0]:
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
        if expected_right and not cell["patched"]["right"] and _documented(point, version):
            # every record hitting it is patched, and what is left is the documented precision matter
            documented.add((label, version, False, False))
            continue
        if "error" not in cell["patched"] and cell["patched"]["right"] != expected_right:
            disagreements.append(f"{version} {label}: probe {'right' if cell['patched']['right'] else 'wrong'} "
                                 f"patched, records hit {sorted(hit)}, applied {sorted(applied)}")
    assert not disagreements, "\n".join(disagreements)
    # the documented exceptions hold where documented: wrong with the patches, and without them either wrong with
    # no record hitting them or hit only by records that were patched in that run
    points = {deepspeed_sweep.label(p): p for p in sweep["design"]}
    for label, version, right, patched_right in documented:
        hit = verdicts(points[label], version)[0]
        states = sweep["releases"][version]["patched_states"]
        assert not right and not patched_right, (label, version)
        assert all(states.get(name) == "patched" for name in hit), (label, version, hit)


def test_the_summary_names_every_wrong_configuration(sweep):
    path = os.path.join(deepspeed_sweep.RESULTS, deepspeed_sweep.KINDS[sweep["kind"]]["file"] + ".md")
    with open(path, encoding="utf-8") as handle:
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
    pages = ("README.md", os.path.join("docs", "patches.md")) if sweep["kind"] == "pairwise" else (
        os.path.join("docs", "patches.md"),)
    for page in pages:
        with open(os.path.join(root, page), encoding="utf-8") as handle:
            text = " ".join(handle.read().split())
        assert f"{configurations} configurations" in text, page
        assert f"{minutes} min" in text, page
    if sweep["kind"] == "pairwise":
        assert len(sweep["releases"]) == 40
    else:  # the grid: window-edge releases the script names (the summary says which are not run yet)
        assert set(sweep["releases"]) <= set(deepspeed_sweep.EDGES) and "0.19.8" in sweep["releases"]
        cells = [r["cells"].values() for r in sweep["releases"].values()]
        wrong = [sum(not c["unpatched"]["right"] for c in release) for release in cells]
        still = [sum(not c["patched"]["right"] for c in release) for release in cells]
        assert f"{sum(len(release) for release in cells):,} cells" in text
        assert f"wrong without them {min(wrong)}–{max(wrong)} per release, with them {min(still)}–{max(still)}" in text
        if set(sweep["releases"]) == set(deepspeed_sweep.EDGES):
            assert f"on the {len(deepspeed_sweep.EDGES)} releases on both sides" in text


def _version_facts(predicate):
    if predicate is None:
        return []
    if hasattr(predicate, "parts"):
        return [f for part in predicate.parts for f in _version_facts(part)]
    return [predicate] if getattr(predicate, "field", "") == "version:deepspeed" else []


def test_the_grid_runs_both_sides_of_every_release_edge_the_records_name():
    """EDGES is what the grid runs by default: each release where a DeepSpeed record's range or a version fact in its
    conditions changes, and the release before it (the pairwise sweep's 40 releases are the universe)."""
    from sftrl_patches import PATCHES
    from sftrl_patches._version import parse
    with open(RESULTS["pairwise"], encoding="utf-8") as handle:
        releases = sorted(json.load(handle)["releases"], key=parse)
    edges = set()
    for patch in (p for p in PATCHES.values() if p.distribution == "deepspeed"):
        edges.update(str(bound) for bound in (patch.affected.low, patch.affected.high) if bound is not None)
        edges.update(str(fact.value) for fact in _version_facts(patch.when))
    assert edges, "no edges found: the walk over the records is broken"
    wanted = {v for edge in edges if edge in releases for v in releases[max(0, releases.index(edge) - 1):
                                                                       releases.index(edge) + 1]}
    assert wanted <= set(deepspeed_sweep.EDGES), sorted(wanted - set(deepspeed_sweep.EDGES))
