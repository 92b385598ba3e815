"""The audit never says `not-hit` about what it did not read, and never promises a patch that stands aside.

The commands are the ones a review found answered with confident mistakes (open-instruct's GRPO taken for the
HF Trainer, misspellings read as defaults, runs the OpenRLHF patches leave alone told "install sftrl-patches").
"""
import json
import os
import subprocess
import sys

import pytest

from sftrl_patches import runtime_report
from sftrl_patches.audit.cli import main as audit_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPEN_INSTRUCT = ["python", "open_instruct/grpo_fast.py", "--deepspeed_stage", "2", "--per_device_train_batch_size", "1",
                 "--num_learners_per_node", "4"]
LUFFY = ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--zero_stage", "2", "--adam_offload",
         "--train_batch_size", "64", "--micro_train_batch_size", "1"]


def audit(argv, capsys):
    code = audit_main(["--json", *argv])
    captured = capsys.readouterr()
    if code == 2:
        return code, None, captured.err
    report = json.loads(captured.out)
    return code, report, {f["check"]: f for f in report["findings"]}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


# ---- an entry point the audit cannot name ----------------------------------------------------------------------

def test_a_script_with_hf_style_flags_is_not_taken_for_the_hf_trainer(capsys):
    code, report, findings = audit(["--versions", "deepspeed==0.18.4", "--", *OPEN_INSTRUCT], capsys)
    assert "trainer" not in report["run"] and "uses_deepspeed" not in report["run"]
    assert any("open_instruct/grpo_fast.py is not an entry point" in r and "--deepspeed_stage" in r
               for r in report["not_understood"])
    manual = findings["deepspeed-manual-accumulation-last-only"]
    assert manual["verdict"] == "unknown"
    assert any("withheld" in m for m in manual["missing"])
    # Every DeepSpeed record inside its window is unknown; none says "the run does not use deepspeed".
    for name in ("deepspeed-offload-ga-drop", "deepspeed-offload-multi-backward"):
        assert findings[name]["verdict"] == "unknown", findings[name]
    assert not any("does not use deepspeed" in " ".join(f["because"]) for f in findings.values())
    assert code == 0
    assert audit_main(["--strict", "--versions", "deepspeed==0.18.4", "--", *OPEN_INSTRUCT]) == 1
    capsys.readouterr()


def test_its_deepspeed_config_is_read_but_its_loop_stays_unknown(tmp_path, capsys):
    ds = write(tmp_path, "ds.json", {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                                     "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}})
    _, report, findings = audit(["--versions", "deepspeed==0.18.4", "--config", ds, "--", *OPEN_INSTRUCT], capsys)
    assert report["run"]["zero_stage"] == 2 and report["run"]["uses_deepspeed"] is True
    assert "accumulation" not in report["run"]
    assert findings["deepspeed-manual-accumulation-last-only"]["verdict"] == "unknown"


def test_declaring_the_loop_gives_the_verdict_the_issue_expects(tmp_path, capsys):
    # open-instruct forces GA 1 and calls backward() several times without marking the boundary (its PR #1498).
    ds = write(tmp_path, "ds.json", {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
                                     "zero_optimization": {"stage": 2}, "bf16": {"enabled": True}})
    code, report, findings = audit(["--versions", "deepspeed==0.18.4", "--config", ds, "--trainer", "deepspeed",
                                    "--accumulation", "manual", "--world-size", "4", "--", *OPEN_INSTRUCT], capsys)
    assert report["run"]["trainer"] == "deepspeed" and report["run"]["accumulation"] == "manual"
    assert findings["deepspeed-manual-accumulation-last-only"]["verdict"] != "not-hit"
    assert code in (0, 1)


def test_accumulation_without_a_declared_deepspeed_loop_is_a_usage_error(capsys):
    code, _, err = audit(["--accumulation", "manual", "--", *OPEN_INSTRUCT], capsys)
    assert code == 2 and "--accumulation: only with --trainer deepspeed" in err


# ---- misspellings ----------------------------------------------------------------------------------------------

def test_a_misspelt_launcher_is_not_understood_never_nothing_known(capsys):
    command = ["deepspeeed", *LUFFY[1:]]
    code, report, findings = audit(["--versions", "openrlhf==0.9.10,deepspeed==0.18.9", "--", *command], capsys)
    assert any("'deepspeeed' is not a launcher" in r and "did you mean 'deepspeed'" in r
               for r in report["not_understood"])
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "unknown"
    assert findings["openrlhf-sft-loss-aggregation"]["verdict"] == "unknown"
    assert code == 0


def test_a_nested_deepspeed_misspelling_is_refused_as_deepspeed_refuses_it(tmp_path, capsys):
    ds = write(tmp_path, "ds.json", {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 8,
                                     "zero_optimization": {"stage": 2, "offload_optimiser": {"device": "cpu"}}})
    code, _, err = audit(["--versions", "deepspeed==0.18.9", "--config", ds], capsys)
    assert code == 2 and "ds.json" in err and "'offload_optimiser' (did you mean 'offload_optimizer'?)" in err


def test_an_unknown_nested_deepspeed_key_withholds_deepspeed_facts(tmp_path, capsys):
    ds = write(tmp_path, "ds.json", {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 8,
                                     "zero_optimization": {"stage": 2, "frobnicate_level": 3}})
    code, report, findings = audit(["--versions", "deepspeed==0.18.9", "--config", ds], capsys)
    assert "zero_stage" not in report["run"]
    assert any("frobnicate_level" in r for r in report["not_understood"])
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "unknown"


def test_a_top_level_deepspeed_near_miss_is_doubt_not_a_default(tmp_path, capsys):
    # DeepSpeed ignores unknown top-level keys: the run went with GA 1, not the 8 its author typed.
    ds = write(tmp_path, "ds.json", {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_step": 8,
                                     "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
    _, report, findings = audit(["--versions", "deepspeed==0.18.9", "--config", ds], capsys)
    assert "gradient_accumulation_steps" not in report["run"]
    assert findings["deepspeed-offload-ga-drop"]["verdict"] == "unknown"


def test_a_llamafactory_misspelling_is_refused_as_llamafactory_refuses_it(tmp_path, capsys):
    write(tmp_path, "ds.json", {"zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})
    config = write(tmp_path, "sft.yaml", "stage: sft\nfinetuning_type: full\ntemplate: qwen\n"
                                         "gradient_accumulation_step: 8\ndeepspeed: ds.json\n")
    code, _, err = audit(["--versions", "deepspeed==0.18.4,llamafactory==0.9.5", "--", "llamafactory-cli", "train",
                          config], capsys)
    assert code == 2 and "'gradient_accumulation_step' (did you mean 'gradient_accumulation_steps'?)" in err
    # The same key given right is read.
    config = write(tmp_path, "sft.yaml", "stage: sft\nfinetuning_type: full\ntemplate: qwen\n"
                                         "gradient_accumulation_steps: 8\ndeepspeed: ds.json\n")
    code, report, _ = audit(["--versions", "deepspeed==0.18.4,llamafactory==0.9.5", "--", "llamafactory-cli",
                             "train", config], capsys)
    assert report["run"]["gradient_accumulation_steps"] == 8


def test_openrlhf_flags_are_read_as_its_argparse_reads_them(capsys):
    versions = ["--versions", "openrlhf==0.9.10,deepspeed==0.18.9", "--"]
    misspelt = [t if t != "--adam_offload" else "--adam_ofload" for t in LUFFY]
    code, _, err = audit([*versions, *misspelt], capsys)
    assert code == 2 and "has no flag --adam_ofload (did you mean --adam_offload?)" in err
    # argparse takes an unambiguous prefix for the whole flag
    abbreviated = [t if t != "--adam_offload" else "--adam_off" for t in LUFFY]
    code, report, findings = audit([*versions, *abbreviated], capsys)
    assert report["run"]["offload_optimizer"] == "cpu" and findings["deepspeed-offload-ga-drop"]["verdict"] == "hit"


# ---- where a patch stands aside ---------------------------------------------------------------------------------

@pytest.mark.parametrize("extra, record, outside", [
    (["--ds_tensor_parallel_size", "2"], "openrlhf-sft-loss-aggregation", "DeepSpeed tensor parallel size 2"),
    (["--ring_attn_size", "2"], "openrlhf-sft-loss-aggregation", "ring attention size 2"),
])
def test_runs_the_patch_leaves_alone_are_told_not_patched(extra, record, outside, capsys):
    code, _, findings = audit(["--versions", "openrlhf==0.9.10,deepspeed==0.18.9", "--", *LUFFY, *extra], capsys)
    finding = findings[record]
    assert finding["verdict"] == "hit" and finding["patch_covers"] is False
    assert finding["remediation"].startswith("NOT fixed by sftrl-patches") and outside in finding["remediation"]
    # the DeepSpeed patch does cover it
    assert findings["deepspeed-offload-ga-drop"]["patch_covers"] is True


def test_gspo_is_outside_the_actor_patch(capsys):
    command = ["python", "-m", "openrlhf.cli.train_ppo_ray", "--actor_num_nodes", "1", "--actor_num_gpus_per_node",
               "8", "--zero_stage", "2", "--train_batch_size", "64", "--micro_train_batch_size", "1",
               "--advantage_estimator", "group_norm", "--policy_loss_type", "gspo"]
    _, _, findings = audit(["--versions", "openrlhf==0.9.10,deepspeed==0.18.9", "--", *command], capsys)
    actor = findings["openrlhf-actor-loss-aggregation"]
    assert actor["verdict"] == "hit" and actor["patch_covers"] is False and "gspo" in actor["remediation"]


class _PatchedRegistry:
    """The run-time line asks the registry for states: here every record is applied."""

    def __init__(self):
        import sftrl_patches
        self.patches = sftrl_patches.PATCHES

    def status(self, name):
        from sftrl_patches.registry import Status
        return Status(name, "patched")


def test_the_run_time_line_says_not_patched_where_the_patch_stands_aside(capsys):
    _, report, findings = audit(["--versions", "openrlhf==0.9.10,deepspeed==0.18.9", "--", *LUFFY,
                                 "--ds_tensor_parallel_size", "2"], capsys)
    run = dict(report["run"], versions=report["versions"])
    hits = [f for f in findings.values() if f["verdict"] == "hit"]
    line = runtime_report._line("openrlhf", run, hits, _PatchedRegistry())
    assert "openrlhf-sft-loss-aggregation: affected, NOT patched: DeepSpeed tensor parallel size 2 is outside" in line
    assert "deepspeed-offload-ga-drop: affected, patched" in line


# ---- the tables the readers check against ----------------------------------------------------------------------

def test_known_keys_table_is_what_the_installed_releases_accept():
    from conftest import require_release
    for version in ("0.17.6", "0.19.8"):
        require_release(version)
    if not os.path.isdir(os.path.join(ROOT, ".orl-releases")) or not os.path.isdir(os.path.join(ROOT, ".lf-venv")):
        pytest.skip("needs .orl-releases/ and .lf-venv/ (bash .ci/run makes them)")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "known_keys.py"), "--check"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_trainer_is_refused_where_the_audit_names_the_entry_point_itself(capsys):
    code, _, err = audit(["--trainer", "transformers", "--versions", "openrlhf==0.9.10,deepspeed==0.18.9", "--",
                          *LUFFY], capsys)
    assert code == 2 and "--trainer is for scripts it cannot name" in err


def test_llamafactory_stock_zero0_example_is_hit_on_the_release_it_allows(capsys):
    # The configuration the sweep found wrong (DeepSpeed #7837), as Llama-Factory ships it.
    yaml_path = os.path.join(ROOT, "examples", "audits", "setups", "llamafactory_z0_example", "qwen3_full_sft.yaml")
    code, report, findings = audit(["--versions", "llamafactory==0.9.5,deepspeed==0.18.4", "--", "llamafactory-cli",
                                    "train", yaml_path], capsys)
    assert report["run"]["zero_stage"] == 0 and report["run"]["precision"] == "bf16"
    assert findings["deepspeed-zero0-bf16-unfused-7837"]["verdict"] == "hit" and code == 1
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "hit"  # both faults of the wrapper, both patched
    code, _, findings = audit(["--versions", "llamafactory==0.9.5,deepspeed==0.18.6", "--", "llamafactory-cli",
                               "train", yaml_path], capsys)
    assert findings["deepspeed-zero0-bf16-unfused-7837"]["verdict"] == "not-hit" and code == 0
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "not-hit"


@pytest.mark.parametrize("fp16, version, verdict", [
    ({"enabled": True}, "0.18.4", "hit"),                               # DeepSpeed's default: dynamic
    ({"enabled": True, "loss_scale": 0, "initial_scale_power": 16}, "0.19.8", "hit"),
    ({"enabled": True, "loss_scale": 128}, "0.19.8", "hit"),            # any static scale but 1
    ({"enabled": True, "loss_scale": 1}, "0.19.8", "not-hit"),
    ({"enabled": True}, "0.18.2", "not-hit"),                           # before the backward() change
    ({"enabled": True, "loss_scale": "auto"}, "0.19.8", "unknown"),     # whoever fills it in decides
])
def test_zero0_fp16_loss_scale_record_reads_the_loss_scale(tmp_path, capsys, fp16, version, verdict):
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 0}, "fp16": fp16, "gradient_accumulation_steps": 4,
                                "train_micro_batch_size_per_gpu": 2}))
    _, report, findings = audit(["--versions", f"deepspeed=={version}", "--trainer", "deepspeed", "--accumulation",
                                 "engine", "--config", str(path)], capsys)
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == verdict, report["run"]


def test_a_negative_or_wordy_loss_scale_is_refused(tmp_path, capsys):
    path = tmp_path / "ds.json"
    for value in (-1, "big"):
        path.write_text(json.dumps({"zero_optimization": {"stage": 0}, "fp16": {"enabled": True, "loss_scale": value}}))
        code, _, err = audit(["--versions", "deepspeed==0.19.8", "--config", str(path)], capsys)
        assert code == 2 and "fp16.loss_scale" in err


def test_llamafactory_stock_zero0_config_with_fp16_is_hit_by_the_loss_scale_record(tmp_path, capsys):
    # Llama-Factory's own ds_z0_config.json leaves fp16.enabled "auto" (the HF integration fills it from fp16: true)
    # and sets loss_scale 0: dynamic, the case the grid found wrong from 0.18.3.
    setup = os.path.join(ROOT, "examples", "audits", "setups", "llamafactory_z0_example")
    with open(os.path.join(setup, "qwen3_full_sft.yaml"), encoding="utf-8") as handle:
        yaml_text = handle.read().replace("bf16: true", "fp16: true")
    assert "fp16: true" in yaml_text
    (tmp_path / "qwen3_full_sft.yaml").write_text(yaml_text)
    (tmp_path / "ds_z0_config.json").write_text(open(os.path.join(setup, "ds_z0_config.json"), encoding="utf-8").read())
    code, report, findings = audit(["--versions", "llamafactory==0.9.5,deepspeed==0.18.4", "--", "llamafactory-cli",
                                    "train", str(tmp_path / "qwen3_full_sft.yaml")], capsys)
    assert report["run"]["fp16_loss_scale"] == "dynamic" and report["run"]["precision"] == "fp16"
    assert findings["deepspeed-loss-scale-unapplied"]["verdict"] == "hit" and code == 1


def test_trl_as_a_module_is_unknown_and_the_message_names_the_forms_that_run(capsys):
    # `python -m trl` has no trl/__main__.py to run, so the audit cannot take it for TRL's CLI; it says which forms are
    import importlib.util
    assert importlib.util.find_spec("trl.__main__") is None
    command = ["accelerate", "launch", "-m", "trl", "sft", "--gradient_accumulation_steps", "4"]
    _, report, findings = audit(["--versions", "deepspeed==0.18.4,trl==0.20.0", "--", *command], capsys)
    assert "trainer" not in report["run"]
    assert any("`-m trl` does not run TRL's CLI" in r and "trl.scripts.sft" in r for r in report["not_understood"])
    _, report, _ = audit(["--versions", "deepspeed==0.18.4,trl==0.20.0", "--",
                          "accelerate", "launch", "-m", "trl.scripts.sft", "--gradient_accumulation_steps", "4"], capsys)
    assert report["run"].get("trainer") == "trl"
