"""The predictor study (examples/sftrl_tiny/predictor_study.py): its statistics against direct computations,
each variant's SFT command as sft.py parses it, the short-problem split, the report's reading of the paper's
claims, and a smoke run of two variants end to end (TRL + accelerate + the affected DeepSpeed)."""
import json
import math
import os
import random
import sys

import pytest

from conftest import AFFECTED, ROOT, require_release, run_smoke

sys.path.insert(0, ROOT)
from examples.sftrl_tiny import correlation, data, predictor_report, predictor_study  # noqa: E402


# ---- statistics --------------------------------------------------------------------------------------

def test_ranks_share_ties():
    assert correlation.ranks([10, 30, 20, 30]) == [1.0, 3.5, 2.0, 3.5]


def test_spearman_against_the_textbook_formula_without_ties():
    rng = random.Random(3)
    xs, ys = [rng.random() for _ in range(12)], [rng.random() for _ in range(12)]
    rx, ry = correlation.ranks(xs), correlation.ranks(ys)
    n = len(xs)
    textbook = 1 - 6 * sum((a - b) ** 2 for a, b in zip(rx, ry)) / (n * (n * n - 1))
    assert correlation.spearman(xs, ys) == pytest.approx(textbook, abs=1e-12)


def test_spearman_sees_order_not_scale_and_r_squared_sees_the_line():
    xs = [1, 2, 3, 4, 5]
    assert correlation.spearman(xs, [x ** 3 for x in xs]) == pytest.approx(1.0)
    assert correlation.spearman(xs, [-x for x in xs]) == pytest.approx(-1.0)
    assert correlation.r_squared(xs, [2 * x + 1 for x in xs]) == pytest.approx(1.0)
    assert correlation.r_squared(xs, [x ** 3 for x in xs]) < 1.0
    # R² of the least-squares line, computed directly: 1 - residual / total sum of squares
    ys = [2.0, 1.0, 4.0, 3.0, 5.0]
    mx, my = sum(xs) / 5, sum(ys) / 5
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    residual = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    assert correlation.r_squared(xs, ys) == pytest.approx(1 - residual / sum((y - my) ** 2 for y in ys))
    assert math.isnan(correlation.spearman(xs, [1] * 5))


def test_the_bootstrap_interval_brackets_the_statistic_and_is_repeatable():
    rng = random.Random(0)
    xs = [rng.random() for _ in range(20)]
    ys = [x + 0.3 * rng.random() for x in xs]
    low, high = correlation.bootstrap_interval(correlation.spearman, xs, ys)
    assert low <= correlation.spearman(xs, ys) <= high <= 1.0
    assert (low, high) == correlation.bootstrap_interval(correlation.spearman, xs, ys)
    with pytest.raises(ValueError):
        correlation.pearson([1, 2], [1])


# ---- the variants --------------------------------------------------------------------------------------

def sft_args(command):
    """What sft.py makes of the part of an SFT command after `-m examples.sftrl_tiny.sft`."""
    from examples.sftrl_tiny import sft
    return sft.parse_args(command[command.index("examples.sftrl_tiny.sft") + 1:])


@pytest.fixture()
def study_args(tmp_path):
    return predictor_study.parse_args(["--out", str(tmp_path)])


def test_each_variant_changes_what_it_says(study_args):
    args = study_args
    parsed = {v: sft_args(predictor_study.sft_command(args, v, 0, 29999, "OUT", "SHORT"))
              for v in predictor_study.VARIANTS}
    plain = parsed["fixed"]
    assert (plain.epochs, plain.max_samples, plain.lr, plain.sft_loss) == (1.0, None, args.sft_lr, "plain")
    assert plain.data == os.path.join(args.out, "data")
    assert (parsed["half_2ep"].epochs, parsed["half_2ep"].max_samples) == (2.0, args.train // 2)
    assert parsed["short_only"].data == "SHORT"
    assert parsed["lr_low"].lr == pytest.approx(args.sft_lr / 3) and parsed["lr_high"].lr == pytest.approx(args.sft_lr * 3)
    assert {v: parsed[v].sft_loss for v in ("pear_token", "pear_block", "pear_seq")} == {
        "pear_token": "pear-token", "pear_block": "pear-block", "pear_seq": "pear-seq"}
    # only `buggy` turns the patches off
    assert [v for v, (_, on, _) in predictor_study.VARIANTS.items() if not on] == ["buggy"]


def test_the_short_split_holds_exactly_the_problems_with_the_fewest_operands(study_args):
    args = study_args
    train, test = data.generate(60, 5, operands=2, digits=1, seed=1, max_operands=4)
    data.write_jsonl(train, os.path.join(args.out, "data", "train.jsonl"))
    folder, count = predictor_study.short_problems(args)
    with open(os.path.join(folder, "train.jsonl"), encoding="utf-8") as handle:
        short = [json.loads(line) for line in handle]
    fewest = [row for row in train if data.question(row).count(" ") == min(data.question(r).count(" ") for r in train)]
    assert short == fewest and count == len(fewest) and 0 < count < len(train)


# ---- the report ----------------------------------------------------------------------------------------

def record(config, seed, sft, rl, loss=1.0):
    return {"config": config, "seed": seed, "sft_accuracy": sft, "rl_accuracy": rl, "pass_at_1": sft,
            "pass_at_8": sft, "pass_at_max": sft, "heldout_loss": loss, "pass_at_k": {"1": sft}}


def test_the_claims_are_read_from_the_means():
    groups = predictor_report.by_variant([
        record("fixed", 0, 0.50, 0.55), record("fixed", 1, 0.52, 0.57),
        record("half_2ep", 0, 0.48, 0.60), record("half_2ep", 1, 0.49, 0.58),
        record("short_only", 0, 0.60, 0.40), record("short_only", 1, 0.58, 0.42)])
    lines = predictor_report.claim_lines(groups)
    assert "+3.0 points (Quagmires: better). Agrees." in lines[0]
    assert "+8.0 points after SFT, -15.0 after RL" in lines[1] and lines[1].endswith("Agrees.")
    groups = predictor_report.by_variant([record("fixed", 0, 0.5, 0.6), record("short_only", 0, 0.4, 0.5)])
    assert predictor_report.claim_lines(groups)[0].endswith("Does not agree at this scale.")


# ---- end to end ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("predictors")
    stdout, results, records = run_smoke("examples.sftrl_tiny.predictor_study", require_release(AFFECTED), out,
                                         "--configs", "buggy", "short_only", "--parallel", "2")
    return out, results, records


def test_the_smoke_run_measures_every_predictor_and_the_outcome(smoke):
    out, results, records = smoke
    assert set(records) == {"buggy", "short_only"}
    for rec in records.values():
        assert len(rec["pass_at_k"]) == results["settings"]["pass_k_samples"]
        assert math.isfinite(rec["heldout_loss"]) and rec["heldout_loss"] > 0
        assert 0 <= rec["rl_accuracy"] <= 1
    # the patch state as each SFT process saw it: off for buggy only
    assert records["buggy"]["patch"].get("deepspeed-offload-ga-drop") != "patched"
    assert records["short_only"]["patch"].get("deepspeed-offload-ga-drop") == "patched"
    for name in ("results.md", "results.json", "predictors.png"):
        assert os.path.exists(os.path.join(out, name)), name


def test_report_only_reads_the_finished_runs_back_and_says_what_is_missing(smoke, capsys):
    out, results, records = smoke
    code = predictor_study.main(["--smoke", "--seeds", "0", "--configs", "buggy", "short_only", "fixed",
                                 "--out", str(out), "--report-only"])
    assert code == 0
    with open(os.path.join(out, "results.json"), encoding="utf-8") as handle:
        again = {r["config"]: r for r in json.load(handle)["records"]}
    assert set(again) == {"buggy", "short_only"}   # fixed never ran here
    for config, rec in records.items():
        for key in ("sft_accuracy", "heldout_loss", "rl_accuracy", "pass_at_k"):
            assert again[config][key] == rec[key], (config, key)
    with open(os.path.join(out, "results.md"), encoding="utf-8") as handle:
        assert "Stopped early: 2 of the 3 runs asked for finished" in handle.read()


def test_resume_reads_finished_runs_back_without_training_again(smoke, capsys):
    out, results, records = smoke
    base_made = os.path.getmtime(os.path.join(out, "base", "config.json"))
    with open(os.path.join(out, "results.json"), encoding="utf-8") as handle:
        before = json.load(handle)
    code = predictor_study.main(["--smoke", "--seeds", "0", "--configs", "buggy", "short_only", "--out", str(out),
                                 "--resume"])
    assert code == 0 and "finished earlier, read back" in capsys.readouterr().out
    with open(os.path.join(out, "results.json"), encoding="utf-8") as handle:
        resumed = json.load(handle)
    # the session it stands on, named in the report (each session's own wall time)
    last = resumed["earlier_sessions"][-1]
    assert (last["wall_s"], last["command"]) == (before["wall_s"], before["command"])
    with open(os.path.join(out, "results.md"), encoding="utf-8") as handle:
        assert "Resumed (`--resume`)" in handle.read()
    assert os.path.getmtime(os.path.join(out, "base", "config.json")) == base_made   # the base model kept
    with open(os.path.join(out, "results.json"), encoding="utf-8") as handle:
        again = {r["config"]: r for r in json.load(handle)["records"]}
    assert {c: again[c]["rl_accuracy"] for c in again} == {c: records[c]["rl_accuracy"] for c in records}


def test_readme_and_demos_quote_the_committed_study():
    folder = os.path.join(ROOT, "examples", "sftrl_tiny", "results-predictors")
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as handle:
        committed = json.load(handle)
    records = committed["records"]
    outcome = [r["rl_accuracy"] for r in records]
    rho_sft = correlation.spearman([r["sft_accuracy"] for r in records], outcome)
    rho_pass = correlation.spearman([r["pass_at_max"] for r in records], outcome)
    sessions = [s["wall_s"] for s in committed.get("earlier_sessions", [])] + [committed["wall_s"]]
    finished = committed.get("finished_runs", len(records))
    asked = committed.get("asked_runs", len(records))
    quoted = [f"Spearman +{rho_sft:.2f}", f"pass@64 worst (+{rho_pass:.2f})",
              " + ".join(f"{w / 60:.1f}" for w in sessions) + " min",
              f"all {len(records)} runs" if finished == asked else f"stopped after {finished} of {asked} runs"]
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as handle:
        readme = " ".join(handle.read().split())
    for text in quoted:
        assert text in readme, text
    with open(os.path.join(ROOT, "docs", "demos.md"), encoding="utf-8") as handle:
        demos = " ".join(handle.read().split())
    assert f"(rho +{rho_sft:.2f}" in demos and f"(rho +{rho_pass:.2f}" in demos
    with open(os.path.join(folder, "results.md"), encoding="utf-8") as handle:
        assert handle.read() == predictor_report_text(committed)


def predictor_report_text(committed, tmp=None):
    """results.md as the report writes it from the committed results.json (the plot is not compared)."""
    import tempfile
    with tempfile.TemporaryDirectory() as out:
        meta = {k: v for k, v in committed.items() if k != "records"}
        predictor_report.write(out, committed["records"], meta)
        with open(os.path.join(out, "results.md"), encoding="utf-8") as handle:
            return handle.read()
