"""sftrl-doctor audit: every input kind, every verdict, the exit codes, and bad input without a traceback.

The expected verdicts come from the bugs' published conditions (FACTS.md), not from the audit's output.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

import sftrl_patches
from sftrl_patches.audit import cli
from sftrl_patches.audit.gather import build_run
from sftrl_patches.conditions import All, Any, Fact

PAPER_SFT = ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--zero_stage", "2",
             "--adam_offload", "--train_batch_size", "64", "--micro_train_batch_size", "1"]


def audit(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def audit_json(argv, capsys):
    code, out, err = audit(["--json", *argv], capsys)
    assert code in (0, 1), err
    report = json.loads(out)
    assert report["schema"] == "sftrl-audit/1"
    return code, report, {f["check"]: f for f in report["findings"]}


def verdicts(findings):
    return {name: f["verdict"] for name, f in findings.items() if f["verdict"] != "not-hit"}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- conditions as data -------------------------------------------------------------------------

def test_predicates_answer_with_three_values_and_name_what_decided_and_what_is_missing():
    rule = All(Fact("zero_stage", "==", 2), Any(Fact("gradient_accumulation_steps", ">", 2),
                                                Fact("data_parallel_size", ">", 1)))
    assert str(rule) == "ZeRO stage 2, (gradient_accumulation_steps > 2 or data-parallel ranks > 1)"
    holds, because, missing = rule.evaluate({"zero_stage": 2, "data_parallel_size": 4})
    assert holds is True and missing == [] and any("data-parallel ranks > 1" in b for b in because)
    holds, because, missing = rule.evaluate({"zero_stage": 3})
    assert holds is False and because == ["not ZeRO stage 2: the run has ZeRO stage 3"]
    holds, because, missing = rule.evaluate({"zero_stage": 2, "gradient_accumulation_steps": 1})
    assert holds is None and missing == ["data_parallel_size"]
    version = Fact("version:deepspeed", ">=", "0.17.6")
    assert version.evaluate({"versions": {"deepspeed": "0.18.0"}})[0] is True
    assert version.evaluate({"versions": {"deepspeed": "0.9.0"}})[0] is False  # compared as versions, not text
    assert version.evaluate({"versions": {}})[0] is None


def test_every_record_with_conditions_renders_its_when_text_from_its_predicate():
    for patch in sftrl_patches.PATCHES.values():
        assert patch.when is not None, patch.name
        assert patch.conditions == str(patch.when)
        assert set(patch.when.fields()) <= set(sftrl_patches.conditions.FIELDS) | {"version:deepspeed"}, patch.name


# ---- input kinds and verdicts ---------------------------------------------------------------------

def test_paper_sft_setup_from_the_launch_command_is_hit_by_both_bugs(capsys):
    code, report, findings = audit_json(["--versions", "deepspeed==0.18.9,openrlhf==0.9.10", "--", *PAPER_SFT],
                                        capsys)
    assert code == 1
    assert verdicts(findings) == {"deepspeed-offload-ga-drop": "hit", "openrlhf-sft-loss-aggregation": "hit"}
    drop = findings["deepspeed-offload-ga-drop"]
    # OpenRLHF's rule: GA = train batch / (micro batch x data-parallel ranks) = 64 / (1 x 8)
    assert report["run"]["gradient_accumulation_steps"] == 8 and report["run"]["data_parallel_size"] == 8
    assert "micro-batches 1 and 8 of every 8" in drop["effect"]
    assert drop["remediation"].startswith("install sftrl-patches")
    assert any("offload_optimizer.device=cpu" in b for b in drop["because"])
    assert findings["deepspeed-zero2-ga-7718"]["because"] == ["deepspeed 0.18.9 has the upstream fix (first in 0.18.3)"]


PAPER_SFT_DOTTED = ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--ds.zero_stage", "2",
                    "--ds.adam_offload", "--train.batch_size", "64", "--train.micro_batch_size", "1"]


def test_fixed_versions_are_not_hit_and_exit_zero(capsys):
    code, _, findings = audit_json(["--versions", "deepspeed==0.19.8,openrlhf==0.10.4", "--", *PAPER_SFT_DOTTED],
                                   capsys)
    assert code == 0 and verdicts(findings) == {}


def test_flat_flags_on_a_dotted_release_are_refused_as_its_argparse_would(capsys):
    # OpenRLHF 0.10.2 renamed the flags with no aliases: this command never started a run.
    code, out, err = audit(["--versions", "deepspeed==0.19.8,openrlhf==0.10.4", "--", *PAPER_SFT], capsys)
    assert code == 2 and out == ""
    assert "OpenRLHF 0.10.4 has no flag --zero_stage (did you mean --ds.zero_stage?)" in err


def test_unknown_says_what_is_missing_and_counts_only_with_strict(tmp_path, capsys):
    config = write(tmp_path, "ds.json", json.dumps({
        "train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 1,
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    code, _, findings = audit_json(["--versions", "deepspeed==0.18.9", "--config", config], capsys)
    assert code == 0
    multi = findings["deepspeed-offload-multi-backward"]
    assert multi["verdict"] == "unknown"
    assert any("how the training loop accumulates" in m for m in multi["missing"])
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "not-hit"  # GA 1: nothing between first and last
    code, _, _ = audit(["--strict", "--versions", "deepspeed==0.18.9", "--config", config], capsys)
    assert code == 1


def test_a_missing_version_is_unknown_not_hit(tmp_path, capsys):
    config = write(tmp_path, "ds.json", json.dumps({
        "train_batch_size": 32, "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}))
    _, report, findings = audit_json(["--versions", "transformers==4.56.2", "--config", config,
                                      "--world-size", "4"], capsys)
    drop = findings["deepspeed-offload-ga-drop"]
    assert report["run"]["gradient_accumulation_steps"] == 8  # DeepSpeed's rule: 32 / (1 x 4)
    assert drop["verdict"] == "unknown" and any("deepspeed version" in m for m in drop["missing"])


def test_requirements_and_pip_freeze_files_give_the_versions(tmp_path, capsys):
    freeze = write(tmp_path, "freeze.txt", "# pip freeze\nDeepSpeed==0.18.9\nopenrlhf==0.9.10\n"
                                           "torch @ file:///wheels/torch.whl\n-e git+https://x/y#egg=z\n"
                                           "transformers>=4.50\n")
    _, report, findings = audit_json(["--requirements", freeze, "--", *PAPER_SFT], capsys)
    assert report["versions"] == {"deepspeed": "0.18.9", "openrlhf": "0.9.10"}
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "hit"
    _, report, _ = audit_json(["--requirements", freeze, "--versions", "deepspeed==0.19.0", "--", *PAPER_SFT],
                              capsys)
    assert report["versions"]["deepspeed"] == "0.19.0" and report["versions"]["openrlhf"] == "0.9.10"


def test_installed_versions_are_the_default(capsys):
    from importlib import metadata
    _, report, _ = audit_json(["--", *PAPER_SFT], capsys)
    assert report["versions_from"] == "installed here"
    for dist, version in report["versions"].items():
        assert metadata.version(dist) == version


def test_accelerate_yaml_with_inline_deepspeed_and_trl_flags(tmp_path, capsys):
    config = write(tmp_path, "zero2_offload.yaml", """
compute_environment: LOCAL_MACHINE
distributed_type: DEEPSPEED
deepspeed_config:
  offload_optimizer_device: cpu
  zero_stage: 2
mixed_precision: bf16
num_machines: 1
num_processes: 8
""")
    _, report, findings = audit_json(
        ["--versions", "deepspeed==0.17.6,trl==0.19.0", "--", "accelerate", "launch", "--config_file", config,
         "trl/scripts/sft.py", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "8",
         "--bf16"], capsys)
    run = report["run"]
    assert run["trainer"] == "trl" and run["zero_stage"] == 2 and run["offload_optimizer"] == "cpu"
    assert run["data_parallel_size"] == 8 and run["gradient_accumulation_steps"] == 8 and run["precision"] == "bf16"
    assert verdicts(findings) == {"deepspeed-offload-ga-drop": "hit"}


def test_accelerate_yaml_pointing_at_a_deepspeed_config_file(tmp_path, capsys):
    write(tmp_path, "ds_zero1.json", json.dumps({
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
        "bf16": {"enabled": True}, "data_types": {"grad_accum_dtype": "fp32"}, "zero_optimization": {"stage": 1}}))
    config = write(tmp_path, "accelerate.yaml", "distributed_type: DEEPSPEED\nnum_processes: 4\n"
                                                "deepspeed_config:\n  deepspeed_config_file: ds_zero1.json\n")
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.5", "--config", config, "--trainer",
                                      "transformers", "--", "accelerate", "launch", "train.py",
                                      "--gradient_accumulation_steps", "1"], capsys)
    assert report["run"]["grad_accum_dtype"] == "fp32" and report["run"]["offload_optimizer"] == "none"
    bf16 = findings["deepspeed-bf16-last-micro-batch-7985"]
    assert bf16["verdict"] == "hit" and "each of the 4 ranks" in bf16["effect"]
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "not-hit"  # 0.18.5 builds BF16_Optimizer
    # 0.18.4 never builds BF16_Optimizer here: the fp16 wrapper instead, each update / 65536
    _, _, findings = audit_json(["--versions", "deepspeed==0.18.4", "--config", config, "--trainer", "transformers",
                                 "--", "accelerate", "launch", "train.py", "--gradient_accumulation_steps", "1"], capsys)
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "hit"
    assert "1/65536" in findings["deepspeed-loss-scale-unapplied"]["effect"]
    assert findings["deepspeed-bf16-last-micro-batch-7985"]["verdict"] == "not-hit"


@pytest.mark.parametrize("suffix", ["json", "yaml"])
def test_training_arguments_file_with_an_inline_deepspeed_dict(tmp_path, capsys, suffix):
    args = {"output_dir": "out", "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4,
            "bf16": True, "deepspeed": {"zero_optimization": {"stage": 2}, "gradient_accumulation_steps": "auto"}}
    text = json.dumps(args) if suffix == "json" else __import__("yaml").safe_dump(args)
    config = write(tmp_path, f"args.{suffix}", text)
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.0", "--config", config, "--world-size", "2"],
                                     capsys)
    assert report["run"]["trainer"] == "transformers" and report["run"]["gradient_accumulation_steps"] == 4
    assert verdicts(findings) == {"deepspeed-zero2-ga-7718": "hit"}
    assert "last of the 4 micro-batches" in findings["deepspeed-zero2-ga-7718"]["effect"]


def test_llamafactory_yaml_its_deepspeed_path_and_key_value_overrides(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    write(tmp_path, "ds/ds_z2_offload_config.json", json.dumps({
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True}}}))
    config = write(tmp_path, "sft.yaml", "stage: sft\nfinetuning_type: full\ndeepspeed: ds/ds_z2_offload_config.json\n"
                                         "per_device_train_batch_size: 1\ngradient_accumulation_steps: 2\nbf16: true\n")
    _, report, findings = audit_json(["--versions", "deepspeed==0.16.9", "--", "FORCE_TORCHRUN=1",
                                      "NPROC_PER_NODE=4", "llamafactory-cli", "train", config], capsys)
    assert report["run"]["trainer"] == "llamafactory" and report["run"]["data_parallel_size"] == 4
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "not-hit"  # GA 2: first and last are all there are
    _, report, findings = audit_json(["--versions", "deepspeed==0.16.9", "--", "NPROC_PER_NODE=4",
                                      "llamafactory-cli", "train", config, "gradient_accumulation_steps=8"], capsys)
    assert report["run"]["gradient_accumulation_steps"] == 8
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "hit"


def test_llamafactory_yaml_given_with_config(tmp_path, capsys):
    write(tmp_path, "z2.json", json.dumps({"zero_optimization": {"stage": 2}}))
    config = write(tmp_path, "sft.yaml", "stage: sft\ntemplate: qwen\ndeepspeed: z2.json\n"
                                         "gradient_accumulation_steps: 4\n")
    _, report, findings = audit_json(["--versions", "deepspeed==0.17.6", "--config", config, "--world-size", "8"],
                                     capsys)
    assert report["run"]["trainer"] == "llamafactory"
    assert verdicts(findings) == {"deepspeed-zero2-ga-7718": "hit"}


@pytest.mark.parametrize("extra,verdict", [
    ("template: qwen2_vl\nimage_max_pixels: 262144\n", "hit"),   # media settings: a processor is loaded
    ("template: qwen2_vl\n", "unknown"),                          # a multimodal template, the model decides
    ("template: qwen\n", "not-hit"),                              # text-only
])
def test_llamafactory_multimodal_mean_of_means(tmp_path, capsys, extra, verdict):
    config = write(tmp_path, "vl.yaml", "stage: sft\nper_device_train_batch_size: 1\ngradient_accumulation_steps: 4\n"
                                        + extra)
    _, _, findings = audit_json(["--versions", "llamafactory==0.9.5", "--config", config, "--world-size", "1"], capsys)
    finding = findings["llamafactory-multimodal-loss-7448"]
    assert finding["verdict"] == verdict, finding
    if verdict == "hit":
        assert "mean of 4 micro-batch means" in finding["effect"]
    _, _, findings = audit_json(["--versions", "llamafactory==0.9.2", "--config", config, "--world-size", "1"], capsys)
    assert findings["llamafactory-multimodal-loss-7448"]["verdict"] == "not-hit"  # before #7448


@pytest.mark.parametrize("launcher", [
    ["torchrun", "--nproc_per_node", "4", "--nnodes", "2", "-m"],
    ["torchrun", "--nproc-per-node=4", "--nnodes=2", "-m"],
    ["python", "-m", "torch.distributed.run", "--nproc_per_node", "8", "-m"],
    ["deepspeed", "--num_gpus", "4", "--num_nodes", "2", "--module"],
    ["accelerate", "launch", "--num_processes", "8", "-m"],
])
def test_world_size_from_each_launcher(launcher, capsys):
    command = launcher + ["openrlhf.cli.train_sft", "--train_batch_size", "32", "--micro_train_batch_size", "1"]
    _, report, _ = audit_json(["--versions", "openrlhf==0.9.10", "--", *command], capsys)
    assert report["run"]["data_parallel_size"] == 8 and report["run"]["gradient_accumulation_steps"] == 4


def test_world_size_option_when_the_command_does_not_say(capsys):
    command = ["python", "-m", "openrlhf.cli.train_sft", "--train_batch_size", "32", "--micro_train_batch_size", "2"]
    _, report, findings = audit_json(["--versions", "openrlhf==0.9.10", "--", *command], capsys)
    assert "data_parallel_size" not in report["run"]
    assert findings["openrlhf-sft-loss-aggregation"]["verdict"] == "unknown"
    _, report, findings = audit_json(["--versions", "openrlhf==0.9.10", "--world-size", "4", "--", *command], capsys)
    assert report["run"]["gradient_accumulation_steps"] == 4
    assert findings["openrlhf-sft-loss-aggregation"]["verdict"] == "hit"


def test_openrlhf_grpo_in_flat_and_dotted_flags(capsys):
    flat = ["ray", "job", "submit", "--address=http://127.0.0.1:8265", "--", "python3", "-m",
            "openrlhf.cli.train_ppo_ray", "--actor_num_nodes", "1", "--actor_num_gpus_per_node", "8",
            "--advantage_estimator", "group_norm", "--n_samples_per_prompt", "8", "--train_batch_size", "128",
            "--micro_train_batch_size", "4", "--adam_offload", "--zero_stage", "2"]
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.9,openrlhf==0.9.10", "--", *flat], capsys)
    assert report["run"]["critic"] is False and report["run"]["gradient_accumulation_steps"] == 4
    assert verdicts(findings) == {"deepspeed-offload-ga-drop": "hit", "openrlhf-actor-loss-aggregation": "hit"}
    dotted = ["python3", "-m", "openrlhf.cli.train_ppo_ray", "--actor.num_nodes", "1",
              "--actor.num_gpus_per_node", "8", "--algo.advantage.estimator", "group_norm",
              "--train.batch_size", "128", "--train.micro_batch_size", "4", "--ds.adam_offload",
              "--train.dynamic_batch_enable"]
    _, report, findings = audit_json(["--versions", "deepspeed==0.19.6,openrlhf==0.11.2", "--", *dotted], capsys)
    assert report["run"]["dynamic_batch"] is True and report["run"]["accumulation"] == "manual"
    dynamic = findings["openrlhf-dynamic-batch-zero12"]
    assert dynamic["verdict"] == "hit" and "carries the gradients of all earlier steps" in dynamic["effect"]
    assert findings["openrlhf-actor-loss-aggregation"]["verdict"] == "not-hit"  # 0.11.2 has the fix


def test_ppo_with_its_default_critic(capsys):
    command = ["python3", "-m", "openrlhf.cli.train_ppo_ray", "--actor_num_gpus_per_node", "2",
               "--train_batch_size", "16", "--micro_train_batch_size", "2"]
    _, report, findings = audit_json(["--versions", "deepspeed==0.16.9,openrlhf==0.9.0", "--", *command], capsys)
    assert report["run"]["critic"] is True  # gae is OpenRLHF's default estimator
    assert findings["openrlhf-critic-loss-aggregation"]["verdict"] == "hit"


def test_text_output_lists_hits_first_with_their_effect_and_fix(capsys):
    code, out, _ = audit(["--versions", "deepspeed==0.18.9,openrlhf==0.9.10", "--", *PAPER_SFT], capsys)
    assert code == 1
    lines = out.splitlines()
    assert lines[2] == "" and lines[3].startswith("HIT      deepspeed-offload-ga-drop")
    assert "    effect:  the optimizer sees micro-batches 1 and 8 of every 8; the ones between are dropped" in lines
    assert lines[-1] == f"2 hit, 0 unknown, {len(sftrl_patches.PATCHES) - 2} not hit"


# ---- bad input: one line, exit 2, never a traceback ---------------------------------------------

def _cli(*argv, cwd=None):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", "audit", *argv], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=120)


@pytest.mark.parametrize("name,text,argv,expected", [
    ("bad.json", '{"zero_optimization": {"stage": 2', ["--config"], "bad.json: malformed JSON at line 1"),
    ("bad.yaml", "distributed_type: DEEPSPEED\n  num_processes: [8\n", ["--config"], "bad.yaml: malformed YAML"),
    ("stage.json", '{"zero_optimization": {"stage": "two"}}', ["--config"], "stage.json: zero_optimization.stage"),
    ("list.json", "[1, 2]", ["--config"], "list.json: expected a mapping"),
    ("other.json", '{"hello": 1}', ["--config"], "other.json: not a DeepSpeed JSON"),
    ("freeze.txt", "deepspeed==banana\n", ["--requirements"], "freeze.txt: line 1: deepspeed==banana"),
    ("lf.yaml", "stage: sft\ndeepspeed: missing.json\n", ["--config"], "lf.yaml: deepspeed: missing.json not found"),
    ("ds.json", '{"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4}', ["--world-size", "2", "--config"],
     "ds.json: train_batch_size 30 is not divisible by micro batch 4 x 2 ranks"),
])
def test_bad_files_get_one_line_naming_file_and_field(tmp_path, name, text, argv, expected):
    write(tmp_path, name, text)
    proc = _cli(*argv, name, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr


@pytest.mark.parametrize("argv,expected", [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--versions", "deepspeed=0.18.9"], "expected DIST==VERSION"),
    (["--", "torchrun", "--nproc_per_node", "2", "--frobnicate", "train.py"], "torchrun: unknown flag --frobnicate"),
    (["--", "deepspeed", "--num_gpus", "eight", "train.py"], "--num_gpus: expected a whole number"),
    (["--"], "nothing after `--`"),
    (["--world-size", "8", "--", "python", "-m", "openrlhf.cli.train_sft", "--train_batch_size", "60",
      "--micro_train_batch_size", "1"], "--train_batch_size 60 is not divisible by --micro_train_batch_size 1 x 8"),
    (["--config", "absent.json"], "absent.json: cannot read"),
])
def test_bad_arguments_exit_2_without_a_traceback(tmp_path, argv, expected):
    proc = _cli(*argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and expected in proc.stderr


def test_an_internal_failure_exits_3(monkeypatch, capsys):
    import sftrl_patches.verdict as verdict

    def broken(patches, run):
        raise RuntimeError("boom")
    monkeypatch.setattr(verdict, "audit", broken)
    code, out, err = audit(["--versions", "deepspeed==0.18.9", "--", *PAPER_SFT], capsys)
    assert code == 3 and "internal error: RuntimeError: boom" in err and out == ""


def test_build_run_keeps_where_each_fact_came_from(tmp_path):
    config = write(tmp_path, "ds.json", json.dumps({"zero_optimization": {"stage": 1}, "bf16": {"enabled": True}}))
    run = build_run({}, [config], None, 2)
    assert run["sources"]["zero_stage"] == config and run["sources"]["data_parallel_size"] == "--world-size"
    assert run["grad_accum_dtype"] == "bf16"  # DeepSpeed's default: the model's dtype
    assert run["sources"]["grad_accum_dtype"].startswith("DeepSpeed's default")


@pytest.mark.parametrize("command, verdict", [
    (["accelerate", "launch", "train.py", "--gradient_accumulation_steps", "8"], "hit"),      # they agree
    (["accelerate", "launch", "train.py", "--gradient_accumulation_steps", "2"], "unknown"),  # the run stops at start
    (["accelerate", "launch", "train.py"], "hit"),  # a script's own flags may set it: the DeepSpeed side stands
    (["trl", "sft", "--model_name_or_path", "m", "--output_dir", "o"], "unknown"),  # TRL's CLI: its default, 1
])
def test_a_deepspeed_ga_that_differs_from_the_trainers_is_unknown_not_a_pick(tmp_path, capsys, command, verdict):
    # accelerate's YAML says GA 8. The HF Trainer's DeepSpeed integration stops a run whose TrainingArguments GA
    # differs, so the audit may not pick one of the two.
    config = write(tmp_path, "accelerate.yaml", "distributed_type: DEEPSPEED\nnum_processes: 1\ndeepspeed_config:\n"
                                                "  zero_stage: 2\n  offload_optimizer_device: cpu\n"
                                                "  gradient_accumulation_steps: 8\n")
    declared = ["--trainer", "transformers"] if command[0] == "accelerate" else []
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.9,trl==1.16.0", "--config", config, *declared,
                                      "--", *command], capsys)
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == verdict, report["run"]
    if verdict == "unknown":
        (reason,) = report["not_understood"]
        assert "stops such a run at start" in reason and f"but 8 in {config}" in reason
    else:
        assert report["run"]["gradient_accumulation_steps"] == 8 and not report["not_understood"]


# ---- DeepSpeed's FusedAdam: for bf16 it gets FP16_Optimizer, whose scale is 1 (the grid: unpatched = patched) ----

Z0_BF16 = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 4, "bf16": {"enabled": True},
           "zero_optimization": {"stage": 0}}
ADAMW_BLOCK = {"type": "AdamW", "params": {"lr": 1e-5}}


def test_zero0_bf16_with_deepspeeds_fused_adam_is_not_hit_by_the_unapplied_scale(tmp_path, capsys):
    own = write(tmp_path, "ds_z0_adamw.json", json.dumps(dict(Z0_BF16, optimizer=ADAMW_BLOCK)))
    client = write(tmp_path, "ds_z0.json", json.dumps(Z0_BF16))
    for config, fused, verdict in ((own, True, "not-hit"), (client, False, "hit")):
        _, report, findings = audit_json(["--versions", "deepspeed==0.18.4", "--world-size", "1", "--trainer",
                                          "transformers", "--config", config], capsys)
        assert report["run"]["fused_adam"] is fused, config
        assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == verdict, config
        # FP16_Optimizer's step sets the gradients to None itself: #7837's carrying is the unfused wrapper's only
        assert findings["deepspeed-zero0-bf16-unfused-7837"]["verdict"] == verdict, config
    # torch's Adam through the block is not FusedAdam: DeepSpeed wraps it in FP16_UnfusedOptimizer
    torch_adam = write(tmp_path, "ds_z0_torch_adam.json", json.dumps(dict(
        Z0_BF16, optimizer={"type": "AdamW", "params": {"lr": 1e-5, "torch_adam": True}})))
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.4", "--world-size", "1", "--trainer",
                                      "transformers", "--config", torch_adam], capsys)
    assert report["run"]["fused_adam"] is False
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "hit"


def test_torch_adam_is_read_as_deepspeed_reads_it_not_refused(tmp_path, capsys):
    # A published ZeRO-3 config writes "torch_adam": "torch_impl"; DeepSpeed tests the value's truth (torch's Adam),
    # so the audit must not refuse it as "expected true or false"
    published = {"bf16": {"enabled": True}, "zero_optimization": {"stage": 3, "overlap_comm": True},
                 "optimizer": {"type": "adam", "params": {"lr": "auto", "torch_adam": "torch_impl",
                                                          "adam_w_mode": True}},
                 "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto"}
    code, report, _ = audit_json(["--versions", "deepspeed==0.18.4", "--world-size", "8", "--trainer", "transformers",
                                  "--config", write(tmp_path, "ds_z3.json", json.dumps(published))], capsys)
    assert report["run"]["fused_adam"] is False
    published["zero_optimization"] = {"stage": 0}  # the same block at ZeRO-0: torch's Adam gets the unfused wrapper
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.4", "--world-size", "1", "--trainer",
                                      "transformers", "--config", write(tmp_path, "ds_z0.json", json.dumps(published))],
                                     capsys)
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "hit"


def test_a_plain_deepspeed_scripts_own_optimizer_is_unknown_where_it_decides(tmp_path, capsys):
    config = write(tmp_path, "ds_z0.json", json.dumps(Z0_BF16))
    _, report, findings = audit_json(["--versions", "deepspeed==0.18.4", "--world-size", "1", "--trainer",
                                      "deepspeed", "--config", config], capsys)
    scale = findings["deepspeed-loss-scale-unapplied"]
    assert "fused_adam" not in report["run"] and scale["verdict"] == "unknown"
    assert any("FusedAdam" in m for m in scale["missing"])
    # outside the bf16 window the optimizer does not matter: not hit, not unknown
    _, _, findings = audit_json(["--versions", "deepspeed==0.18.6", "--world-size", "1", "--trainer",
                                 "deepspeed", "--config", config], capsys)
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "not-hit"


def test_the_hf_trainers_optim_decides_when_deepspeed_has_no_optimizer_block(tmp_path, capsys):
    config = write(tmp_path, "ds_z0.json", json.dumps(Z0_BF16))
    for optim, verdict in (("adamw_torch", "hit"), ("adamw_apex_fused", "not-hit"), (None, "hit")):
        args = {"output_dir": "out", "deepspeed": config, "bf16": True, "gradient_accumulation_steps": 4}
        if optim:
            args["optim"] = optim
        arguments = write(tmp_path, "args.json", json.dumps(args))
        _, report, findings = audit_json(["--versions", "deepspeed==0.18.4", "--world-size", "1",
                                          "--config", arguments], capsys)
        assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == verdict, optim
        assert report["run"]["fused_adam"] is (optim == "adamw_apex_fused"), optim


def test_openrlhf_zero1_bf16_fp32_accumulation_on_0_18_4_is_not_hit_its_fused_adam_gets_scale_1(capsys):
    command = ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--zero_stage", "1",
               "--grad_accum_dtype", "fp32", "--train_batch_size", "64", "--micro_train_batch_size", "1"]
    _, report, findings = audit_json(["--versions", "openrlhf==0.9.10,deepspeed==0.18.4", "--", *command], capsys)
    assert report["run"]["fused_adam"] is True and report["run"]["grad_accum_dtype"] == "fp32"
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "not-hit"
    _, report, findings = audit_json(["--versions", "openrlhf==0.9.10,deepspeed==0.18.4", "--",
                                      *command, "--adam_offload"], capsys)
    assert report["run"]["fused_adam"] is False  # DeepSpeedCPUAdam, and offload: the clause asks for none anyway
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "not-hit"
