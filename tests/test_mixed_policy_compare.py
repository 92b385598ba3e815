"""A short run of the whole tiny comparison (a few steps of every method and of corrected
SFT-then-RL, one seed, a two-value learning-rate sweep each) on the real stack: the FLOPs it reports
checked against its own token counts, the picks against tuning.json, the curves against the budget."""
import json
import shutil

import pytest

from conftest import AFFECTED, require_release, run_smoke


def compare_digest(folder):
    from examples.mixed_policy.compare import base_digest
    return base_digest(str(folder))

pytest.importorskip("trl")


def test_the_comparison_runs_every_method_and_reports_flops(tmp_path):
    out = tmp_path / "results"
    configs = ["sft_rl_fixed", "luffy", "srft", "relift", "hpt", "prefix_rft"]
    _, results, records = run_smoke("examples.mixed_policy.compare", require_release(AFFECTED), out,
                                    "--configs", *configs)
    assert set(records) == set(configs)
    assert (out / "accuracy_vs_flops.png").stat().st_size > 0
    table = (out / "results.md").read_text()
    assert all(label in table for label in ("LUFFY", "SRFT", "ReLIFT", "HPT", "Prefix-RFT", "SFT→RL, corrected"))
    n = results["parameters"]
    for config, record in records.items():
        tokens = record["tokens"]
        assert record["flops"] == n * (6 * tokens["sft"] + 8 * tokens["on_policy"] + 6 * tokens["off_policy"])
        assert tokens["on_policy"] > 0
        assert 0.0 <= record["accuracy"] <= 1.0
    assert records["sft_rl_fixed"]["tokens"]["sft"] == results["sft_tokens_per_epoch"]
    for config in ("luffy", "srft", "hpt", "prefix_rft"):  # each puts expert tokens in its RL batches
        assert records[config]["tokens"]["off_policy"] > 0

    tuning = json.loads((out / "tuning.json").read_text())
    assert set(tuning) == set(configs)
    for config, sweep in tuning.items():
        assert set(sweep) == ({"5e-05", "0.0001"} if config.startswith("sft_rl") else {"0.0005", "0.001"})
        best = max(sweep.values())
        assert sweep[f"{results['picked'][config]:g}"] == best  # picked on validation
        assert records[config]["lr"] == results["picked"][config]
    equal = results["equal_flops"]
    assert equal == records["sft_rl_fixed"]["flops"]
    generous = results["generous"]  # each mixed method again at its pick, to 2.5 F (or its step ceiling)
    assert set(generous) == set(configs) - {"sft_rl_fixed"}
    for config, run in generous.items():
        assert run["lr"] == results["picked"][config] and 0.0 <= run["accuracy"] <= 1.0
        assert run["flops"] > records[config]["flops"] or run["steps"] == 24
    assert "Generous budget (2.5 F" in table
    for config, record in records.items():
        curve = record["curve"]
        assert [point[0] for point in curve] == sorted(point[0] for point in curve)
        assert curve[-1] == [record["flops"], record["accuracy"]]
        if config != "sft_rl_fixed":  # mixed: to the budget, read at F on the way
            assert record["flops"] >= 1.8 * equal
            assert len(curve) >= 2
            assert record["accuracy_at_equal_flops"] == next(a for f, a in curve if f >= equal)

    # --keep: the rows of unchanged methods come from this comparison, the others run again. The base model is
    # not committed, so a fresh clone has none: it is made again and must equal the earlier one.
    kept = ["sft_rl_fixed", "luffy", "srft"]
    first_weights = (out / "base" / "model.safetensors").read_bytes()
    for folder in ("base", "data", "tokenizer"):
        shutil.rmtree(out / folder)
    written = lambda config: {p: p.stat().st_mtime_ns for p in (out / "runs").glob(f"{config}-seed0/*/run.json")}  # noqa: E731
    first_runs = {config: written(config) for config in configs}
    _, again, again_records = run_smoke("examples.mixed_policy.compare", require_release(AFFECTED), out,
                                        "--configs", *configs, "--keep", *kept)
    assert (out / "base" / "model.safetensors").read_bytes() == first_weights  # made again, bit for bit
    assert set(again_records) == set(configs) and again["equal_flops"] == equal
    assert all(again_records[c] == records[c] for c in kept)
    # the kept methods' generous runs are reused (same ratio), the others' ran again
    assert set(again["generous"]) == set(generous)
    assert all(again["generous"][c] == generous[c] for c in kept if c in generous)
    assert again["generous_kept"] == [{"configs": ["luffy", "srft"], "command": results["command"],
                                       "wall_s": results["wall_s"]}]
    assert again["base_remade"] is True
    assert again["base_digest"] == results["base_digest"] == compare_digest(out / "base")
    assert again["kept"] == [{"configs": kept, "command": results["command"], "wall_s": results["wall_s"]}]
    assert json.loads((out / "tuning.json").read_text())["luffy"] == tuning["luffy"]
    assert "Rows kept from an earlier comparison" in (out / "results.md").read_text()
    for config in configs:  # the kept rows' runs untouched, the others written again
        assert (written(config) == first_runs[config]) == (config in kept) and first_runs[config]
    with pytest.raises(AssertionError, match="settings differ.*grpo_prompts"):
        run_smoke("examples.mixed_policy.compare", require_release(AFFECTED), out, "--configs", *configs,
                  "--keep", "sft_rl_fixed", "--grpo-prompts", "4")


def test_a_sweep_whose_pick_is_at_an_edge_goes_one_value_beyond_it():
    from types import SimpleNamespace
    from examples.mixed_policy import compare
    best = {"a": 1e-4, "b": 1e-3, "c": 3e-4}  # a's optimum lies below its grid, b's above, c's inside

    def run(config, seed, lr, validate):
        return {"validation": -abs(lr - best[config])}
    study = SimpleNamespace(parallel=lambda f, jobs: [f(*job) for job in jobs], progress=SimpleNamespace(total=0))
    sweeps = compare.tune(study, ["a", "b", "c"], [2e-4, 3e-4, 4e-4], run, 0, extensions=2)
    assert sorted(sweeps["a"]) == [5e-5, 1e-4, 2e-4, 3e-4, 4e-4]  # 1e-4, then 5e-5 as 1e-4 was still the end
    assert compare.pick(sweeps["a"]) == 1e-4
    assert sorted(sweeps["b"]) == [2e-4, 3e-4, 4e-4, 8e-4, 1.6e-3]  # stops after 2 extensions
    assert sorted(sweeps["c"]) == [2e-4, 3e-4, 4e-4]
    assert study.progress.total == 4
    assert compare.tune(study, ["a"], [2e-4, 3e-4], run, 0, extensions=0)["a"].keys() == {2e-4, 3e-4}


def test_a_base_model_made_again_that_differs_stops_a_keep_run():
    from types import SimpleNamespace
    from examples.mixed_policy import compare
    said = []
    study = SimpleNamespace(parameters=100, sft_tokens=50, base="out/base", progress=SimpleNamespace(say=said.append))
    previous = {"parameters": 100, "sft_tokens_per_epoch": 50, "base_accuracy": 0.25}
    compare.check_remade_base(study, previous, 0.25)
    assert said and "equal the earlier" in said[0]
    with pytest.raises(SystemExit, match=r"base_accuracy 0.25 then, 0.3 now.*without --keep"):
        compare.check_remade_base(study, previous, 0.3)
    study.sft_tokens = 51
    with pytest.raises(SystemExit, match=r"sft_tokens_per_epoch 50 then, 51 now"):
        compare.check_remade_base(study, previous, 0.25)


def test_where_the_earlier_run_recorded_its_weights_digest_a_remade_base_must_match_it_bit_for_bit(tmp_path):
    from types import SimpleNamespace
    from examples.mixed_policy import compare
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    said = []
    study = SimpleNamespace(parameters=100, sft_tokens=50, base=str(tmp_path), progress=SimpleNamespace(say=said.append))
    previous = {"parameters": 100, "sft_tokens_per_epoch": 50, "base_accuracy": 0.25,
                "base_digest": compare.base_digest(str(tmp_path))}
    compare.check_remade_base(study, previous, 0.25)
    assert "so do its weights" in said[-1]
    (tmp_path / "model.safetensors").write_bytes(b"weightz")  # same size and numbers, other weights
    with pytest.raises(SystemExit, match=r"base_digest [0-9a-f]{64} then, [0-9a-f]{64} now"):
        compare.check_remade_base(study, previous, 0.25)
    del previous["base_digest"]  # an earlier run from before the digest: numbers only, and it says so
    compare.check_remade_base(study, previous, 0.25)
    assert "recorded no digest" in said[-1]


@pytest.mark.parametrize("flags,message", [
    (["--rl-lrs", "1e-5,abc"], "a learning-rate sweep is a comma-separated list of positive numbers"),
    (["--configs", "luffy"], "keep sft_rl_fixed in --configs"),
    (["--budget-ratio", "0.5"], "--budget-ratio must be >= 1"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, flags, message):
    import subprocess
    import sys
    from conftest import ROOT
    proc = subprocess.run([sys.executable, "-m", "examples.mixed_policy.compare", *flags, "--out", str(tmp_path / "o")],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr
    assert not (tmp_path / "o").exists()


def test_kept_rows_are_traced_to_the_run_that_measured_them():
    from examples.mixed_policy.compare import kept_sources
    first = {"command": "first", "wall_s": 600.0}
    second = {"command": "second", "wall_s": 300.0, "kept": [{"configs": ["luffy", "srft"], "command": "first",
                                                             "wall_s": 600.0}]}
    assert kept_sources(first, ["luffy"]) == [{"configs": ["luffy"], "command": "first", "wall_s": 600.0}]
    assert kept_sources(second, ["srft", "hpt"]) == [{"configs": ["srft"], "command": "first", "wall_s": 600.0},
                                                     {"configs": ["hpt"], "command": "second", "wall_s": 300.0}]
