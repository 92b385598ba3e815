"""A short run of the whole tiny demo (a few steps of everything) on the real stack: TRL's
SFTTrainer under `accelerate launch` with DeepSpeed 0.18.9 ZeRO-2 on the CPU accelerator, TRL's
GRPOTrainer, generation and Math-Verify grading. The patches reach the SFT rank through autoload
only (nothing in the demo imports them), and `buggy` switches them off."""

import pytest

from conftest import AFFECTED, require_release, run_smoke

pytest.importorskip("trl")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "results"
    stdout, _, records = run_smoke("examples.sftrl_tiny.demo", require_release(AFFECTED), out)
    return out, records, stdout


def test_every_stage_ran_and_the_results_folder_is_complete(smoke):
    out, records, stdout = smoke
    assert set(records) == {"buggy", "fixed", "reference"}
    for name in ("results.md", "sft_curves.png", "rl_reward.png"):
        assert (out / name).stat().st_size > 0
    table = (out / "results.md").read_text()
    assert all(f"| {config} |" in table for config in records)
    for record in records.values():
        assert len(record["sft_loss"]) == 8            # 64 problems / (micro-batch 1 x GA 8)
        assert len(record["rl_reward"]) >= 2           # 4 GRPO steps, 2 mini-batches per round
        assert 0.0 <= record["acc_sft"] <= 1.0 and 0.0 <= record["acc_rl"] <= 1.0
    assert "[3/3]" in stdout                           # progress reached the last run


def test_the_patch_state_is_read_inside_each_training_process(smoke):
    _, records, _ = smoke
    assert records["buggy"]["deepspeed"] == AFFECTED
    assert records["buggy"]["patch"].startswith("off")
    assert records["fixed"]["patch"] == "patched"      # autoload alone: the demo never imports sftrl_patches


def test_fixed_offload_matches_the_no_offload_reference_and_buggy_does_not(smoke):
    _, records, _ = smoke
    buggy, fixed, reference = (records[c]["sft_grad_norm"] for c in ("buggy", "fixed", "reference"))
    assert fixed == pytest.approx(reference, rel=1e-5)
    # Same model, same first batch: the first step's loss is the same; its gradient is not,
    # because the affected release drops micro-batches 2..7 of 8.
    assert records["buggy"]["sft_loss"][0] == pytest.approx(records["fixed"]["sft_loss"][0], rel=1e-6)
    assert buggy[0] < 0.7 * fixed[0]
