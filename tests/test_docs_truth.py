"""Every number and output excerpt that README.md and docs/ copy from a committed file is checked against
that file: the audit excerpts against examples/audits/results/, the doctor's output against docs/doctor.md
(and docs/doctor.md against the code and, where the releases are installed, against the doctor itself),
the measured numbers against the demos' results.md/results.json and benchmarks/results/.

The expected values are always read from the committed files, never written here: when a result is
regenerated, the text that quotes it fails here until it is updated. (Tables copied elsewhere are
checked elsewhere: docs/patches.md's release table in tests/test_deepspeed.py, the audits' table by
`python -m examples.audits.published --check`.)"""
import glob
import json
import os
import re
import shlex
import statistics
import subprocess
import sys

import pytest

from conftest import AFFECTED, ORL_RELEASES, ROOT, require_release

sys.path.insert(0, ROOT)
from sftrl_patches import PATCHES  # noqa: E402
from sftrl_patches.doctor import render  # noqa: E402

AUDITS = os.path.join(ROOT, "examples", "audits")
NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"


# ---- reading ---------------------------------------------------------------------------------------

def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()


def read_json(*parts):
    return json.loads(read(*parts))


def flat(text):
    """Prose with its line breaks and list indentation folded to single spaces."""
    return re.sub(r"\s+", " ", text)


def section(text, heading):
    """The text under a `## heading` (a prefix of it), up to the next heading of that level."""
    match = re.search(r"^## " + re.escape(heading) + r".*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def bullet(text, marker):
    """The `- ` list item of `text` that contains `marker`, flattened."""
    items = [flat(item) for item in re.split(r"\n(?=- )", text)]
    found = [item for item in items if marker in item]
    assert len(found) == 1, f"expected one list item with {marker!r}, found {len(found)}"
    return found[0]


def grab(text, pattern, what):
    """The groups of `pattern` in `text` (flattened), or a failure naming what was looked for."""
    match = re.search(pattern, flat(text))
    assert match, f"{what}: the text no longer says /{pattern}/"
    return match.groupdict() if match.groupdict() else match.groups()


def code_blocks(text):
    return re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)


def tables(text):
    """Markdown tables as (header, [row]) with each row a list of cells."""
    found, lines = [], text.splitlines()
    i = 0
    while i < len(lines) - 1:
        if lines[i].startswith("|") and re.match(r"^\|(\s*:?-+:?\s*\|)+\s*$", lines[i + 1]):
            header = cells(lines[i])
            rows, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(cells(lines[i]))
                i += 1
            found.append((header, rows))
        else:
            i += 1
    return found


def cells(line):
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_with(text, *columns):
    """The one table of `text` whose header holds every column named."""
    found = [(h, rows) for h, rows in tables(text) if all(c in h for c in columns)]
    assert len(found) == 1, f"expected one table with columns {columns}, found {len(found)}"
    header, rows = found[0]
    return [dict(zip(header, row)) for row in rows]


def by(rows, key):
    return {row[key]: row for row in rows}


def numbers(text):
    return [float(n) for n in re.findall(NUMBER, text.replace("−", "-"))]


def same(quoted, value):
    """Is `quoted` (a number as the text prints it) `value` at the precision the text uses?"""
    quoted = quoted.replace("−", "-")
    if "e" in quoted:
        digits = len(quoted.split("e")[0].split(".")[1]) if "." in quoted.split("e")[0] else 0
        return float(f"{value:.{digits}e}") == float(quoted)
    digits = len(quoted.split(".")[1]) if "." in quoted else 0
    return f"{value:.{digits}f}" == f"{float(quoted):.{digits}f}"


def assert_same(quoted, value, what):
    assert same(quoted, value), f"{what}: the text says {quoted}, the committed file gives {value}"


def wall_minutes(results_md):
    return re.search(r"wall time (" + NUMBER + r") min", results_md).group(1)


def results_md(folder):
    return read("examples", "sftrl_tiny", folder, "results.md")


def results_rows(folder):
    return by(table_with(results_md(folder), "configuration", "SFT avg@4 (%)"), "configuration")


README = read("README.md")
MEASURED = section(README, "What it changes, measured")


# ---- audits: README "Was a run affected?" and docs/audit.md against examples/audits/results/ ----------

SUMMARY = re.compile(r"^\d+ hit, \d+ unknown, \d+ not hit$")
FINDING = re.compile(r"^\s*(HIT|not-hit|unknown|UNKNOWN)\s")


def audit_excerpts():
    found = []
    for name in ("README.md", os.path.join("docs", "audit.md")):
        for block in code_blocks(read(name)):
            if block.startswith("$ sftrl-doctor audit"):
                found.append(pytest.param(block, id=f"{name}:{len(found)}"))
    return found


def committed_audits():
    """{path: (command tokens, output lines)} for every committed audit result."""
    results = {}
    for path in sorted(glob.glob(os.path.join(AUDITS, "results", "*.txt"))):
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
        (command,) = [line for line in lines if line.startswith("$ ")]
        results[path] = (shlex.split(command[2:]), lines[lines.index(command) + 1:])
    return results


def split_excerpt(block):
    lines = block.rstrip("\n").splitlines()
    command, rest = [lines[0]], lines[1:]
    while command[-1].endswith("\\"):
        command.append(rest.pop(0))
    return shlex.split(" ".join(line.rstrip("\\") for line in command)[2:]), rest


def finding_blocks(lines):
    """[(index of the finding's first line, the finding's lines folded into one string)]."""
    blocks, start = [], None
    for i, line in enumerate(lines + [""]):
        if FINDING.match(line) or SUMMARY.match(line) or not line.strip():
            if start is not None:
                blocks.append((start, flat(" ".join(lines[start:i]))))
            start = i if FINDING.match(line) else None
    return blocks


def test_there_are_audit_excerpts_to_check():
    assert len(audit_excerpts()) >= 2  # README's and docs/audit.md's


@pytest.mark.parametrize("block", audit_excerpts())
def test_audit_excerpt_is_the_committed_output(block):
    tokens, shown = split_excerpt(block)
    matches = {path: out for path, (command, out) in committed_audits().items() if command[:len(tokens)] == tokens}
    assert matches, f"no committed result in examples/audits/results/ was made by: {' '.join(tokens)}"
    assert len(matches) == 1, f"the excerpt's command is the start of several results: {sorted(matches)}"
    ((path, output),) = matches.items()
    where = os.path.relpath(path, ROOT)
    blocks, last = finding_blocks(output), -1
    for line in shown:
        if not line.strip() or line.strip() in ("...", "…"):
            continue
        if SUMMARY.match(line):
            (committed,) = [out for out in output if SUMMARY.match(out)]
            assert line == committed, f"summary line: the text says {line!r}, {where} says {committed!r}"
            continue
        fragments = [flat(part).strip() for part in re.split(r"\.\.\.|…", line)]
        fragments = [part for part in fragments if part]
        if len(fragments) == 1 and not re.search(r"\.\.\.|…", line):
            assert line.rstrip() in output, f"{line!r} is not a line of {where}"
            position = output.index(line.rstrip())
        else:
            hits = [start for start, text in blocks if in_order(fragments, text)]
            assert hits, f"{line!r}: its parts are not in one finding of {where}"
            position = hits[0]
        assert position >= last, f"{line!r} is out of the order of {where}"
        last = position


def in_order(fragments, text):
    at = 0
    for fragment in fragments:
        at = text.find(fragment, at)
        if at < 0:
            return False
        at += len(fragment)
    return True


def test_audits_count_sentence_is_the_audits_table():
    rows = table_with(read("examples", "audits", "README.md"), "setup", "hit", "exit")
    total, hit, not_hit = grab(README, r"Of the (\d+) published setups and recipes audited in \[examples/audits/\]"
                                       r"\(examples/audits/README\.md\), (\d+) are hit \(not hit: (.*?)\)\. ",
                               "README's count of the published audits")
    assert int(total) == len(rows), f"README says {total} setups, examples/audits/README.md lists {len(rows)}"
    clean = [row for row in rows if row["hit"] == "nothing"]
    assert int(hit) == len(rows) - len(clean), f"README says {hit} are hit, the table {len(rows) - len(clean)}"
    for row in clean:  # every setup that is not hit is named, by its first word beyond "The"
        name = re.sub(r"^\[(.*?)\]\(.*\)$", r"\1", row["setup"])
        word = next(w for w in name.split() if w.lower() not in ("the", "a"))
        assert word.lower() in not_hit.lower(), f"README's 'not hit' list does not name {name!r}"


# ---- the doctor: README's excerpt against docs/doctor.md, and docs/doctor.md against the code ------------

def doctor_md_block():
    (block,) = [b for b in code_blocks(read("docs", "doctor.md")) if b.startswith("sftrl-doctor ")]
    return block.rstrip("\n").splitlines()


def readme_doctor_block():
    (block,) = code_blocks(section(README, "What the doctor says"))
    return block.rstrip("\n").splitlines()


ROW = re.compile(r"^\[(.)\] ([\w.-]+):\s+(\S+)\s+(.+)$")      # a one-line check (without -v)
HEADER = re.compile(r"^\[(.)\] ([\w.-]+): (\S+)$")            # an expanded check's first line
MARK_LEVEL = {mark: level for level, mark in render.MARKS.items()}


def test_readme_doctor_excerpt_is_docs_doctor_md():
    full = doctor_md_block()
    stripped = [line.strip() for line in full]
    for line in readme_doctor_block():
        if not line.strip():
            continue
        row = ROW.match(line)
        if row and not HEADER.match(line):
            mark, check, state, title = row.groups()
            header = f"[{mark}] {check}: {state}"
            assert header in full, f"README: {header!r} is not in docs/doctor.md"
            committed_title = full[full.index(header) + 1].strip()
            if title.endswith("…"):
                assert committed_title.startswith(title[:-1].rstrip()), (check, title, committed_title)
            else:
                assert committed_title == title, f"{check}: README {title!r}, docs/doctor.md {committed_title!r}"
        elif "…" in line:
            parts = [part.strip() for part in line.split("…") if part.strip()]
            assert any(in_order(parts, committed) for committed in stripped), f"README: {line!r} not in docs/doctor.md"
        else:
            assert line.strip() in stripped, f"README: {line!r} is not a line of docs/doctor.md"
    assert readme_doctor_block()[-1] == full[-1], "README's last doctor line is not docs/doctor.md's"


def test_docs_doctor_md_titles_are_the_registry_s():
    full = doctor_md_block()
    shown = 0
    for i, line in enumerate(full):
        header = HEADER.match(line)
        if header and header.group(2) in PATCHES:
            assert full[i + 1].strip() == PATCHES[header.group(2)].title, f"{header.group(2)}: title in docs/doctor.md"
            shown += 1
    assert shown == len(PATCHES), "docs/doctor.md does not show every check in full (-v)"


def test_docs_doctor_md_last_line_is_what_the_renderer_says_for_its_marks():
    full = doctor_md_block()
    findings = [{"level": MARK_LEVEL[m.group(1)]} for m in map(HEADER.match, full) if m]
    report = {"findings": findings, "action_needed": any(f["level"] == "fail" for f in findings)}
    assert full[-1] == render.summary_line(report)


def test_summary_line_counts_warnings_and_failures():
    ok, warn, fail = {"level": "ok"}, {"level": "warn"}, {"level": "fail"}
    assert render.summary_line({"findings": [ok], "action_needed": False}) == "nothing to do"
    quiet = render.summary_line({"findings": [ok, warn, warn], "action_needed": False})
    assert quiet.startswith("nothing to do") and "2 warning(s)" in quiet
    loud = render.summary_line({"findings": [fail, warn], "action_needed": True})
    assert loud.startswith("action needed") and "1 check(s)" in loud and "1 warning(s)" in loud


def test_docs_doctor_md_is_what_the_doctor_prints():
    """The documented command, run: every line but the header (the machine's package versions) and the
    start-up file paths (the machine's site-packages) as docs/doctor.md shows it."""
    orl = os.path.join(ORL_RELEASES, "0.9.10")
    if not os.path.isdir(os.path.join(orl, "openrlhf")):
        if os.environ.get("SFTRL_REQUIRE_DEEPSPEED") == "1":
            pytest.fail("OpenRLHF 0.9.10 is not installed in .orl-releases/")
        pytest.skip("OpenRLHF 0.9.10 is not installed in .orl-releases/")
    env = require_release(AFFECTED)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env["PYTHONPATH"], orl]))
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", "-v", "--probe"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]

    def comparable(lines):
        return [line for line in lines[1:] if "site-packages" not in line]
    printed, documented = comparable(proc.stdout.rstrip("\n").splitlines()), comparable(doctor_md_block())
    if "[✓] startup: active" not in printed:
        pytest.skip("sftrl-patches is not pip-installed in this interpreter: its startup row differs")
    assert printed == documented, "\n".join(
        f"{a!r}\n  != {b!r}" for a, b in zip(printed, documented) if a != b) or "different lengths"


# ---- "What it changes, measured" ---------------------------------------------------------------------

def test_tiny_table_2():
    text = bullet(MEASURED, "--out examples/sftrl_tiny/results`")
    rows, md = results_rows("results"), results_md("results")
    assert_same(grab(text, r"results`, (" + NUMBER + r") min", "wall time")[0], float(wall_minutes(md)), "wall time")
    off, on, ref = grab(text, r"accuracy (\S+ ± \S+)% with the patches off, (\S+ ± \S+)% with them, "
                              r"(\S+ ± \S+)% without offload", "SFT accuracies")
    assert (off, on, ref) == tuple(rows[c]["SFT avg@4 (%)"] for c in ("buggy", "fixed", "reference"))
    assert grab(text, r"under DeepSpeed (\S+) ZeRO-2", "DeepSpeed")[0] == rows["buggy"]["DeepSpeed"]
    assert grab(text, r"then GRPO, (\d+) seeds", "seeds")[0] == rows["fixed"]["seeds"]


def relative_gaps(a, b):
    """Per logged step, the larger relative gap of SFT loss and gradient norm between two runs."""
    assert len(a["sft_loss"]) == len(b["sft_loss"])
    return [max(abs(a[k][i] - b[k][i]) / abs(b[k][i]) for k in ("sft_loss", "sft_grad_norm"))
            for i in range(len(b["sft_loss"]))]


def first_step_over(gaps, tolerance):
    """1-based optimizer step (one logged row per step) of the first gap over `tolerance`, or None."""
    return next((i + 1 for i, gap in enumerate(gaps) if gap > tolerance), None)


def tiny_gaps(folder="results"):
    records = read_json("examples", "sftrl_tiny", folder, "results.json")["records"]
    runs = {(r["config"], r["seed"]): r for r in records}
    return {seed: relative_gaps(runs["fixed", seed], runs["reference", seed])
            for seed in sorted({r["seed"] for r in records})}, runs


def test_tiny_table_2_fixed_against_reference_per_step():
    text = bullet(MEASURED, "--out examples/sftrl_tiny/results`")
    tol, steps, a, b, c, parts, over = grab(
        text, r"match the reference's within (" + NUMBER + r") relative at all (\d+) steps in seeds (\d+) and (\d+); in "
              r"seed (\d+) they part at step (\d+) and are over 1% apart from step (\d+)", "the per-step comparison")
    gaps, _ = tiny_gaps()
    assert {int(a), int(b), int(c)} == set(gaps), "the sentence must name every seed"
    for seed in (int(a), int(b)):
        assert len(gaps[seed]) == int(steps) and max(gaps[seed]) <= float(tol), f"seed {seed}: {max(gaps[seed])}"
    assert max(gaps[int(c)]) > float(tol)
    assert first_step_over(gaps[int(c)], 0.0) == int(parts)
    assert first_step_over(gaps[int(c)], 0.01) == int(over)


def test_demos_md_fixed_against_reference_per_step():
    equal, close, tol, steps, seed0, equal_for, apart, milli, over, fixed, ref = grab(
        read("docs", "demos.md"),
        r"seed (\d+), every logged loss and gradient norm equal; seed (\d+), equal to (" + NUMBER + r") relative at "
        r"all (\d+) steps; seed (\d+), equal for (\d+) steps, then apart from step (\d+) on, more than 1e-3 relative "
        r"from step (\d+) and more than 1% from step (\d+) .*?SFT accuracy (" + NUMBER + r")% against the "
        r"reference's (" + NUMBER + r")%", "docs/demos.md's per-step comparison")
    gaps, runs = tiny_gaps()
    assert {int(equal), int(close), int(seed0)} == set(gaps)
    assert max(gaps[int(equal)]) == 0.0
    assert_same(tol, max(gaps[int(close)]), f"seed {close}'s largest gap")
    assert len(gaps[int(close)]) == int(steps)
    assert first_step_over(gaps[int(seed0)], 0.0) == int(apart) == int(equal_for) + 1
    assert first_step_over(gaps[int(seed0)], 1e-3) == int(milli)
    assert first_step_over(gaps[int(seed0)], 0.01) == int(over)
    assert_same(fixed, 100 * runs["fixed", int(seed0)]["acc_sft"], f"seed {seed0}, fixed, SFT accuracy")
    assert_same(ref, 100 * runs["reference", int(seed0)]["acc_sft"], f"seed {seed0}, reference, SFT accuracy")


def test_openrlhf_sft():
    text = bullet(MEASURED, "--out examples/sftrl_tiny/results-openrlhf`")
    rows = results_rows("results-openrlhf")
    assert_same(grab(text, r"results-openrlhf`, (" + NUMBER + r") min", "wall time")[0],
                float(wall_minutes(results_md("results-openrlhf"))), "wall time")
    bugs, fixes, alone = grab(text, r"(\S+ ± \S+)% with both bugs, (\S+ ± \S+)% with both fixes, and higher, "
                                    r"(\S+ ± \S+)%, with the optimizer fix alone", "OpenRLHF SFT accuracies")
    assert bugs == rows["both-bugs"]["SFT avg@4 (%)"]
    assert fixes == rows["both-fixes"]["SFT avg@4 (%)"]
    assert alone == rows["optimizer-fix"]["SFT avg@4 (%)"]
    assert numbers(alone)[0] > numbers(fixes)[0], "README calls the optimizer fix alone higher"
    low, high, before, after = grab(text, r"with varied lengths \((\d+)–(\d+) operands\) adding the loss fix lowers it, "
                                          r"(\S+ ± \S+)% → (\S+ ± \S+)%", "the varied-length run")
    varied = results_rows("results-openrlhf-varied-lengths")
    assert (before, after) == (varied["optimizer-fix"]["SFT avg@4 (%)"], varied["both-fixes"]["SFT avg@4 (%)"])
    assert numbers(after)[0] < numbers(before)[0], "README says the loss fix lowers it"
    assert f"{low}–{high} operands" in results_md("results-openrlhf-varied-lengths")


def test_openrlhf_sft_then_rl():
    text = bullet(MEASURED, "--out examples/sftrl_tiny/results-openrlhf-rl`")
    md = results_md("results-openrlhf-rl")
    rows = results_rows("results-openrlhf-rl")
    assert_same(grab(text, r"results-openrlhf-rl`, (" + NUMBER + r") min", "wall time")[0], float(wall_minutes(md)),
                "wall time")
    quoted = grab(text, r"(" + NUMBER + r") → (" + NUMBER + r")% with both bugs, (" + NUMBER + r") → (" + NUMBER
                  + r")% with both fixes \(SFT → after (\d+) GRPO rounds\)", "OpenRLHF SFT-then-RL")
    for value, config, column in zip(quoted, ("both-bugs", "both-bugs", "both-fixes", "both-fixes"),
                                     ("SFT avg@4 (%)", "SFT→RL avg@4 (%)") * 2):
        assert numbers(rows[config][column])[0] == float(value), (config, column, value)
    assert f"{quoted[4]} generation rounds" in md


def test_llamafactory_sft():
    text = bullet(MEASURED, "--out examples/sftrl_tiny/results-llamafactory`")
    md = results_md("results-llamafactory")
    rows = results_rows("results-llamafactory")
    minutes, deepspeed = grab(text, r"results-llamafactory`, (" + NUMBER + r") min, DeepSpeed (\S+),", "header")
    assert_same(minutes, float(wall_minutes(md)), "wall time")
    assert {deepspeed} == {row["DeepSpeed"] for row in rows.values()}
    off, on, ref = grab(text, r"(\S+ ± \S+)% with the patches off, (\S+ ± \S+)% with them, (\S+ ± \S+)% without "
                              r"offload", "Llama-Factory SFT accuracies")
    assert (off, on, ref) == tuple(rows[c]["SFT avg@4 (%)"] for c in ("buggy", "fixed", "reference"))


def dynamic_rows():
    return read_json("benchmarks", "results", "dynamic_batch.json")


def test_dynamic_batching():
    text = bullet(MEASURED, "benchmarks/dynamic_batch.py")
    data = dynamic_rows()
    rows = data["rows"]
    minutes, low, high, crash, leak, within, first, last = grab(
        text, r"dynamic_batch.py`, (" + NUMBER + r") min\): unpatched, updates (\d+)–(\d+)% off the step's token-mean "
              r"gradient \(only the last micro-batch counts; a crash on DeepSpeed (\S+); a leak across steps on (\S+) "
              r"with `--adam_offload`\); patched, within (" + NUMBER + r") at every step, actor and critic, OpenRLHF "
              r"(\S+) to (\S+)\.", "the dynamic-batching bullet")
    assert_same(minutes, data["wall_seconds"] / 60, "wall time")
    diffs = [row["unpatched"]["max_relative_diff"] for row in rows if "error" not in row["unpatched"]]
    assert_same(low, 100 * min(diffs), "smallest unpatched distance")
    assert_same(high, 100 * max(diffs), "largest unpatched distance")
    assert {row["deepspeed"] for row in rows if "error" in row["unpatched"]} == {crash}
    assert any(row["deepspeed"] == leak and row["offload"] and max(row["unpatched"]["leak"]) > 0.01 for row in rows)
    assert_same(within, max(row["patched"]["max_abs_diff"] for row in rows), "patched max abs diff")
    versions = sorted({row["openrlhf"] for row in rows}, key=lambda v: tuple(map(int, v.split("."))))
    assert (first, last) == (versions[0], versions[-1])
    assert {row["trainer"] for row in rows} == {"actor", "critic"}


def mixed():
    return read_json("examples", "mixed_policy", "results", "results.json")


def mixed_tables():
    md = read("examples", "mixed_policy", "results", "results.md")
    main = by(table_with(md, "method", "test avg@4 at F (%)"), "method")
    generous = by(table_with(md, "method", "over the base (points)"), "method")
    methods = {name: row for name, row in main.items() if name != "base model" and not name.startswith("SFT→RL")}
    return main, generous, methods


def test_mixed_policy_comparison():
    text = bullet(MEASURED, "examples.mixed_policy.compare")
    data = mixed()
    main, generous, methods = mixed_tables()
    first, second, third, last = grab(text, r"--out examples/mixed_policy/results`, (" + NUMBER + r") min, then three "
                                            r"`--keep` runs: (" + NUMBER + r"), (" + NUMBER + r") and (" + NUMBER
                                            + r") min\)", "wall times")
    assert_same(first, data["kept"][0]["wall_s"] / 60, "first run")
    assert_same(second, data["kept"][1]["wall_s"] / 60, "second run")
    assert_same(third, data["generous_kept"][0]["wall_s"] / 60, "the generous-budget run")
    assert_same(last, data["wall_s"] / 60, "last run")
    base, ratio = grab(text, r"one base model \((" + NUMBER + r")%\).*? run to (" + NUMBER + r") times the corrected",
                       "base model and budget")
    assert_same(base, 100 * data["base_accuracy"], "base model")
    assert main["base model"]["test avg@4 at F (%)"] == base
    assert float(ratio) == data["settings"]["budget_ratio"]
    buggy, low, high, fixed = grab(text, r"buggy SFT→RL (\S+ ± \S+)% < the mixed-policy methods (" + NUMBER + r")–("
                                         + NUMBER + r")% < corrected SFT→RL (\S+ ± \S+)%", "the ordering")
    assert buggy == main["SFT→RL, buggy SFT"]["test avg@4 at F (%)"]
    assert fixed == main["SFT→RL, corrected"]["test avg@4 at F (%)"]
    at_budget = [numbers(row[f"test avg@4 at {ratio} F (%)"])[0] for row in methods.values()]
    assert (float(low), float(high)) == (min(at_budget), max(at_budget))
    eq_low, eq_high, worst, worst_value = grab(
        text, r"at equal FLOPs the methods score (" + NUMBER + r")–(" + NUMBER + r")%, (\S+)'s (\S+ ± \S+)% below the "
              r"buggy SFT→RL and the (?:" + NUMBER + r")% base model", "the equal-FLOPs clause")
    at_f = {name: numbers(row["test avg@4 at F (%)"])[0] for name, row in methods.items()}
    assert (float(eq_low), float(eq_high)) == (min(at_f.values()), max(at_f.values()))
    assert methods[worst]["test avg@4 at F (%)"] == worst_value
    below = sorted(name for name, value in at_f.items()
                   if value < numbers(buggy)[0] and value < 100 * data["base_accuracy"])
    assert below == [worst], f"below both the buggy SFT→RL and the base model at F: {below}"
    times, g_low, g_high = grab(text, r"given (\d+) times the FLOPs \(seed 0\) they reach (" + NUMBER + r")–("
                                      + NUMBER + r")%", "the generous budget")
    assert float(times) == data["settings"]["generous_ratio"]
    assert {v["seed"] for v in data["generous"].values()} == {0}
    generous_values = [float(row["test (%)"]) for row in generous.values()]
    assert (float(g_low), float(g_high)) == (min(generous_values), max(generous_values))


def test_every_deepspeed_release():
    text = bullet(MEASURED, "benchmarks/deepspeed_matrix.py")
    matrix = read_json("benchmarks", "results", "deepspeed_matrix.json")
    count, first, last, minutes = grab(text, r"all (\d+) releases (\S+)–(\S+), (" + NUMBER + r") min;",
                                       "the matrix")
    versions = [row["version"] for row in matrix["rows"]]
    assert int(count) == len(versions) and (first, last) == (versions[0], versions[-1])
    assert_same(minutes, matrix["meta"]["wall_minutes"], "matrix wall time")
    cpu_adam, runs = grab(text, r"master weights, (" + NUMBER + r") min in (\w+) runs", "CPU Adam")
    parts = [read_json("benchmarks", "results", name)["meta"]["wall_minutes"]
             for name in ("deepspeed_matrix_cpu_adam.json", "deepspeed_matrix_cpu_adam_rest.json")]
    assert runs == {2: "two"}.get(len(parts))
    assert_same(cpu_adam, sum(parts), "CPU Adam wall time")
    two_ranks = grab(text, r"`--ranks 2`, #7985, (" + NUMBER + r") min", "two ranks")[0]
    assert_same(two_ranks, read_json("benchmarks", "results", "deepspeed_matrix_two_ranks.json")["meta"]["wall_minutes"],
                "two-rank wall time")


# ---- docs/: the tables copied from results.md, and the numbers quoted in prose -------------------------

# A docs column that is named differently from the results.md column(s) it shows.
ALIASES = {
    "paper, Table 2 (7B)": ["paper, Table 2"],
    "SFT (%)": ["SFT avg@4 (%)"],
    "SFT→RL (%)": ["SFT→RL avg@4 (%)"],
    "RL reward, first / last 10% of rounds": ["RL reward, first 10% of rounds", "RL reward, last 10%"],
    "patches in SFT and in the RL actor": ["SFT: offload / loss patch", "RL actor: offload / loss patch"],
    "patch in the rank": ["offload patch (in the rank)"],
}


def cell_matches(shown, committed):
    """The docs cell is the committed one, or its leading part (a mean without its ± spread, "off" for
    "off (SFTRL_PATCHES_DISABLE=1)"), or the same word ("off" and "disabled" alike)."""
    def norm(cell):
        return cell.replace("disabled", "off")
    shown, committed = norm(shown), norm(committed)
    return shown == committed or committed.startswith(shown + " ")


def column_matches(shown, committed_cells):
    if len(committed_cells) == 1:
        return cell_matches(shown, committed_cells[0])
    parts = [part.strip() for part in shown.split(" / ")]
    if len(parts) == len(committed_cells):
        return all(cell_matches(p, c) for p, c in zip(parts, committed_cells))
    return all(cell_matches(shown, part.strip()) for cell in committed_cells for part in cell.split(" / "))


def docs_tables_from_results():
    """(doc, header, rows, results.md path) for every table of a docs page whose first column is
    `configuration` or `method` and that follows a link to a results.md (the last one before it)."""
    found = []
    for path in sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        text = read(path)
        for match in re.finditer(r"^\| (configuration|method) \|.*?(?=\n[^|]|\Z)", text, re.M | re.S):
            links = re.findall(r"\]\(([^)\s]*results\.md)\)", text[:match.start()])
            if not links:
                continue
            ((header, rows),) = tables(match.group(0))
            source = os.path.normpath(os.path.join(os.path.dirname(path), links[-1]))
            name = f"{os.path.basename(path)}:{header[0]}:{len(found)}"
            found.append(pytest.param(path, header, rows, source, id=name))
    return found


def test_docs_have_tables_from_results():
    assert len(docs_tables_from_results()) >= 6  # demos.md: 4, mixed-policy.md: 2


@pytest.mark.parametrize("doc, header, rows, source", docs_tables_from_results())
def test_docs_table_is_its_results_md(doc, header, rows, source):
    where = os.path.relpath(source, ROOT)
    with open(source, encoding="utf-8") as handle:
        candidates = [(h, r) for h, r in tables(handle.read()) if h[0] == header[0]]

    def mapped(column):
        return ALIASES.get(column, [column])
    overlap = [sum(all(m in h for m in mapped(c)) for c in header) for h, _ in candidates]
    assert candidates and max(overlap) >= 2, f"{where} has no table like {header}"
    committed_header, committed_rows = candidates[overlap.index(max(overlap))]
    committed = {row[0]: dict(zip(committed_header, row)) for row in committed_rows}
    shown = {row[0]: dict(zip(header, row)) for row in rows}
    assert set(shown) == set(committed), f"rows: the page shows {sorted(shown)}, {where} has {sorted(committed)}"
    for column in header[1:]:
        assert all(m in committed_header for m in mapped(column)), f"column {column!r} is not in {where}"
        for key, row in shown.items():
            cells_committed = [committed[key][m] for m in mapped(column)]
            assert column_matches(row[column], cells_committed), \
                f"{key}, {column}: the page says {row[column]!r}, {where} says {cells_committed}"


DEMOS = read("docs", "demos.md")
MIXED_DOC = read("docs", "mixed-policy.md")
PATCHES_DOC = read("docs", "patches.md")


@pytest.mark.parametrize("folder", ["results", "results-openrlhf", "results-openrlhf-varied-lengths",
                                    "results-openrlhf-rl", "results-llamafactory"])
def test_demos_md_wall_times(folder):
    link = r"\[results\.md\]\(\.\./examples/sftrl_tiny/" + re.escape(folder) + r"/results\.md\)"
    minutes = grab(DEMOS, r".*(?<![\d.])(" + NUMBER + r") minutes[^\[]*?" + link,  # the last before the link
                   f"docs/demos.md's wall time of {folder}")[0]
    assert_same(minutes, float(wall_minutes(results_md(folder))), f"{folder}: wall time")


def test_demos_md_prose_numbers():
    tiny = results_rows("results")
    low, high = grab(DEMOS, r"GRPO adds (" + NUMBER + r")–(" + NUMBER + r") points here", "GRPO's gain")
    gains = [numbers(row["SFT→RL avg@4 (%)"])[0] - numbers(row["SFT avg@4 (%)"])[0] for row in tiny.values()]
    assert_same(low, min(gains), "smallest GRPO gain")
    assert_same(high, max(gains), "largest GRPO gain")

    orl = results_rows("results-openrlhf")
    before, after = grab(DEMOS, r"reproduces on OpenRLHF as on TRL \((\d+) → (\d+)\)", "OpenRLHF's 15 → 60")
    assert_same(before, numbers(orl["both-bugs"]["SFT avg@4 (%)"])[0], "both bugs")
    assert_same(after, numbers(orl["optimizer-fix"]["SFT avg@4 (%)"])[0], "optimizer fix")

    varied_md = results_md("results-openrlhf-varied-lengths")
    varied = results_rows("results-openrlhf-varied-lengths")
    alone, both, ops, alone_2, both_2 = grab(
        DEMOS, r"`optimizer-fix` (\S+ ± \S+) against `both-fixes` (\S+ ± \S+), lower at every operand count \((\d+) "
               r"operands: (" + NUMBER + r") against (" + NUMBER + r")\)", "the varied-length comparison")
    assert (alone, both) == (varied["optimizer-fix"]["SFT avg@4 (%)"], varied["both-fixes"]["SFT avg@4 (%)"])
    per_count = by(table_with(varied_md, "configuration", f"{ops} operands"), "configuration")
    assert numbers(per_count["optimizer-fix"][f"{ops} operands"])[0] == float(alone_2)
    assert numbers(per_count["both-fixes"][f"{ops} operands"])[0] == float(both_2)
    for column in [c for c in per_count["both-fixes"] if c.endswith("operands")]:
        assert numbers(per_count["both-fixes"][column])[0] < numbers(per_count["optimizer-fix"][column])[0], column

    rl = results_rows("results-openrlhf-rl")
    gain, r_low, r_high = grab(DEMOS, r"GRPO add \+(" + NUMBER + r") points to the corrected SFT model and nothing to "
                                      r"the broken one, whose rollouts earn reward (" + NUMBER + r") to (" + NUMBER
                               + r")", "the RL stage")
    fixed = rl["both-fixes"]
    assert_same(gain, numbers(fixed["SFT→RL avg@4 (%)"])[0] - numbers(fixed["SFT avg@4 (%)"])[0], "GRPO's gain")
    rewards = [numbers(rl["both-bugs"][c])[0] for c in ("RL reward, first 10% of rounds", "RL reward, last 10%")]
    assert_same(r_low, min(rewards), "lowest reward")
    assert_same(r_high, max(rewards), "highest reward")


def test_demos_md_llamafactory_prose():
    lf_md = results_md("results-llamafactory")
    s_low, s_high = grab(DEMOS, r"11\.6 minutes on 2 CPU cores, (\d+)–(\d+) s per SFT run", "the SFT run time")
    assert f"one SFT run: {s_low}-{s_high} s" in lf_md
    records = read_json("examples", "sftrl_tiny", "results-llamafactory", "results.json")["records"]
    runs = {(r["config"], r["seed"]): r for r in records}
    seeds = sorted({r["seed"] for r in records})
    g_low, g_high = grab(DEMOS, r"The first step's gradient norm of `buggy` is (" + NUMBER + r")–(" + NUMBER
                         + r") of `fixed`", "the first step's gradient norm")
    ratios = [runs["buggy", s]["sft_grad_norm"][0] / runs["fixed", s]["sft_grad_norm"][0] for s in seeds]
    assert same(g_low, min(ratios)) and same(g_high, max(ratios)), ratios
    tol, f_low, f_high, steps = grab(DEMOS, r"`fixed` follows the no-offload reference to (" + NUMBER + r") relative for "
                                            r"the first (\d+)–(\d+) of (\d+) steps", "fixed against reference")
    within = [(first_step_over(relative_gaps(runs["fixed", s], runs["reference", s]), float(tol)) or 1 + int(steps)) - 1
              for s in seeds]
    assert (int(f_low), int(f_high)) == (min(within), max(within))
    assert {len(runs["fixed", s]["sft_loss"]) for s in seeds} == {int(steps)}
    trl = results_rows("results")
    quoted = grab(DEMOS, r"The same numbers as on TRL \((" + NUMBER + r") / (" + NUMBER + r") / (" + NUMBER + r")\)",
                  "TRL's numbers")
    assert [float(q) for q in quoted] == [numbers(trl[c]["SFT avg@4 (%)"])[0] for c in ("buggy", "fixed", "reference")]


def test_mixed_policy_md_prose_numbers():
    data = mixed()
    main, generous, methods = mixed_tables()
    for quoted, run in zip(grab(MIXED_DOC, r"every row \((" + NUMBER + r") min\).*?sft_rl_fixed luffy srft` \(("
                                           + NUMBER + r") min;.*?every row kept \((" + NUMBER + r") min\); then BRIDGE"
                                           r".*?checked equal to the first \((" + NUMBER + r") min\)", "wall times"),
                           [data["kept"][0]["wall_s"], data["kept"][1]["wall_s"], data["generous_kept"][0]["wall_s"],
                            data["wall_s"]]):
        assert_same(quoted, run / 60, "wall time")
    assert data["base_remade"]
    base, share, corrected_sft = grab(MIXED_DOC, r"It solves (" + NUMBER + r")% of the test problems before any "
                                                 r"fine-tuning, (" + NUMBER + r") of what one corrected SFT epoch reaches "
                                                 r"\((" + NUMBER + r")%\)", "the base model")
    sft = statistics.fmean(r["accuracy_sft"] for r in data["records"] if r["config"] == "sft_rl_fixed")
    assert_same(base, 100 * data["base_accuracy"], "base model")
    assert_same(corrected_sft, 100 * sft, "corrected SFT")
    assert_same(share, data["base_accuracy"] / sft, "base over SFT")
    buggy, b_base, b_low, b_high = grab(
        MIXED_DOC, r"Buggy SFT→RL \((\S+ ± \S+)%, no better than the base model's (" + NUMBER + r")%: the offload bug "
                   r"leaves its SFT at (" + NUMBER + r")-(" + NUMBER + r")%\)", "the buggy row")
    assert buggy == main["SFT→RL, buggy SFT"]["test avg@4 at F (%)"]
    assert_same(b_base, 100 * data["base_accuracy"], "base model")
    buggy_sft = [100 * r["accuracy_sft"] for r in data["records"] if r["config"] == "sft_rl_buggy"]
    assert same(b_low, min(buggy_sft)) and same(b_high, max(buggy_sft)), buggy_sft
    ratio = data["settings"]["budget_ratio"]
    at_budget = [numbers(row[f"test avg@4 at {ratio:g} F (%)"])[0] for row in methods.values()]
    at_f = [numbers(row["test avg@4 at F (%)"])[0] for row in methods.values()]
    m_low, m_high, bridge_low, fixed, compute, e_low, e_high = grab(
        MIXED_DOC, r"below every mixed-policy method at " + re.escape(f"{ratio:g}") + r" F \((" + NUMBER + r")-(" + NUMBER
                   + r")%, each above the base on every seed but BRIDGE, one of whose three seeds ends at (" + NUMBER
                   + r")%\), and corrected SFT→RL \((\S+ ± \S+)%\) is far above them all "
                   r"with (" + NUMBER + r") of their compute\. At equal FLOPs \(F\) the mixed-policy methods are at ("
                   + NUMBER + r")-(" + NUMBER + r")%", "the ordering paragraph")
    assert (float(m_low), float(m_high)) == (min(at_budget), max(at_budget))
    assert (float(e_low), float(e_high)) == (min(at_f), max(at_f))
    # "each above the base on every seed but BRIDGE": the table's column, and BRIDGE's lowest seed
    assert {n for n, row in methods.items() if row["above base at the end"] != "yes"} == {"BRIDGE"}
    bridge_end = [100 * r["accuracy"] for r in data["records"] if r["config"] == "bridge"]
    assert_same(bridge_low, min(bridge_end), "BRIDGE's lowest seed")
    assert min(bridge_end) < 100 * data["base_accuracy"]
    # the BRIDGE paragraph
    pick, val, *tried, at_f_text, at_end_text, generous_value, steps, others_low, others_high = grab(
        MIXED_DOC, r"its pick is (\S+) \(validation (" + NUMBER + r")%; (" + NUMBER + r")% at 2\.5e-5, (" + NUMBER
                   + r")% at 1e-4, (" + NUMBER + r")% at 2\.5e-4\), it scores (\S+ ± \S+)% at F and (\S+ ± \S+)% at "
                   + re.escape(f"{ratio:g}") + r" F, the\s+lowest of the six there, and (" + NUMBER + r")% at \d+ F\..*?\(("
                   + NUMBER + r") steps to \d+ F where the others take (" + NUMBER + r")-(" + NUMBER + r")\)",
        "the BRIDGE paragraph")
    bridge = main["BRIDGE"]
    assert float(pick) == data["picked"]["bridge"] and val == bridge["validation (%)"]
    for quoted, lr in zip(tried, ("2.5e-05", "0.0001", "0.00025")):
        assert_same(quoted, 100 * data["tuning"]["bridge"][lr], f"BRIDGE at {lr}")
    assert at_f_text == bridge["test avg@4 at F (%)"] and at_end_text == bridge[f"test avg@4 at {ratio:g} F (%)"]
    assert min(at_budget) == numbers(at_end_text)[0]
    assert_same(generous_value, 100 * data["generous"]["bridge"]["accuracy"], "BRIDGE at the generous budget")
    assert int(steps) == data["generous"]["bridge"]["steps"]
    other_steps = [run["steps"] for m, run in data["generous"].items() if m != "bridge"]
    assert (int(others_low), int(others_high)) == (min(other_steps), max(other_steps))
    assert fixed == main["SFT→RL, corrected"]["test avg@4 at F (%)"]
    ends = {config: {r["flops"] for r in data["records"] if r["config"] == config} for config in data["picked"]}
    mixed_end = statistics.fmean(f for c, fl in ends.items() if not c.startswith("sft_rl") for f in fl)
    assert_same(compute, statistics.fmean(ends["sft_rl_fixed"]) / mixed_end, "share of the compute")
    tuning = data["tuning"]
    for method, value in zip(("luffy", "prefix_rft", "relift"),
                             grab(MIXED_DOC, r"validation at 2\.5e-4: LUFFY (" + NUMBER + r")%, Prefix-RFT (" + NUMBER
                                  + r")%, ReLIFT (" + NUMBER + r")%", "large learning rates")):
        assert_same(value, 100 * tuning[method]["0.00025"], f"{method} at 2.5e-4")
    best, best_value, other_value, other = grab(
        MIXED_DOC, r"its best learning rate is (\S+), validation (" + NUMBER + r")% against (" + NUMBER + r")% at (\S+)\)",
        "SFT→RL's learning rates")
    assert float(best) == data["picked"]["sft_rl_fixed"]
    sweep = {float(lr): acc for lr, acc in tuning["sft_rl_fixed"].items()}
    assert_same(best_value, 100 * sweep[float(best)], "best")
    assert_same(other_value, 100 * sweep[float(other)], "other")
    for name, value in zip(("ReLIFT", "Prefix-RFT", "HPT"),
                           grab(MIXED_DOC, r"ReLIFT rose from \S+ ± \S+% to (\S+ ± \S+)% at \S+ F, Prefix-RFT from \S+ ± "
                                           r"\S+% to (\S+ ± \S+)%, and HPT went from \S+ ± \S+% to (\S+ ± \S+)%",
                                "after the fidelity changes")):
        assert value == main[name][f"test avg@4 at {ratio:g} F (%)"], name
    relift_over = grab(MIXED_DOC, r"ReLIFT only by (" + NUMBER + r") points", "ReLIFT's generous margin")[0]
    assert "+" + relift_over == generous["ReLIFT"]["over the base (points)"]


def test_patches_md_dynamic_batching_table():
    rows = dynamic_rows()["rows"]
    shown = table_with(PATCHES_DOC, "OpenRLHF", "DeepSpeed", "ranks", "`--adam_offload`")
    assert len(shown) == len(rows) // 2, "one row per OpenRLHF/DeepSpeed/offload, actor and critic together"
    distance = next(c for c in shown[0] if c.startswith("unpatched: worst step"))
    weights = next(c for c in shown[0] if c.startswith("unpatched, step 1"))
    patched = next(c for c in shown[0] if c.startswith("patched"))
    for row in shown:
        offload = {"yes": True, "no": False}[row["`--adam_offload`"]]
        pair = {r["trainer"]: r for r in rows if r["deepspeed"] == row["DeepSpeed"] and r["ranks"] == int(row["ranks"])
                and r["offload"] == offload and r["openrlhf"] == row["OpenRLHF"].split()[0]}
        assert set(pair) == {"actor", "critic"}, row
        actor, critic = pair["actor"]["unpatched"], pair["critic"]["unpatched"]
        if "crash" in row[distance]:
            assert "error" in actor and "error" in critic and actor["error"].split(":")[0] in row[distance]
        else:
            a, c = re.match(r"(\d+)% / (\d+)%", row[distance]).groups()
            assert_same(a, 100 * actor["max_relative_diff"], f"{row['OpenRLHF']} actor")
            assert_same(c, 100 * critic["max_relative_diff"], f"{row['OpenRLHF']} critic")
            assert [round(w, 2) + 0.0 for w in actor["first_step_weights"]] == numbers(row[weights]), row
            leak = re.search(r"a leak of (" + NUMBER + r")× and (" + NUMBER + r")×", row[distance])
            if leak:
                assert [float(x) for x in leak.groups()] == [round(x, 2) for x in actor["leak"][1:]]
        worst = max(pair[t]["patched"]["max_abs_diff"] for t in pair)
        assert_same(row[patched], worst, f"{row['OpenRLHF']} patched")


def test_patches_md_costs():
    data = dynamic_rows()
    md = read("benchmarks", "results", "dynamic_batch.md")
    costs = data["component_costs"]
    wrapper, window, share, ms_low, ms_high, m_low, m_high, pairs, p_low, p_high = grab(
        PATCHES_DOC, r"the `training_step` wrapper adds (" + NUMBER + r") µs per micro-batch and the loss window of "
                     r"\S+ (" + NUMBER + r") µs \(.*?\), at most (" + NUMBER + r")% of the (\d+)–(\d+) ms tiny-model "
                     r"steps timed here; end to end, `ppo_train` per optimizer step patched / unpatched has a median of ("
                     + NUMBER + r")–(" + NUMBER + r") over (\d+) interleaved pairs, each pair between (" + NUMBER
                     + r") and (" + NUMBER + r")", "the dynamic-batching cost")
    assert_same(wrapper, costs["training_step_wrapper_us"], "wrapper")
    assert_same(window, costs["loss_window_us"], "loss window")
    assert_same(share, 100 * float(re.search(r"at most (" + NUMBER + r") of a step", flat(md)).group(1)), "share")
    step_ms = [int(ms) for ms in re.findall(r": (\d+) ms", re.search(r"optimizer steps timed above \((.*?)\)",
                                                                    flat(md)).group(1))]
    assert (int(ms_low), int(ms_high)) == (min(step_ms), max(step_ms))
    timed = [row for row in table_with(md, "time patched/unpatched") if row["time patched/unpatched"] != "n/a"]
    medians = [numbers(row["time patched/unpatched"])[0] for row in timed]
    spreads = [x for row in timed for x in numbers(row["time patched/unpatched"])[1:]]
    assert same(m_low, min(medians)) and same(m_high, max(medians)), medians
    assert same(p_low, min(spreads)) and same(p_high, max(spreads)), spreads
    repeats = {len(r["unpatched"]["seconds_per_step"]) - 1 for r in data["rows"]
               if len(r["unpatched"].get("seconds_per_step", [])) > 1}
    assert repeats == {int(pairs)}

    overhead = by(table_with(read("benchmarks", "results", "overhead.md"), "patch", "ratio [min, max]"), "patch")

    def ratio(name, column="ratio [min, max]"):
        return numbers(overhead[name][column])[0]
    runs = by(table_with(PATCHES_DOC, "patch", "ratios over three runs"), "patch")
    assert "The committed run is the third." in flat(PATCHES_DOC)
    for shown, name in (("`offload-ga-drop`", "offload-ga-drop"), ("`offload-multi-backward`", "offload-multi-backward"),
                        ("`zero2-ga-7718`", "zero2-ga-7718"),
                        ("`bf16-last-micro-batch-7985`", "bf16-last-micro-batch-7985"),
                        ("`offload-manual-accumulation`, against the same calls with the patch off",
                         "offload-manual-accumulation-same-calls")):
        assert numbers(runs[shown]["ratios over three runs"].split("(")[0])[2] == ratio(name), name
    same_process = "ratio on / off [min, max]"
    bf16 = grab(PATCHES_DOC, r"`bf16-last-micro-batch-7985`: \S+, \S+, (" + NUMBER + r")\.\*\*", "bf16 in one process")[0]
    assert float(bf16) == ratio("bf16-last-micro-batch-7985", same_process)
    manual = grab(PATCHES_DOC, r"`offload-manual-accumulation`: \S+, \S+, (" + NUMBER + r")\.\*\*", "manual")[0]
    assert float(manual) == ratio("offload-manual-accumulation", same_process)
    o_low, o_high = grab(PATCHES_DOC, r"The offload and #7718 patches: (" + NUMBER + r")-(" + NUMBER + r")\.",
                         "offload and #7718 in one process")
    fixes = [ratio(n, same_process) for n in ("offload-ga-drop", "offload-multi-backward", "zero2-ga-7718")]
    assert same(o_low, min(fixes)) and same(o_high, max(fixes)), fixes
    boundary = grab(PATCHES_DOC, r"against the documented call pattern \(boundary set\) is (" + NUMBER + r")-",
                    "manual accumulation against the boundary")[0]
    assert_same(boundary, ratio("offload-manual-accumulation"), "committed run")
    text = flat(read("benchmarks", "results", "overhead.md"))
    for pattern in (r"takes (" + NUMBER + r") ms by `-X importtime`", r"adds (" + NUMBER + r") ms to a bare interpreter",
                    r"recompiled at every start: (" + NUMBER + r") ms", r"The static doctor takes (" + NUMBER + r") s",
                    r"`--probe` (" + NUMBER + r") s", r"the wrapper adds (" + NUMBER + r") µs of Python per"):
        quoted = grab(PATCHES_DOC, pattern, pattern)[0]
        assert re.search(r"\b" + re.escape(quoted) + r" (ms|s|µs)\b", text), f"{quoted} is not in overhead.md"


def test_patches_md_supported_releases_sentence():
    rows = read_json("benchmarks", "results", "deepspeed_matrix.json")
    rest = read_json("benchmarks", "results", "deepspeed_matrix_cpu_adam_rest.json")
    cpu = read_json("benchmarks", "results", "deepspeed_matrix_cpu_adam.json")
    two = read_json("benchmarks", "results", "deepspeed_matrix_two_ranks.json")
    first, last, count, minutes = grab(PATCHES_DOC, r"Every release from (\S+) to (\S+) \((\d+) releases\), .*?"
                                                    r"deepspeed_matrix\.py`, (" + NUMBER + r") min on 2 cores",
                                       "the releases sentence")
    versions = [row["version"] for row in rows["rows"]]
    assert (first, last, int(count)) == (versions[0], versions[-1], len(versions))
    assert_same(minutes, rows["meta"]["wall_minutes"], "matrix")
    cpu_minutes, others, rest_minutes, two_minutes = grab(
        PATCHES_DOC, r"--name deepspeed_matrix_cpu_adam`, (" + NUMBER + r") min, and the same with the other (\d+) "
                     r"releases and `--name deepspeed_matrix_cpu_adam_rest`, (" + NUMBER + r") min.*?"
                     r"--name deepspeed_matrix_two_ranks`, (" + NUMBER + r") min", "the other runs")
    assert_same(cpu_minutes, cpu["meta"]["wall_minutes"], "CPU Adam")
    assert_same(rest_minutes, rest["meta"]["wall_minutes"], "CPU Adam, the rest")
    assert_same(two_minutes, two["meta"]["wall_minutes"], "two ranks")
    assert int(others) == len(rest["rows"])
    assert sorted(r["version"] for r in cpu["rows"] + rest["rows"]) == sorted(versions)


# ---- examples/README.md: the index points at what exists, and lists every demo and recipe ---------------

def test_examples_index():
    index = read("examples", "README.md")
    modules = set(re.findall(r"python -m (examples(?:\.\w+)+)", index))
    for module in modules:
        path = os.path.join(ROOT, *module.split("."))
        assert os.path.isfile(path + ".py") or os.path.isfile(os.path.join(path, "__main__.py")), module
    for script in re.findall(r"bash (examples/\S+\.sh)", index):
        assert os.path.isfile(os.path.join(ROOT, script)), script
    for link in re.findall(r"\]\(([^)#\s]+)", index):
        assert os.path.exists(os.path.join(ROOT, "examples", link)), link
    listed = {os.path.join("examples", *m.split(".")[1:]) + ".py" for m in modules}
    demos = glob.glob(os.path.join(ROOT, "examples", "sftrl_tiny", "*demo.py"))
    recipes = [p for p in glob.glob(os.path.join(ROOT, "examples", "recipes", "*.py"))
               if os.path.basename(p) not in ("__init__.py", "common.py", "openrlhf_reward.py")]
    missing = sorted(os.path.relpath(p, ROOT) for p in demos + recipes if os.path.relpath(p, ROOT) not in listed)
    assert not missing, f"examples/README.md does not list {missing}"
    assert "examples.mixed_policy.compare" in modules and "examples.audits.published" in modules
    assert "](examples/README.md)" in section(README, "More")
