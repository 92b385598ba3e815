"""OpenRLHF's own RL on a CPU: `openrlhf.cli.train_ppo_ray` run unchanged as GRPO (OpenRLHF 0.9.10
and 0.10.3, in their flat and dotted flags, on DeepSpeed 0.18.9, ZeRO-2 + Adam offload) on a local Ray cluster with fake GPUs, one actor rank and
one rollout engine. Only vLLM is a stand-in (examples/openrlhf_cpu/vllm_hf: HF generate, weight
sync over gloo; vLLM is CUDA-only), and flash_attn import-only; Ray, the trainer, its loss, the
experience maker, the reward call and DeepSpeed are real. The patches reach the actor through
autoload alone."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import AFFECTED, ORL_AFFECTED, ROOT, require_openrlhf, run_smoke

sys.path.insert(0, ROOT)
pytest.importorskip("ray")
DIGIT_REWARD = os.path.join(ROOT, "tests", "openrlhf_digit_reward.py")


def checksum(folder):
    """The stand-in engine's checksum (sum of |w| over the parameters) of a saved model."""
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return float(sum(p.detach().double().abs().sum() for p in model.parameters()))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny untrained model saved in bf16 (as OpenRLHF's SFT saves it) and 16 prompts."""
    from examples.sftrl_tiny import data, model, tokenizer as tokenizer_module
    folder = tmp_path_factory.mktemp("grpo")
    rows, _ = data.generate(16, 0, operands=2, digits=1, seed=0)
    data.write_jsonl(rows, str(folder / "data" / "train.jsonl"))
    tokenizer = tokenizer_module.train(rows)
    tokenizer_module.save(tokenizer, str(folder / "model"))
    model.build(tokenizer, seed=0).to(torch.bfloat16).save_pretrained(str(folder / "model"))
    return folder


# 0.9.10 (the paper's; flat flags) and 0.10.3 (dotted flags), both on the DeepSpeed they pin
@pytest.fixture(scope="module", params=ORL_AFFECTED)
def two_steps(tiny, request):
    out, log = tiny / f"out-{request.param}", tiny / f"engine-{request.param}.jsonl"
    env = require_openrlhf(request.param, deepspeed=AFFECTED)
    env.update(PYTHONPATH=os.pathsep.join([ROOT, env["PYTHONPATH"]]), SFTRL_VLLM_STAND_IN_LOG=str(log),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0", PYTHONWARNINGS="ignore")
    env.pop("SFTRL_PATCHES_DISABLE", None)
    proc = subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.openrlhf_grpo", "--model", str(tiny / "model"),
                           "--data", str(tiny / "data"), "--out", str(out), "--steps", "2", "--prompts-per-step", "2",
                           "--reward-file", DIGIT_REWARD], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    engine = [json.loads(line) for line in log.read_text().splitlines()]
    return out, metrics, engine, json.loads((out / "run.json").read_text()), request.param


def test_two_grpo_steps_ran_through_train_ppo_ray_and_computed_rewards(two_steps):
    _, metrics, _, facts, version = two_steps
    assert [row["step"] for row in metrics] == [1, 2]
    for row in metrics:
        assert row["rollout/num_samples"] == 16                 # 2 prompts x 8 rollouts
        assert 0.0 < row["rollout/reward_mean"] < 1.0 and row["rollout/reward_std"] > 0.0
        assert row["actor_grad_norm"] > 0.0                      # advantages were not all zero
    cli = facts["cli"]
    flat = version == "0.9.10"
    value = {name: cli[cli.index(flag) + 1] for name, flag in (
        ("estimator", "--advantage_estimator" if flat else "--algo.advantage.estimator"),
        ("kl", "--init_kl_coef" if flat else "--algo.kl.init_coef"),
        ("zero", "--zero_stage" if flat else "--ds.zero_stage"),
        ("reward", "--remote_rm_url" if flat else "--reward.remote_url"))}
    assert value == {"estimator": "group_norm", "kl": "0", "zero": "2", "reward": DIGIT_REWARD}
    assert ("--adam_offload" if flat else "--ds.adam_offload") in cli


def test_the_engine_generates_from_the_actors_weights_after_each_step(tiny, two_steps):
    out, _, engine, _, _ = two_steps
    loaded, *synced = engine
    assert loaded["event"] == "loaded" and [e["sync"] for e in synced] == [1, 2]
    assert {e["pid"] for e in engine} == {loaded["pid"]}
    assert loaded["checksum"] == pytest.approx(checksum(str(tiny / "model")), rel=1e-12)
    assert synced[0]["checksum"] != pytest.approx(loaded["checksum"], rel=1e-9)  # the first step moved weights
    # after the last step the engine holds exactly the weights the actor saved
    assert synced[-1]["checksum"] == pytest.approx(checksum(str(out)), rel=1e-12)


def test_the_patches_reached_the_actor_process_through_autoload(two_steps):
    _, _, engine, facts, version = two_steps
    assert facts["actor_pid"] not in (None, facts["driver_pid"], engine[0]["pid"])
    assert facts["deepspeed"] == AFFECTED and facts["openrlhf"] == version
    assert facts["patches"]["deepspeed-offload-ga-drop"] == "patched"
    assert facts["patches"]["openrlhf-actor-loss-aggregation"] == "patched"
    assert facts["run"]["trainer"] == "openrlhf-ppo" and facts["run"]["offload_optimizer"] == "cpu"


def test_dynamic_batching_is_refused_on_a_cpu_with_the_call_that_stops_it(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.openrlhf_grpo", "--model", "m", "--data", "d",
                           "--out", str(tmp_path / "o"), "--dynamic-batch"], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "flash_attention_2" in proc.stderr and "train_ppo_ray.py" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_the_tiny_sft_then_rl_on_openrlhf_switches_the_patches_in_both_stages(tmp_path):
    _, _, records = run_smoke("examples.sftrl_tiny.openrlhf_rl_demo", require_openrlhf("0.9.10", deepspeed=AFFECTED),
                              tmp_path / "results")
    assert set(records) == {"both-bugs", "both-fixes"}
    bugs, fixes = records["both-bugs"], records["both-fixes"]
    # both-bugs switches every patch off by name, so each process still reports what it ran with
    assert (bugs["optimizer_patch"], bugs["loss_patch"]) == ("disabled", "disabled")
    assert (fixes["optimizer_patch"], fixes["loss_patch"]) == ("patched", "patched")
    assert set(bugs["rl_patches"].values()) == {"disabled"}
    assert set(fixes["rl_patches"].values()) == {"patched"}
    for record in records.values():
        assert record["rl_deepspeed"] == AFFECTED and len(record["rl_reward"]) == 2  # 4 steps, 2 per round
        assert all(0.0 <= reward <= 1.0 for reward in record["rl_reward"]) and 0.0 <= record["acc_rl"] <= 1.0
    assert (tmp_path / "results" / "rl_reward.png").stat().st_size > 0
