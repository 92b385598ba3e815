"""A short run of the whole tiny comparison (a few steps of every method and of corrected
SFT-then-RL, one seed) on the real stack, and the FLOPs it reports checked against its own
token counts."""

import pytest

from conftest import AFFECTED, require_release, run_smoke

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
