"""OpenRLHF dynamic batching on OpenRLHF's own ppo_train, over 3 optimizer steps (CPU, gloo).

tests/openrlhf_dynamic_child.py compares every optimizer step's update with the gradient of the
step's token mean over all its samples on all ranks, with none of this package's patches, with
only its DeepSpeed patches, and with all of them.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import (AFFECTED, DS_OF_ORL_NEWEST, MULTI_RANK, ORL_NEWEST, ROOT, WINDOW_7718, last_json,
                      require_openrlhf, run_python)

sys.path.insert(0, ROOT)
from sftrl_patches.probes import launch_command  # noqa: E402

# (OpenRLHF, DeepSpeed, ranks, --adam_offload): the paper's release on two ranks and, with the
# optimizer offloaded, on its DeepSpeed; on a DeepSpeed of #7718's window (what 0.8.11 and 0.9.0 pin);
# the last release before upstream's loss fix; the newest.
RUNS = [("0.9.10", MULTI_RANK, 2, False), ("0.9.10", AFFECTED, 1, True), ("0.9.10", WINDOW_7718, 1, False),
        ("0.10.3", AFFECTED, 1, False), (ORL_NEWEST, DS_OF_ORL_NEWEST, 1, False),
        (ORL_NEWEST, DS_OF_ORL_NEWEST, 1, True)]


def run_child(version, deepspeed, ranks, offload, trainer, tmp_path):
    env = require_openrlhf(version, deepspeed)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env["PYTHONPATH"]])
    env.update(DS_ACCELERATOR="cpu", PYTHONWARNINGS="ignore", SFTRL_PATCHES_DISABLE="")
    out = tmp_path / "result.json"
    script = os.path.join(ROOT, "tests", "openrlhf_dynamic_child.py")
    command = launch_command(sys.executable, ranks, [script, "--trainer", trainer, "--out", str(out)]
                             + (["--offload"] if offload else []))
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("trainer", ["actor", "critic"])
@pytest.mark.parametrize("version,deepspeed,ranks,offload", RUNS,
                         ids=[f"{v}-ds{d}-{r}rank{'-offload' if o else ''}" for v, d, r, o in RUNS])
def test_every_micro_batch_reaches_the_optimizer_with_the_token_mean_weight_only_when_patched(
        version, deepspeed, ranks, offload, trainer, tmp_path):
    result = run_child(version, deepspeed, ranks, offload, trainer, tmp_path)
    assert result["world_size"] == ranks
    assert result["state_at_start"]["openrlhf-dynamic-batch-zero12"] == "patched"
    unpatched, patched = result["unpatched"]["steps"], result["patched"]["steps"]
    assert "error" not in result["patched"], result["patched"]
    assert len(patched) == 3
    assert any(step["micro_batches"] > 2 for step in patched) or ranks > 1  # uneven partitions
    for step in patched:
        assert step["max_abs_diff"] < 1e-6, patched
        assert step["weights"] == pytest.approx([1.0] * step["micro_batches"], abs=1e-3), patched
    if deepspeed == WINDOW_7718:
        # Unpatched: OpenRLHF #1131's crash. With only the DeepSpeed patches (#7718): the last micro-batch.
        assert "TypeError" in result["unpatched"]["error"], result["unpatched"]
        for step in result["deepspeed_only"]["steps"]:
            assert step["weights"][:-1] == pytest.approx([0] * (len(step["weights"]) - 1), abs=0.01)
        return
    assert len(unpatched) == 3
    for step in unpatched:
        assert step["relative_diff"] > 0.05, unpatched
    leaks = deepspeed.startswith("0.19") and offload
    first = unpatched[0]["weights"]
    if leaks:  # 0.19.x offload drops only the first backward of the first step (FACTS.md)
        assert first == pytest.approx([0] + [1] * (len(first) - 1), abs=0.01), unpatched
    elif ranks == 1:  # only the last micro-batch of a step counts
        for step in unpatched:
            assert step["weights"][:-1] == pytest.approx([0] * (len(step["weights"]) - 1), abs=0.01), unpatched
    if leaks:
        # Unpatched, DeepSpeed's CPU accumulator carries earlier steps: a part of the update that no
        # micro-batch of its step explains, from the second step on. DeepSpeed's own patch removes it.
        assert unpatched[0]["residual"] < 1e-3, unpatched
        for step in unpatched[1:]:
            assert step["residual"] > 0.02, unpatched  # exact runs leave ~1e-6
        for step in result["deepspeed_only"]["steps"]:
            assert step["max_abs_diff"] < 1e-6, result["deepspeed_only"]


WINDOWS = """
import json
from types import SimpleNamespace
from sftrl_patches.loss_window import DynamicStepWindows
# Two steps of 3 and 1 micro-batches; OpenRLHF's per-micro-batch factors are the sample shares.
buffer = SimpleNamespace(dynamic_optimizer_step=[0, 0, 1, 1], dynamic_loss_scale=[0.5, 0.25, 0.25, 1.0])
windows = DynamicStepWindows(None, buffer, count=lambda tokens: tokens)
windows.loader = [2, 6, 2, 5]
scales = []
for epoch in range(2):
    scales.append([windows.scale for _ in windows])
print(json.dumps(scales))
"""


def test_dynamic_windows_follow_the_optimizer_step_flags_and_divide_out_openrlhfs_factors():
    scales = last_json(run_python(WINDOWS))
    # Step 1 has 10 tokens: micro-batch i gets tokens_i / 10 / factor_i; step 2 is one micro-batch.
    expected = [2 / 10 / 0.5, 6 / 10 / 0.25, 2 / 10 / 0.25, 1.0]
    assert scales[0] == pytest.approx(expected) and scales[1] == pytest.approx(expected)


GUARDS = """
import json, logging
from types import SimpleNamespace as NS
from sftrl_patches.patches.openrlhf_dynamic_batch import wrap_training_step
warnings = []
logging.getLogger("sftrl_patches").addHandler(type("H", (logging.Handler,), {"emit": lambda self, r: warnings.append(r.getMessage())})())
class Engine:
    def __init__(self, stage): self.stage, self.calls = stage, []
    def zero_optimization_stage(self): return self.stage
    def set_gradient_accumulation_boundary(self, value): self.calls.append(value)
ran = []
def training_step(self, experience, kl_ctl, step):
    ran.append(step)
wrapped = wrap_training_step("actor")(training_step)
def trainer(stage, flags, dynamic=True):
    return NS(args=NS(train=NS(dynamic_batch_enable=dynamic)), actor=NS(model=Engine(stage)),
              replay_buffer=NS(dynamic_optimizer_step=flags))
out = {}
for name, t, steps in [("zero2", trainer(2, [0, 0, 1]), 3), ("off", trainer(2, [0, 1], dynamic=False), 2),
                       ("zero3", trainer(3, [0, 1]), 2), ("short_flags", trainer(1, []), 1)]:
    ran.clear()
    for step in range(steps):
        wrapped(t, None, 0.0, step)
    out[name] = {"calls": t.actor.model.calls, "ran": list(ran)}
out["warnings"] = warnings
print(json.dumps(out))
"""


def test_the_boundary_follows_the_step_flags_and_anything_unexpected_leaves_the_step_to_openrlhf():
    out = last_json(run_python(GUARDS))
    assert out["zero2"] == {"calls": [False, False, True], "ran": [0, 1, 2]}
    assert out["off"] == {"calls": [], "ran": [0, 1]}          # fixed micro-batches: DeepSpeed's own GA
    assert out["zero3"] == {"calls": [], "ran": [0, 1]}        # not a stage the patch covers
    assert out["short_flags"] == {"calls": [], "ran": [0]}     # flags it cannot read: never breaks the step
    assert any("ZeRO stage 3" in w for w in out["warnings"])
    assert any("cannot tell where the optimizer step ends" in w for w in out["warnings"])
