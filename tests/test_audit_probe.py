"""sftrl-doctor audit --probe: one probe case from the run description, refused where a fact is missing, and a
real run on DeepSpeed 0.18.9 that shows the dropped micro-batches without the patches and none with them."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, require_release

from sftrl_patches.audit import cli, prove
from sftrl_patches.audit.gather import build_run
from sftrl_patches.audit.prove import ProbeRefused, probe_case, probe_ranks

PAPER_SFT = ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--zero_stage", "2",
             "--adam_offload", "--train_batch_size", "64", "--micro_train_batch_size", "1"]
ORL = {"deepspeed": "0.18.9", "openrlhf": "0.9.10"}
DS_ZERO2_OFFLOAD_GA4 = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 4,
                        "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}}


def write_json(tmp_path, data, name="ds.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


# ---- the case, from the run description ------------------------------------------------------------

def test_luffy_openrlhf_sft_flags_give_zero2_offload_bf16_ga_capped_to_4():
    case, notes = probe_case(build_run(ORL, command=PAPER_SFT))
    assert {k: case[k] for k in ("stage", "offload", "dtype", "ga", "mode", "steps")} == \
        {"stage": 2, "offload": True, "dtype": "bf16", "ga": 4, "mode": "ga", "steps": 3}
    assert "optimizer" not in case  # OpenRLHF passes its own optimizer: the probe's client SGD
    assert any("GA 8 is probed as GA 4" in note for note in notes)


def test_openrlhf_dynamic_batching_is_several_backward_without_boundary():
    run = build_run(ORL, command=PAPER_SFT + ["--use_dynamic_batch"])
    case, notes = probe_case(run)
    assert case["mode"] == "no_boundary" and case["ga"] == 4 and case["stage"] == 2 and case["offload"]
    assert any("data-dependent with dynamic batching" in note for note in notes)


def test_unknown_accumulation_refuses_and_names_how_to_give_it(tmp_path, capsys):
    ds = write_json(tmp_path, DS_ZERO2_OFFLOAD_GA4)
    command = ["python", "train.py", "--deepspeed_config", ds]
    with pytest.raises(ProbeRefused) as refused:
        probe_case(build_run({"deepspeed": "0.18.9"}, command=command))
    (line,) = refused.value.missing
    assert "how the training loop accumulates is not known" in line and "--accumulation" in line
    code = cli.main(["--probe", "--versions", "deepspeed==0.18.9", "--", *command])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and "--trainer deepspeed --accumulation engine|boundary|manual" in err
    # declared, the same script can be probed
    case, _ = probe_case(build_run({"deepspeed": "0.18.9"}, command=command, trainer="deepspeed",
                                   accumulation="boundary"))
    assert case["mode"] == "multi_backward"


def test_unknown_precision_refuses_rather_than_probing_a_default(tmp_path):
    ds = write_json(tmp_path, dict(DS_ZERO2_OFFLOAD_GA4, bf16={"enabled": "auto"}))
    with pytest.raises(ProbeRefused) as refused:
        probe_case(build_run({"deepspeed": "0.18.9"}, [ds]))
    assert [line.split(" is not known")[0] for line in refused.value.missing] == ["the precision (fp32, bf16 or fp16)"]
    with pytest.raises(ProbeRefused, match="does not use DeepSpeed"):
        probe_case({"uses_deepspeed": False})


@pytest.mark.parametrize("ga, probed", [(1, 1), (2, 2), (3, 3), (4, 4), (16, 4)])
def test_ga_kept_quick_but_never_2_for_a_larger_run(tmp_path, ga, probed):
    ds = write_json(tmp_path, dict(DS_ZERO2_OFFLOAD_GA4, gradient_accumulation_steps=ga))
    # GA 1 alone says nothing of the loop (it may call backward() several times): declared here
    run = build_run({}, [ds], ["python", "train.py"], trainer="deepspeed", accumulation="engine")
    case, _ = probe_case(run)
    assert case["ga"] == probed and case["mode"] == "ga"


def test_nvme_optimizer_block_and_grad_accum_dtype(tmp_path):
    data = dict(DS_ZERO2_OFFLOAD_GA4, bf16={"enabled": True}, data_types={"grad_accum_dtype": "fp32"},
                optimizer={"type": "AdamW", "params": {"lr": 1e-5}})
    data["zero_optimization"] = {"stage": 1, "offload_optimizer": {"device": "nvme", "nvme_path": "/nvme"}}
    ds = write_json(tmp_path, data)
    run = build_run({}, [ds])
    case, notes = probe_case(run, run["optimizer"])
    assert case["offload"] is True and any("nvme is probed as cpu" in note for note in notes)
    assert case["optimizer"] == "deepspeed_adam" and case["grad_accum_dtype"] == "fp32" and case["stage"] == 1
    # DeepSpeed's default grad_accum_dtype (the model's) stays unset, as in the run; no block: a client optimizer
    plain = write_json(tmp_path, DS_ZERO2_OFFLOAD_GA4, "plain.json")
    case, _ = probe_case(build_run({}, [plain]), "client")
    assert "grad_accum_dtype" not in case and "optimizer" not in case


def test_ranks_up_to_local_devices_and_1_on_cpu_where_gloo_crashes():
    run = {"data_parallel_size": 8}
    assert probe_ranks(run, devices=4, deepspeed_version="0.18.9")[0] == 4
    assert probe_ranks(run, devices=0, deepspeed_version="0.19.8")[0] == 2
    ranks, notes = probe_ranks(run, devices=0, deepspeed_version="0.18.9")
    assert ranks == 1 and "#7828" in notes[0]
    ranks, notes = probe_ranks({}, devices=8, deepspeed_version="0.19.8")
    assert ranks == 1 and "--world-size" in notes[0]


# ---- what the CLI does around the probe, without DeepSpeed ---------------------------------------------

@pytest.mark.parametrize("value", ["0", "-5", "soon"])
def test_probe_timeout_is_a_positive_whole_number(value, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["--probe", "--probe-timeout", value, "--versions", "deepspeed==0.18.9"])
    assert exited.value.code == 2 and "--probe-timeout" in capsys.readouterr().err


def test_without_deepspeed_the_audit_stands_and_says_the_probe_could_not_run(tmp_path, capsys, monkeypatch):
    import sftrl_patches.probes as probes
    monkeypatch.setattr(probes, "missing_requirements", lambda: "deepspeed is not importable in python")
    ds = write_json(tmp_path, DS_ZERO2_OFFLOAD_GA4)
    code = cli.main(["--probe", "--versions", "deepspeed==0.18.9", "--config", ds])
    out = capsys.readouterr().out
    assert code == 1  # the audit's: deepspeed-offload-ga-drop is hit
    assert "1 hit," in out and "probe: could not run: deepspeed is not importable" in out


def test_a_crashed_probe_child_exits_3(tmp_path, capsys, monkeypatch):
    import sftrl_patches.probes as probes
    monkeypatch.setattr(probes, "missing_requirements", lambda: None)
    monkeypatch.setattr(prove, "local_devices", lambda **_: 0)
    monkeypatch.setattr(probes, "run_deepspeed_probe",
                        lambda **_: {"status": "error", "reason": "probe child exited with -11: Segmentation fault"})
    code = cli.main(["--probe", "--json", "--versions", "deepspeed==0.19.8", "--config",
                     write_json(tmp_path, DS_ZERO2_OFFLOAD_GA4)])
    report = json.loads(capsys.readouterr().out)
    assert code == 3 and report["probe"]["status"] == "error" and "Segmentation" in report["probe"]["reason"]
    assert report["findings"]  # the audit is still all there


# ---- a real run: DeepSpeed 0.18.9 on CPU --------------------------------------------------------------

def audit_probe(env, *args):
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", "audit", "--probe", *args], env=env,
                          capture_output=True, text=True, timeout=600)


def test_probe_on_0_18_9_shows_first_and_last_only_and_the_patched_fix(tmp_path):
    env = require_release("0.18.9")
    ds = write_json(tmp_path, DS_ZERO2_OFFLOAD_GA4)
    proc = audit_probe(env, "--json", "--versions", "deepspeed==0.18.9", "--config", ds)
    assert proc.returncode == 1, proc.stderr  # the audit's hit
    probe = json.loads(proc.stdout)["probe"]
    assert probe["status"] == "ran" and probe["deepspeed"] == probe["audited_deepspeed"] == "0.18.9"
    assert probe["case"]["ga"] == 4 and probe["ranks"] == 1
    assert [[round(w) for w in step] for step in probe["unpatched"]["weights"]] == [[1, 0, 0, 1]] * 3
    assert probe["patched"]["weights"] == [[1, 1, 1, 1]] * 3
    assert not probe["unpatched"]["correct"] and probe["patched"]["correct"]
    assert probe["patched"]["patch_states"]["deepspeed-offload-ga-drop"] == "patched"
    assert set(probe["wall_seconds"]) == {"unpatched", "patched"}


def test_probe_says_it_proves_the_installed_release_not_the_audited_one(tmp_path):
    env = require_release("0.18.9")
    proc = audit_probe(env, "--versions", "deepspeed==0.19.8", "--config", write_json(tmp_path, DS_ZERO2_OFFLOAD_GA4))
    assert proc.returncode == 0, proc.stderr  # 0.19.8 is not hit, and the patched probe is right
    assert ("probe: the audit is about deepspeed 0.19.8, but deepspeed 0.18.9 is installed here: this proof is of "
            "0.18.9, not of the run's release") in proc.stdout
    assert "✗ [1, 0, 0, 1]" in proc.stdout and "✓ [1, 1, 1, 1]" in proc.stdout


def test_probe_reproduces_the_runs_static_loss_scale(tmp_path):
    # A static fp16.loss_scale of 128 at ZeRO-0: the run's own scale goes into the probe, so the unapplied scale
    # shows as every weight 1/128 without the patches, and 1 with them.
    env = require_release("0.18.9")
    ds = write_json(tmp_path, {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 2,
                               "zero_optimization": {"stage": 0}, "fp16": {"enabled": True, "loss_scale": 128}})
    proc = audit_probe(env, "--json", "--versions", "deepspeed==0.18.9", "--trainer", "deepspeed", "--accumulation",
                       "engine", "--config", ds)
    probe = json.loads(proc.stdout)["probe"]
    assert probe["case"]["loss_scale"] == 128.0 and "loss scale 128" in probe["case"]["label"]
    assert all(abs(w - 1 / 128) < 1e-4 for step in probe["unpatched"]["weights"] for w in step), probe["unpatched"]
    assert all(abs(w - 1) < 0.005 for step in probe["patched"]["weights"] for w in step), probe["patched"]


def test_probe_proves_the_loss_scale_record_and_its_patch_on_the_users_own_config(tmp_path):
    # What the full grid found: DeepSpeed's default fp16 (dynamic loss scale) at ZeRO-0, never scaled, unscaled
    # anyway; the probe reproduces the dynamic scale (from 2**8), so every weight reads 1/256 without the patches,
    # and 1 with them.
    env = require_release("0.18.9")
    ds = write_json(tmp_path, {"train_micro_batch_size_per_gpu": 2, "gradient_accumulation_steps": 4,
                               "zero_optimization": {"stage": 0}, "fp16": {"enabled": True}})
    proc = audit_probe(env, "--json", "--versions", "deepspeed==0.18.9", "--trainer", "deepspeed", "--accumulation",
                       "engine", "--config", ds)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    findings = {f["check"]: f["verdict"] for f in report["findings"]}
    assert findings["deepspeed-loss-scale-unapplied"] == "hit"
    probe = report["probe"]
    assert probe["case"]["loss_scale"] == "dynamic" and probe["case"]["dtype"] == "fp16"
    assert all(abs(w - 1 / 256) < 1e-4 for step in probe["unpatched"]["weights"] for w in step), probe["unpatched"]
    assert not probe["unpatched"]["correct"]
    assert all(abs(w - 1) < 0.005 for step in probe["patched"]["weights"] for w in step), probe["patched"]
    assert probe["patched"]["correct"]


def _probe_result(case, patched_steps, states, hits, ranks=1):
    """What run_probe returns once both children ran (only the keys the conclusion reads)."""
    def side(steps):
        return {"correct": all(s["correct"] for s in steps), "steps": steps}
    unpatched = [dict(s, correct=False) for s in patched_steps]
    return {"deepspeed": "0.18.4", "case": case, "ranks": ranks, "audit_hits": sorted(hits),
            "unpatched": side(unpatched), "patched": dict(side(patched_steps), patch_states=states)}


def test_the_conclusion_names_only_records_the_audit_hit_and_says_when_nothing_explains_it():
    from sftrl_patches.audit.prove import verdict_line
    sgd = {"dtype": "fp32", "mode": "no_boundary"}
    wrong = [{"correct": False, "weights": [0, 0, 0, 1], "max_param_diff": 0.1}]
    states = {"deepspeed-manual-accumulation-last-only": "affected-no-patch",
              "deepspeed-loss-scale-unapplied": "patched"}
    named = verdict_line(_probe_result(sgd, wrong, states, {"deepspeed-manual-accumulation-last-only"}))
    assert "WRONG, with and without" in named and "known, not patched by sftrl-patches: " \
                                                  "deepspeed-manual-accumulation-last-only" in named
    # the same release state, but this run is not one the record hits: it explains nothing here
    unexplained = verdict_line(_probe_result(sgd, wrong, states, set()))
    assert "manual-accumulation" not in unexplained and "no record the audit hit explains it" in unexplained


def test_a_16_bit_adam_cell_off_by_the_documented_precision_says_so():
    from sftrl_patches.audit.prove import verdict_line
    adam = {"dtype": "bf16", "mode": "ga", "optimizer": "deepspeed_adam"}
    states = {"deepspeed-manual-accumulation-last-only": "affected-no-patch"}
    near = [{"correct": True, "weights": [], "max_param_diff": 0.0031},
            {"correct": False, "weights": [], "max_param_diff": 0.0065}]
    assert "a precision matter, no micro-batch lost" in verdict_line(_probe_result(adam, near, states, set()))
    far = [{"correct": False, "weights": [], "max_param_diff": 0.05}]  # beyond it: not the precision matter
    assert "no record the audit hit explains it" in verdict_line(_probe_result(adam, far, states, set()))
    sgd_bf16 = dict(adam, optimizer=None)
    assert "precision" not in verdict_line(_probe_result(sgd_bf16, near, states, set()))


def test_openrlhfs_fused_adam_is_probed_as_fused_adam_where_it_decides_deepspeeds_wrapper():
    """OpenRLHF passes DeepSpeed's FusedAdam: at ZeRO-0 bf16 DeepSpeed wraps it in FP16_Optimizer (scale 1), where a
    client SGD would get FP16_UnfusedOptimizer (scale 2**16): the probe must run the run's wrapper, not another."""
    from sftrl_patches.audit.prove import probe_case
    run = {"trainer": "openrlhf-sft", "uses_deepspeed": True, "zero_stage": 0, "offload_optimizer": "none",
           "precision": "bf16", "accumulation": "engine", "gradient_accumulation_steps": 4, "fused_adam": True,
           "optimizer": "client"}
    case, notes = probe_case(run, run["optimizer"])
    assert case["optimizer"] == "deepspeed_adam" and any("FusedAdam" in n for n in notes)
    # ZeRO-2 builds ZeRO's optimizer whatever the class: the SGD probe, whose weights can be read off, stays
    case, _ = probe_case(dict(run, zero_stage=2), "client")
    assert "optimizer" not in case
    case, _ = probe_case(dict(run, fused_adam=False), "client")  # the HF Trainer's torch AdamW
    assert "optimizer" not in case
