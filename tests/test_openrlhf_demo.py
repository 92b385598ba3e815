"""A short run of the OpenRLHF half of the tiny demo on the real stack: OpenRLHF 0.9.10's own
`openrlhf.cli.train_sft` (run as __main__, unchanged) with DeepSpeed 0.18.9 ZeRO-2 and Adam offload
on the CPU accelerator, for the four patch configurations of the paper's Table 2. Only flash_attn
and vllm are import-only stand-ins (CUDA-only, FACTS.md), and OpenRLHF's torch.cuda calls are
no-ops (examples/openrlhf_cpu); the trainer, its loss and DeepSpeed are real."""
import json
import os
import subprocess
import sys

import pytest

from conftest import AFFECTED, ROOT, require_openrlhf, run_smoke

sys.path.insert(0, ROOT)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_openrlhf") / "results"
    _, _, records = run_smoke("examples.sftrl_tiny.openrlhf_demo", require_openrlhf("0.9.10", deepspeed=AFFECTED), out)
    return out, records


def test_every_configuration_ran_openrlhf_and_the_results_folder_is_complete(smoke):
    out, records = smoke
    assert set(records) == {"both-bugs", "loss-fix", "optimizer-fix", "both-fixes"}
    table = (out / "results.md").read_text()
    assert all(f"| {config} |" in table for config in records)
    assert (out / "sft_curves.png").stat().st_size > 0
    for config, record in records.items():
        assert record["openrlhf"] == "0.9.10" and record["deepspeed"] == AFFECTED
        assert len(record["sft_grad_norm"]) == 8        # 64 problems / (micro-batch 1 x GA 8)
        assert 0.0 <= record["acc_sft"] <= 1.0
        cli = json.loads((out / "runs" / f"{config}-seed0" / "sft" / "run.json").read_text())["cli"]
        assert "--adam_offload" in cli and cli[cli.index("--zero_stage") + 1] == "2"
        assert cli[cli.index("--train_batch_size") + 1] == "8"


def test_each_configuration_switches_exactly_its_patches_inside_the_training_process(smoke):
    _, records = smoke
    states = {config: (r["optimizer_patch"], r["loss_patch"]) for config, r in records.items()}
    assert states["both-bugs"][0].startswith("off") and states["both-bugs"][1].startswith("off")
    assert states["loss-fix"] == ("disabled", "patched")
    assert states["optimizer-fix"] == ("patched", "disabled")
    assert states["both-fixes"] == ("patched", "patched")


def test_each_fix_changes_the_first_step_and_only_its_own_bug(smoke):
    _, records = smoke
    first = {config: r["sft_grad_norm"][0] for config, r in records.items()}
    # The logged loss is OpenRLHF's own mean of micro-batch losses: same model, same first batch.
    losses = {r["sft_loss"][0] for r in records.values()}
    assert max(losses) == pytest.approx(min(losses), rel=1e-6)
    # The offload bug drops micro-batches 2..7 of 8: a much smaller first gradient, with or
    # without the loss fix.
    assert first["both-bugs"] < 0.7 * first["optimizer-fix"]
    assert first["loss-fix"] < 0.7 * first["both-fixes"]
    # The loss fix reweights micro-batches of different token counts: a different gradient, not
    # a different order of magnitude.
    assert first["both-fixes"] != pytest.approx(first["optimizer-fix"], rel=1e-4)
    assert first["both-fixes"] == pytest.approx(first["optimizer-fix"], rel=0.5)


def test_patch_names_of_the_configurations_are_registered():
    import sftrl_patches
    from examples.sftrl_tiny import openrlhf_demo
    assert set(openrlhf_demo.OPTIMIZER_PATCHES) | {openrlhf_demo.LOSS_PATCH} <= set(sftrl_patches.status())


def test_without_openrlhf_the_demo_says_how_to_get_it(tmp_path):
    import importlib.util
    if importlib.util.find_spec("openrlhf") is not None:
        pytest.skip("OpenRLHF is installed in this environment")
    env = {**os.environ, "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.openrlhf_demo", "--out", str(tmp_path / "out")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "pip install --no-deps openrlhf==0.9.10" in proc.stderr
    assert not (tmp_path / "out").exists()              # nothing written before the check
