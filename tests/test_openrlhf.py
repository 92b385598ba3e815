"""The OpenRLHF loss-aggregation patches on OpenRLHF's own code (installed --no-deps, CPU, gloo)."""
import json
import os
import sys

import pytest

from conftest import (AFFECTED, FIXED, MULTI_RANK, ORL_AFFECTED, ORL_FIXED, ORL_NEWEST, ORL_OLD, ROOT, last_json,
                      require_openrlhf, run_python)

sys.path.insert(0, ROOT)
from sftrl_patches.probes import launch_command  # noqa: E402

PATCH_OF = {"sft": "openrlhf-sft-loss-aggregation", "actor": "openrlhf-actor-loss-aggregation"}


def run_two_ranks(version, deepspeed, trainer, tmp_path):
    import subprocess
    env = require_openrlhf(version, deepspeed)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env["PYTHONPATH"]])
    env.update(DS_ACCELERATOR="cpu", PYTHONWARNINGS="ignore", SFTRL_PATCHES_DISABLE="")
    out = tmp_path / "result.json"
    command = launch_command(sys.executable, 2, [os.path.join(ROOT, "tests", "openrlhf_child.py"),
                                                 "--trainer", trainer, "--out", str(out)])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("trainer", ["sft", "actor"])
@pytest.mark.parametrize("version", ORL_AFFECTED)
def test_uneven_micro_batches_and_ranks_get_the_token_mean_gradient_only_when_patched(version, trainer, tmp_path):
    result = run_two_ranks(version, MULTI_RANK, trainer, tmp_path)
    assert result["world_size"] == 2 and result["state_at_start"] == "patched"
    # Unpatched, each micro-batch (and on 0.9.10 each rank) weighs the same whatever its tokens.
    assert result["unpatched"]["state"] == "reverted"
    assert result["unpatched"]["max_abs_diff"] > 1e-4, result
    assert result["unpatched"]["relative_diff"] > 0.05, result
    # Patched: the update equals the gradient of the step's token mean (fp32).
    assert result["patched"]["state"] == "patched"
    assert result["patched"]["max_abs_diff"] < 1e-6, result


@pytest.mark.parametrize("trainer", ["sft", "actor"])
def test_fixed_release_is_left_alone_and_already_correct(trainer, tmp_path):
    result = run_two_ranks(ORL_FIXED, FIXED, trainer, tmp_path)
    assert result["state_at_start"] == "not-affected"
    for label in ("unpatched", "patched"):
        assert result[label]["max_abs_diff"] < 1e-6, result


STEP_LOSS = """
import json
from openrlhf.models.loss import SFTLoss
import torch
from sftrl_patches.loss_window import StepWindows, LOCAL_MEAN
# Two micro-batches of one optimizer step, token losses [1, 2] and [3, 4, 5, 6, 7] (FACTS.md).
batches = [torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0, 5.0, 6.0, 7.0]])]
loss_fn = SFTLoss()
windows = StepWindows(batches, accumulation=2, count=lambda b: b.numel(), mode=LOCAL_MEAN)
patched = unpatched = 0.0
for batch in windows:
    loss = loss_fn(-batch, torch.ones_like(batch))   # SFTLoss takes log-probs
    unpatched += float(loss) / 2                       # DeepSpeed divides each backward by GA
    patched += float(loss * windows.scale) / 2
print(json.dumps({"patched": patched, "unpatched": unpatched}))
"""


@pytest.mark.parametrize("version", ORL_AFFECTED)
def test_facts_example_gives_4_patched_and_3_25_unpatched(version):
    out = last_json(run_python(STEP_LOSS, env=require_openrlhf(version, AFFECTED)))
    assert out["unpatched"] == pytest.approx(3.25)
    assert out["patched"] == pytest.approx(4.0)


STATUS = """
import json, sys
import sftrl_patches
names = [n for n in sftrl_patches.PATCHES if n.startswith("openrlhf")]
static = {n: sftrl_patches.status(n).state for n in names}
print(json.dumps({"static": static, "imported": sorted(m for m in sys.modules if m.startswith(("openrlhf", "torch")))}))
"""


@pytest.mark.parametrize("version,expected", [
    (ORL_AFFECTED[0], {"openrlhf-sft-loss-aggregation": "patchable", "openrlhf-actor-loss-aggregation": "patchable",
                       "openrlhf-critic-loss-aggregation": "patchable", "openrlhf-sft-loss-gptlmloss": "not-affected",
                       "openrlhf-rl-loss-before-0.8.6": "not-affected",
                       "openrlhf-dynamic-batch-zero12": "patchable"}),
    (ORL_AFFECTED[1], {"openrlhf-sft-loss-aggregation": "patchable", "openrlhf-actor-loss-aggregation": "patchable",
                       "openrlhf-critic-loss-aggregation": "patchable"}),
    (ORL_FIXED, {"openrlhf-sft-loss-aggregation": "not-affected", "openrlhf-actor-loss-aggregation": "not-affected",
                 "openrlhf-critic-loss-aggregation": "not-affected", "openrlhf-dynamic-batch-zero12": "patchable"}),
    (ORL_NEWEST, {"openrlhf-actor-loss-aggregation": "not-affected", "openrlhf-dynamic-batch-zero12": "patchable"}),
    (ORL_OLD, {"openrlhf-sft-loss-aggregation": "not-affected", "openrlhf-sft-loss-gptlmloss": "affected-no-patch",
               "openrlhf-rl-loss-before-0.8.6": "affected-no-patch", "openrlhf-dynamic-batch-zero12": "not-affected"}),
])
def test_static_status_per_release_without_importing_openrlhf(version, expected):
    out = last_json(run_python(STATUS, env=require_openrlhf(version)))
    for name, state in expected.items():
        assert out["static"][name] == state, (name, out["static"])
    assert out["imported"] == []


def test_doctor_never_says_ok_for_an_unpatched_release():
    env = require_openrlhf(ORL_OLD)
    proc = run_python("from sftrl_patches.doctor.cli import main; raise SystemExit(main(['--json']))",
                      env=env, check=False)
    report = json.loads(proc.stdout)
    rows = {f["check"]: f for f in report["findings"]}
    assert rows["openrlhf-sft-loss-gptlmloss"]["level"] == "fail"
    assert "0.10.4" in rows["openrlhf-sft-loss-gptlmloss"]["remediation"]
    assert proc.returncode == 1


UNSUPPORTED = """
import json
from types import SimpleNamespace as NS
from sftrl_patches.patches.openrlhf_loss import unsupported_reason
plain = NS(args=NS(ds_tensor_parallel_size=1, use_dynamic_batch=False), ring_attn_group=None)
flat_dynamic = NS(args=NS(use_dynamic_batch=True), ring_attn_group=None)
dotted_dynamic = NS(args=NS(ds=NS(tensor_parallel_size=1), train=NS(dynamic_batch_enable=True)), ring_attn_group=None)
dotted_tp = NS(args=NS(ds=NS(tensor_parallel_size=2), train=NS(dynamic_batch_enable=False)), ring_attn_group=None)
ring = NS(args=NS(), ring_attn_group=object())
gspo = NS(token_level_loss=False)
print(json.dumps({"plain": unsupported_reason(plain), "flat_dynamic": unsupported_reason(flat_dynamic),
                  "dotted_dynamic": unsupported_reason(dotted_dynamic), "dotted_tp": unsupported_reason(dotted_tp),
                  "ring": unsupported_reason(ring), "gspo": unsupported_reason(plain, gspo)}))
"""


def test_runs_the_rescaling_cannot_make_exact_are_left_alone_with_a_reason_for_both_flag_styles():
    out = last_json(run_python(UNSUPPORTED))
    assert out["plain"] == ""
    # Dynamic batching is covered now (tests/test_openrlhf_dynamic.py), in both flag styles.
    assert out["flat_dynamic"] == "" and out["dotted_dynamic"] == ""
    assert "tensor" in out["dotted_tp"]
    assert "ring" in out["ring"]
    assert "sequence-level" in out["gspo"]


FALLBACK = """
import json
import torch
from sftrl_patches.loss_window import StepWindows
reasons = []
def count(item):
    if item == 2:
        raise ValueError("no mask")
    return item + 1.0
windows = StepWindows([0, 1, 2, 3], accumulation=2, count=count, on_fallback=reasons.append)
scales = []
for item in windows:
    scales.append(windows.scale)
print(json.dumps({"scales": scales, "reasons": reasons}))
"""


def test_a_micro_batch_that_cannot_be_counted_falls_back_to_the_trainers_own_loss_and_says_why():
    out = last_json(run_python(FALLBACK))
    # First window: 1 and 2 tokens -> 2/3 and 4/3 of the per-micro-batch mean; then the fallback.
    assert out["scales"] == pytest.approx([2 / 3, 4 / 3, 1.0, 1.0])
    assert len(out["reasons"]) == 1 and "no mask" in out["reasons"][0]


def test_dynamic_batch_pattern_keeps_only_the_last_backward_on_current_deepspeed():
    """Backs the openrlhf-dynamic-batch-zero12 row: GA=1, 4 backward() without the boundary."""
    from conftest import require_release
    from sftrl_patches.probes import run_child
    case = {"label": "no boundary", "stage": 2, "ga": 4, "mode": "no_boundary", "offload": False, "steps": 3}
    result = run_child([case], patched=True, env=require_release(FIXED))["results"][0]
    for step in result["steps"]:
        assert step["weights"] == pytest.approx([0, 0, 0, 1], abs=0.01), step
    documented = dict(case, mode="multi_backward")  # the same calls with the boundary set: all four count
    result = run_child([documented], patched=True, env=require_release(FIXED))["results"][0]
    assert result["weights"] == pytest.approx([1, 1, 1, 1], abs=0.01), result


EPOCHS = """
import json
from sftrl_patches.loss_window import StepWindows
windows = StepWindows([1, 1, 1], accumulation=2, count=lambda item: item)
sizes = []
for epoch in range(3):   # 3 items per epoch, GA 2: steps are (1,2) (3|1) (2,3) (1,2) ...
    seen = []
    for item in windows:
        seen.append(windows.scale)
    sizes.append(seen)
print(json.dumps({"scales": sizes, "position": windows.position}))
"""


def test_windows_stay_aligned_with_optimizer_steps_across_epochs():
    out = last_json(run_python(EPOCHS))
    # Epoch 1: a full step (scales 1, 1) then half a step alone (1 token: scale 1*2/1 = 2).
    # Epoch 2: the other half (2), then a full step (1, 1). Misaligned windows would give 1, 1, 1.
    assert out["scales"] == [[1.0, 1.0, 2.0], [2.0, 1.0, 1.0], [1.0, 1.0, 2.0]]
    assert out["position"] == 9
