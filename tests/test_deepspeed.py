"""The patches against real DeepSpeed releases on the CPU accelerator (one folder per release)."""
import json
import os

import pytest

import deepspeed_matrix  # benchmarks/, which conftest puts on the path
from conftest import AFFECTED, FIXED, MULTI_RANK, ROOT, WINDOW_7718, last_json, require_release, run_python
from sftrl_patches.probes import case_is_correct, run_child

GA_CASES = [{"label": f"Z2 GA{ga} overlap={oc}", "stage": 2, "ga": ga, "overlap_comm": oc, "steps": 2}
            for ga in (2, 4, 8) for oc in (False, True)]
OTHER_CASES = [
    {"label": "Z2 GA1 x4 backward", "stage": 2, "ga": 4, "mode": "multi_backward", "steps": 2},
    {"label": "Z2 bf16 GA4", "stage": 2, "ga": 4, "dtype": "bf16", "steps": 2},
    {"label": "Z2 bf16 GA8 overlap", "stage": 2, "ga": 8, "dtype": "bf16", "overlap_comm": True, "steps": 2},
    {"label": "Z1 GA4", "stage": 1, "ga": 4, "steps": 2},
    {"label": "Z1 GA8 overlap", "stage": 1, "ga": 8, "overlap_comm": True, "steps": 2},
    {"label": "Z1 GA1 x4 backward", "stage": 1, "ga": 4, "mode": "multi_backward", "steps": 2},
]
CASES = GA_CASES + OTHER_CASES


def _by_label(payload):
    return {r["case"]["label"]: r for r in payload["results"]}


@pytest.fixture(scope="module")
def affected_runs():
    env = require_release(AFFECTED)
    return {patched: run_child(CASES, patched=patched, env=env) for patched in (False, True)}


@pytest.fixture(scope="module")
def fixed_runs():
    env = require_release(FIXED)
    return {patched: run_child(CASES, patched=patched, env=env) for patched in (False, True)}


def _assert_exact(result):
    assert "error" not in result, result.get("traceback")
    assert result["max_param_diff"] <= 1e-6, result
    assert all(abs(w - 1) <= 1e-3 for w in result["weights"]), result
    assert result["grad_norm"] == pytest.approx(result["reference_grad_norm"], rel=1e-5)


def test_unpatched_affected_release_drops_middle_micro_batches(affected_runs):
    results = _by_label(affected_runs[False])
    assert affected_runs[False]["patches"]["deepspeed-offload-ga-drop"] == "disabled"
    for ga in (4, 8):
        for overlap in (False, True):
            weights = results[f"Z2 GA{ga} overlap={overlap}"]["weights"]
            # the first and the last micro-batch survive, every one between is lost
            assert [round(w) for w in weights] == [1] + [0] * (ga - 2) + [1], weights
    # GA=2 is exact by accident: first + last is everything
    _assert_exact(results["Z2 GA2 overlap=False"])
    # GA=1 with several backward(): only the last survives
    assert [round(w) for w in results["Z2 GA1 x4 backward"]["weights"]] == [0, 0, 0, 1]
    bf16 = results["Z2 bf16 GA4"]["weights"]
    assert abs(bf16[1]) < 0.05 and abs(bf16[2]) < 0.05
    assert results["Z2 GA4 overlap=False"]["grad_norm"] < 0.8 * results["Z2 GA4 overlap=False"]["reference_grad_norm"]


@pytest.mark.parametrize("label", [c["label"] for c in GA_CASES] + ["Z2 GA1 x4 backward"])
def test_patched_affected_release_matches_plain_torch_fp32(affected_runs, label):
    assert affected_runs[True]["patches"]["deepspeed-offload-ga-drop"] == "patched"
    assert affected_runs[True]["patches"]["deepspeed-offload-multi-backward"] == "patched"
    _assert_exact(_by_label(affected_runs[True])[label])


@pytest.mark.parametrize("label", ["Z2 bf16 GA4", "Z2 bf16 GA8 overlap"])
def test_patched_affected_release_bf16_weights(affected_runs, fixed_runs, label):
    patched = _by_label(affected_runs[True])[label]
    upstream = _by_label(fixed_runs[False])[label]
    for result in (patched, upstream):
        assert all(abs(w - 1) <= 0.01 for w in result["weights"]), result["weights"]


@pytest.mark.parametrize("label", ["Z1 GA4", "Z1 GA8 overlap", "Z1 GA1 x4 backward"])
def test_zero1_is_correct_with_and_without_the_patch(affected_runs, label):
    # Measured: stage 1 only reduces at the boundary and never takes the broken path.
    for patched in (False, True):
        _assert_exact(_by_label(affected_runs[patched])[label])


def test_fixed_release_is_not_affected_and_left_untouched(fixed_runs):
    for patched in (False, True):
        states = fixed_runs[patched]["patches"]
        expected = "not-affected" if patched else "disabled"
        assert states["deepspeed-offload-ga-drop"] == expected
        assert states["deepspeed-offload-multi-backward"] == expected
        for result in fixed_runs[patched]["results"]:
            if result["case"].get("dtype", "fp32") == "fp32":
                _assert_exact(result)
    code = """
import json, sftrl_patches
from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer as O
print(json.dumps([getattr(O.async_accumulate_grad_in_cpu_via_gpu, "__sftrl_patch__", None),
                  getattr(O.copy_grads_in_partition, "__sftrl_patch__", None)]))
"""
    # only the manual-accumulation patch (0.19.x's own bug) touches a fixed release
    assert last_json(run_python(code, env=require_release(FIXED))) == [None, "deepspeed-offload-manual-accumulation"]


def test_two_ranks_over_gloo():
    env = require_release(MULTI_RANK)
    cases = [{"label": "Z2 GA4", "stage": 2, "ga": 4, "steps": 2},
             {"label": "Z2 GA1 x4 backward", "stage": 2, "ga": 4, "mode": "multi_backward", "steps": 2}]
    unpatched = _by_label(run_child(cases, patched=False, nprocs=2, env=env))
    patched = _by_label(run_child(cases, patched=True, nprocs=2, env=env))
    # 8 columns: rank 0's four micro-batches, then rank 1's
    assert [round(w) for w in unpatched["Z2 GA4"]["weights"]] == [1, 0, 0, 1, 1, 0, 0, 1]
    for label in ("Z2 GA4", "Z2 GA1 x4 backward"):
        _assert_exact(patched[label])


CASES_7718 = [{"label": f"Z2 no offload GA{ga}", "stage": 2, "ga": ga, "offload": False, "steps": 3}
              for ga in (2, 4, 8)]


@pytest.mark.parametrize("nprocs", [1, 2])
def test_issue_7718_only_last_micro_batch_unpatched_exact_patched(nprocs):
    env = require_release(WINDOW_7718)
    unpatched = _by_label(run_child(CASES_7718, patched=False, nprocs=nprocs, env=env))
    patched_run = run_child(CASES_7718, patched=True, nprocs=nprocs, env=env)
    assert patched_run["patches"]["deepspeed-zero2-ga-7718"] == "patched"
    patched = _by_label(patched_run)
    for ga in (2, 4, 8):
        label = f"Z2 no offload GA{ga}"
        # every step, on every rank: only the last micro-batch reaches the optimizer
        for step in unpatched[label]["steps"]:
            assert [round(w) for w in step["weights"]] == ([0] * (ga - 1) + [1]) * nprocs, step
            assert step["max_param_diff"] > 1e-2
        assert len(patched[label]["steps"]) == 3
        for step in patched[label]["steps"]:
            _assert_exact(step)


def test_issue_7718_doctor_row_on_the_window():
    env = require_release(WINDOW_7718)
    proc = run_python("import sftrl_patches.doctor.cli as c, sys; sys.exit(c.main(['--json']))", env=env, check=False)
    rows = {f["check"]: f for f in json.loads(proc.stdout)["findings"]}
    assert rows["deepspeed-zero2-ga-7718"]["state"] == "patchable"
    assert rows["deepspeed-zero2-ga-7718"]["fingerprint_known"] is True


MANUAL_CASES = [{"label": f"Z{stage} offload GA1x4 no boundary", "stage": stage, "ga": 4, "mode": "no_boundary",
                 "steps": 4} for stage in (1, 2)]


def test_manual_accumulation_with_offload_leaks_across_steps_on_0_19_and_patched_is_exact():
    env = require_release(FIXED)
    unpatched = _by_label(run_child(MANUAL_CASES, patched=False, env=env))
    patched_run = run_child(MANUAL_CASES, patched=True, env=env)
    assert patched_run["patches"]["deepspeed-offload-manual-accumulation"] == "patched"
    patched = _by_label(patched_run)
    for case in MANUAL_CASES:
        steps = unpatched[case["label"]]["steps"]
        # step 1 drops the first backward; from step 2 on the update carries earlier steps' gradients
        assert [round(w) for w in steps[0]["weights"]] == [0, 1, 1, 1], steps[0]
        assert steps[0]["residual"] < 1e-6
        for step in steps[1:]:
            assert step["residual"] > 0.1 and step["max_param_diff"] > 1e-2, step
        for step in patched[case["label"]]["steps"]:
            _assert_exact(step)
            assert step["residual"] < 1e-6


CASES_7985 = [{"label": f"Z1 bf16 fp32-accum GA{ga}", "stage": 1, "ga": ga, "offload": False, "dtype": "bf16",
               "grad_accum_dtype": "fp32", "steps": 3} for ga in (1, 4)]


@pytest.mark.parametrize("version", [MULTI_RANK, AFFECTED])
def test_bf16_optimizer_last_micro_batch_is_averaged_over_ranks_only_when_patched(version):
    """#7985 on two gloo ranks (0.18.6, and the paper's 0.18.9: #7828's two-rank crash is in the ZeRO
    optimizer's step, which BF16_Optimizer does not run): bf16 + ZeRO-1 + fp32 grad_accum_dtype."""
    env = require_release(version)
    unpatched = _by_label(run_child(CASES_7985, patched=False, nprocs=2, env=env))
    patched_run = run_child(CASES_7985, patched=True, nprocs=2, env=env)
    assert patched_run["patches"]["deepspeed-bf16-last-micro-batch-7985"] == "patched"
    patched = _by_label(patched_run)
    for case in CASES_7985:
        # Unpatched, each rank steps its own part of the parameters with its own, un-averaged last
        # micro-batch: no one weight per micro-batch explains the update (even at GA 1).
        for step in unpatched[case["label"]]["steps"]:
            assert step["residual"] > 0.1 and step["max_param_diff"] > 1e-2, step
        # Patched: every micro-batch of both ranks with weight 1, within bf16's precision.
        for step in patched[case["label"]]["steps"]:
            assert step["weights"] == pytest.approx([1.0] * 2 * case["ga"], abs=0.01), step
            assert step["residual"] < 0.01 and step["max_param_diff"] < 2e-3, step


def test_bf16_zero1_fp32_accumulation_gets_the_fp16_optimizer_and_a_65536th_of_each_update_on_0_18_4():
    """PR #7788 (fixed in 0.18.5): on 0.18.3-0.18.4 the configuration that asks for BF16_Optimizer gets
    FP16_UnfusedOptimizer, which divides unscaled gradients by its 2**16 loss scale. The loss-scale patch scales the
    loss as 0.18.2 did: every weight 1 with the same wrapper. Without fp32 accumulation the same release is right."""
    env = require_release("0.18.4")  # the newest release Llama-Factory 0.9.5 allows
    cases = CASES_7985 + [{"label": "Z1 bf16 GA4", "stage": 1, "ga": 4, "offload": False, "dtype": "bf16", "steps": 3}]
    unpatched = _by_label(run_child(cases, patched=False, env=env))
    patched = _by_label(run_child(cases, patched=True, env=env))
    for case in CASES_7985:  # GA 1 and 4
        for before, after in zip(unpatched[case["label"]]["steps"], patched[case["label"]]["steps"]):
            assert before["optimizer"] == after["optimizer"] == "FP16_UnfusedOptimizer"
            assert before["weights"] == pytest.approx([1 / 65536] * case["ga"], rel=0.02), before
            assert after["weights"] == pytest.approx([1.0] * case["ga"], abs=0.01), after
    for step in unpatched["Z1 bf16 GA4"]["steps"] + patched["Z1 bf16 GA4"]["steps"]:
        assert step["optimizer"] == "DeepSpeedZeroOptimizer"
        assert step["weights"] == pytest.approx([1.0] * 4, abs=0.01), step


# Llama-Factory's stock ds_z0_config.json (bf16, ZeRO-0, the HF Trainer's optimizer), as the sweep's seed cell.
STOCK_ZERO0_BF16 = {"label": "Z0 bf16 GA4", "stage": 0, "ga": 4, "offload": False, "dtype": "bf16", "steps": 3}


@pytest.mark.parametrize("version", ["0.17.6", "0.18.4"])
def test_zero0_bf16_wrapper_faults_are_fixed_by_the_two_patches_over_three_steps(version):
    """FP16_UnfusedOptimizer at ZeRO-0 + bf16 (#7837): 0.17.6-0.18.5 never zero its gradients (each step carries the
    earlier ones); 0.18.3-0.18.5 also leave its 2**16 loss scale unapplied (each update / 65536). Patched, every
    micro-batch of every step weighs 1."""
    env = require_release(version)
    unpatched = run_child([STOCK_ZERO0_BF16], patched=False, env=env)["results"][0]["steps"]
    patched = run_child([STOCK_ZERO0_BF16], patched=True, env=env)["results"][0]["steps"]
    if version == "0.18.4":  # the first update / 65536, later ones carry the earlier steps' gradients too
        assert unpatched[0]["weights"] == pytest.approx([1 / 65536] * 4, rel=0.02), unpatched
    else:  # the first step right, later ones carry the earlier steps
        assert unpatched[0]["residual"] < 0.01
    assert all(s["residual"] > 0.3 for s in unpatched[1:]), unpatched
    for step in patched:
        assert step["optimizer"] == "FP16_UnfusedOptimizer"
        assert step["weights"] == pytest.approx([1.0] * 4, abs=0.01) and step["residual"] < 0.01, step


@pytest.mark.parametrize("version", ["0.18.4", "0.19.6"])
def test_the_pipeline_engines_backward_leaves_the_loss_scale_patch_whole_and_another_override_does_not(version):
    """PipelineEngine (imported by OpenRLHF, among others) overrides backward() only to refuse it; its schedule calls
    DeepSpeedEngine.backward through super(), the wrapper. An explicit apply must say patched there (it raised
    `partial` before), while any other subclass with its own backward() still makes the patch partial."""
    code = """
import json, sftrl_patches
import deepspeed.runtime.pipe.engine
from deepspeed.runtime.engine import DeepSpeedEngine
name = "deepspeed-loss-scale-unapplied"
first = sftrl_patches.apply(name).state
class MyEngine(DeepSpeedEngine):
    def backward(self, loss, **kwargs):
        return loss
again = sftrl_patches.verify(name)
print(json.dumps([first, again.state, again.details]))
"""
    first, state, details = last_json(run_python(code, env=require_release(version)))
    assert first == "patched"
    assert state == "partial" and any("MyEngine overrides it" in d for d in details), details
    assert not any("PipelineEngine" in d for d in details)


@pytest.mark.parametrize("version, names", [
    (AFFECTED, ("deepspeed-offload-ga-drop", "deepspeed-offload-multi-backward", "deepspeed-bf16-last-micro-batch-7985")),
    (WINDOW_7718, ("deepspeed-zero2-ga-7718",)),
    (FIXED, ("deepspeed-offload-manual-accumulation", "deepspeed-loss-scale-unapplied")),
    ("0.18.4", ("deepspeed-loss-scale-unapplied", "deepspeed-zero0-bf16-unfused-7837")),  # backward: behind nvtx
])
def test_static_and_live_fingerprints_agree(version, names):
    code = f"""
import json
from sftrl_patches import PATCHES
from sftrl_patches.registry import file_fingerprints
from sftrl_patches._fingerprint import fingerprint_object
import importlib
out = []
for name in {list(names)!r}:
    for target in PATCHES[name].targets:
        owner = importlib.import_module(target.module)
        for part in target.owner.split("."):
            owner = getattr(owner, part)
        live = fingerprint_object(getattr(owner, target.attribute))
        out.append([file_fingerprints(PATCHES[name])[target.key], live, live in target.fingerprints])
print(json.dumps(out))
"""
    checked = last_json(run_python(code, env=dict(require_release(version), SFTRL_PATCHES_DISABLE="1")))
    assert len(checked) >= len(names)
    for static, live, known in checked:
        assert static == live and known


@pytest.mark.parametrize("order", ["sftrl_first", "deepspeed_first", "disabled"])
def test_import_orders_with_real_deepspeed(order):
    env = dict(require_release(AFFECTED))
    if order == "disabled":
        env["SFTRL_PATCHES_DISABLE"] = "1"
    first, second = ("import deepspeed", "import sftrl_patches") if order == "deepspeed_first" else \
        ("import sftrl_patches", "import deepspeed")
    code = f"""
import json
{first}
{second}
from deepspeed.runtime.zero.stage_1_and_2 import DeepSpeedZeroOptimizer as O
print(json.dumps([sftrl_patches.status("deepspeed-offload-ga-drop").state,
                  getattr(O.async_accumulate_grad_in_cpu_via_gpu, "__sftrl_patch__", None)]))
"""
    state, mark = last_json(run_python(code, env=env))
    if order == "disabled":
        assert (state, mark) == ("disabled", None)
    else:
        assert (state, mark) == ("patched", "deepspeed-offload-ga-drop")


ADAM_CASES = [{"label": "Z2 offload GA4 DeepSpeedCPUAdam", "stage": 2, "ga": 4, "optimizer": "deepspeed_adam",
               "steps": 3}]


@pytest.mark.parametrize("version", [AFFECTED, FIXED])
def test_deepspeeds_own_cpu_adam_follows_torch_adam_only_when_every_micro_batch_counts(version):
    """What a user with offload_optimizer: cpu gets: DeepSpeedCPUAdam (JIT-built per release), against
    torch Adam fed the step's full gradient, over 3 steps."""
    env = require_release(version)
    unpatched = run_child(ADAM_CASES, patched=False, env=env, timeout=600)["results"][0]
    patched = run_child(ADAM_CASES, patched=True, env=env, timeout=600)["results"][0]
    for result in (unpatched, patched):
        assert "error" not in result, result.get("traceback")
        assert len(result["steps"]) == 3
    assert all(step["max_param_diff"] <= 1e-6 for step in patched["steps"]), patched["steps"]
    if version == AFFECTED:
        # Adam's first update is lr x sign(g): with micro-batches 2 and 3 dropped some signs flip.
        assert unpatched["steps"][0]["max_param_diff"] > 1e-3, unpatched["steps"]
    else:
        assert all(step["max_param_diff"] <= 1e-6 for step in unpatched["steps"]), unpatched["steps"]


@pytest.mark.parametrize("dtype, release, rounding", [("bf16", AFFECTED, 5e-3), ("fp16", "0.17.6", 1e-3)])
def test_low_precision_master_weights_branch_equals_the_upstream_fix(dtype, release, rounding):
    """bf16 + bf16_master_weights_and_grads (0.18.3-0.18.9 shape, on 0.18.9) and fp16 +
    fp16_master_weights_and_grads (0.15.2-0.18.2 shape, attribute fp16_master_weights_and_gradients, on 0.17.6),
    both with DeepSpeedCPUAdam offload, the only configuration that reaches the wrapper's low-precision branch.
    Patched, the affected release must give the very numbers of upstream-fixed 0.19.8. The CPU accelerator
    refuses fp16 where oneDNN lacks fp16 kernels; the probe lifts that gate only (torch computes fp16 on a CPU)."""
    case = [{"label": f"Z2 {dtype} master weights GA4 DeepSpeedCPUAdam", "stage": 2, "ga": 4, "dtype": dtype,
             "master_weights": dtype, "optimizer": "deepspeed_adam", "steps": 3}]
    affected, fixed = require_release(release), require_release(FIXED)
    unpatched = run_child(case, patched=False, env=affected, timeout=600)["results"][0]
    patched = run_child(case, patched=True, env=affected, timeout=600)["results"][0]
    upstream = run_child(case, patched=True, env=fixed, timeout=600)["results"][0]
    for result in (unpatched, patched, upstream):
        assert "error" not in result, result.get("traceback")
        assert all(s["low_precision_master_weights"] for s in result["steps"])  # the branch was taken
    assert [s["max_param_diff"] for s in patched["steps"]] == pytest.approx(
        [s["max_param_diff"] for s in upstream["steps"]], rel=1e-6, abs=1e-9)
    assert all(s["max_param_diff"] < rounding for s in patched["steps"]), patched["steps"]  # low-precision rounding
    assert unpatched["steps"][0]["max_param_diff"] > 1e-2, unpatched["steps"]  # micro-batches 2 and 3 dropped
    assert case_is_correct(patched) and not case_is_correct(unpatched)


def test_matrix_summary_merges_matrices_and_names_the_worst_cell():
    ok = {"case": {"dtype": "fp32"}, "weights": [1.0, 1.0], "max_param_diff": 0.0, "residual": 0.0,
          "steps": [{"weights": [1.0, 1.0], "max_param_diff": 0.0, "residual": 0.0}]}
    dropped = {**ok, "weights": [1.0, 0.0], "steps": [{"weights": [1.0, 0.0], "max_param_diff": 0.1, "residual": 0.0}]}
    crashed = {"case": {}, "error": "TypeError: boom"}
    main = {"cases": [{"label": "Z2 fp32 GA4"}, {"label": "Z2 fp32 GA8"}, {"label": "Z2 no-offload GA4"}],
            "rows": [{"version": "0.18.9", "unpatched": {"results": [ok, dropped, crashed]},
                      "patched": {"results": [ok, ok, ok], "patches": {"deepspeed-offload-ga-drop": "patched"}}},
                     {"version": "0.19.8", "unpatched": {"results": [ok, ok, ok]},
                      "patched": {"results": [ok, ok, ok], "patches": {}}}]}
    adam = {"cases": [{"label": "Z2 DeepSpeedCPUAdam GA4"}],
            "rows": [{"version": "0.18.9", "unpatched": {"results": [dropped]}, "patched": {"results": [ok]}}]}
    lines = deepspeed_matrix.summary([main, adam]).splitlines()
    assert lines[2].startswith("| 0.18.9 | offload-ga-drop | **wrong** → ok | – | ")
    assert "| **crash** → ok |" in lines[2] and lines[2].endswith("| **wrong** → ok |")  # #7718 group, then CPU Adam
    assert lines[3].startswith("| 0.19.8 | none applies | ok → ok |") and lines[3].endswith("| – |")


def test_every_summary_column_names_cases_the_matrix_runs():
    labels = {case["label"] for ranks in (1, 2) for case in deepspeed_matrix.matrix_cases(3, cpu_adam=True, ranks=ranks)}
    for title, group in deepspeed_matrix.GROUPS:
        assert set(group) <= labels, (title, set(group) - labels)


def test_matrix_cell_tells_a_leak_across_steps_from_an_uneven_first_step():
    def result(residuals):
        steps = [{"weights": [1.0, 1.0], "max_param_diff": 0.1, "residual": r} for r in residuals]
        return {"case": {"dtype": "bf16"}, "weights": [1.0, 1.0], "max_param_diff": 0.1, "residual": residuals[-1],
                "steps": steps}
    assert deepspeed_matrix.cell(result([0.0, 0.3, 0.4])) == "leak"      # 0.19.x manual accumulation with offload
    assert deepspeed_matrix.cell(result([0.2, 0.2, 0.3])) == "uneven"    # #7985: each rank's own last micro-batch
    assert deepspeed_matrix.group_state(["ok", "uneven"]) == "**uneven**"


def test_the_supported_releases_table_in_the_docs_is_the_committed_matrix():
    """docs/patches.md's table must be what its own --summary command prints from benchmarks/results/."""
    import re
    with open(os.path.join(ROOT, "docs", "patches.md")) as handle:
        docs = handle.read()
    names = re.search(r"python benchmarks/deepspeed_matrix\.py --summary ([\w ]+)`", docs).group(1).split()
    assert deepspeed_matrix.summary(deepspeed_matrix.load_matrices(names)) in docs
