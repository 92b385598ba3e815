"""The verdict at run time: one line on rank 0 when a DeepSpeed engine or an OpenRLHF trainer is built,
and SFTRL_PATCHES_REPORT's JSON lines from every process. Real DeepSpeed and OpenRLHF, CPU, gloo."""
import json
import os
import subprocess
import sys

from conftest import AFFECTED, FIXED, MULTI_RANK, ROOT, require_openrlhf, require_release

sys.path.insert(0, ROOT)
from sftrl_patches import runtime_report  # noqa: E402
from sftrl_patches.probes import launch_command  # noqa: E402

GA_DROP = "deepspeed-offload-ga-drop"
CASE = json.dumps([{"stage": 2, "ga": 4, "steps": 1}])  # ZeRO-2, offload to CPU, GA 4


def probe(env, tmp_path, nprocs=1, case=CASE, **switches):
    """The probe's training child (deepspeed.initialize and one optimizer step): its stderr lines from us."""
    env = dict(env, PYTHONPATH=os.pathsep.join([ROOT, env["PYTHONPATH"]]), PYTHONWARNINGS="ignore")
    env.pop("SFTRL_PATCHES_DISABLE", None)
    env.update(switches)
    command = launch_command(sys.executable, nprocs, ["-m", "sftrl_patches.probes.deepspeed_offload",
                                                       "--cases", case, "--out", str(tmp_path / "out.json")])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [line for line in proc.stderr.splitlines() if line.startswith("sftrl_patches: this run")]


def read_report(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def test_affected_and_patched(tmp_path):
    lines = probe(require_release(AFFECTED), tmp_path)
    assert lines == [f"sftrl_patches: this run (deepspeed {AFFECTED}: ZeRO-2, offload cpu, GA 4, 1 data-parallel "
                     f"rank(s), fp32, accumulation: engine): {GA_DROP}: affected, patched"]


def test_affected_and_not_patched_says_why_and_what_it_costs(tmp_path):
    lines = probe(require_release(AFFECTED), tmp_path, SFTRL_PATCHES_DISABLE=GA_DROP)
    assert len(lines) == 1
    assert (f"{GA_DROP}: affected, NOT patched (disabled: SFTRL_PATCHES_DISABLE): the optimizer sees micro-batches "
            "1 and 4 of every 4" in lines[0])


def test_not_affected_on_the_fixed_release(tmp_path):
    lines = probe(require_release(FIXED), tmp_path)
    assert len(lines) == 1 and lines[0].startswith(f"sftrl_patches: this run (deepspeed {FIXED}: ZeRO-2")
    import sftrl_patches
    known = sum(p.distribution == "deepspeed" for p in sftrl_patches.PATCHES.values())  # the bugs, not the hooks
    assert f"is not affected by the {known} known deepspeed bugs" in lines[0]


def test_rank_0_only_in_the_log_every_rank_in_the_report_file_and_off_means_silent(tmp_path):
    report = tmp_path / "report.jsonl"
    lines = probe(require_release(MULTI_RANK), tmp_path, nprocs=2, SFTRL_PATCHES_REPORT=str(report))
    assert len(lines) == 1 and f"{GA_DROP}: affected, patched" in lines[0] and "2 data-parallel" in lines[0]
    events = read_report(report)
    assert sorted(e["rank"] for e in events) == [0, 1]
    for event in events:
        assert event["schema"] == "sftrl-run-report/1" and event["event"] == "deepspeed"
        assert event["run"]["data_parallel_size"] == 2 and event["run"]["versions"]["deepspeed"] == MULTI_RANK
        assert event["patches"][GA_DROP] == "patched"
        verdict = {f["check"]: f["verdict"] for f in event["findings"]}
        assert verdict[GA_DROP] == "hit" and verdict["deepspeed-zero2-ga-7718"] == "not-hit"
    assert probe(require_release(AFFECTED), tmp_path, SFTRL_PATCHES_VERDICT="off") == []


def test_openrlhf_trainer_reports_its_own_records_once_per_process(tmp_path):
    """OpenRLHF 0.9.10's SFTTrainer on two ranks (GA 2): the engine event, then the trainer event."""
    env = require_openrlhf("0.9.10", MULTI_RANK)
    report = tmp_path / "report.jsonl"
    env.update(PYTHONPATH=os.pathsep.join([ROOT, env["PYTHONPATH"]]), DS_ACCELERATOR="cpu",
               PYTHONWARNINGS="ignore", SFTRL_PATCHES_DISABLE="", SFTRL_PATCHES_REPORT=str(report))
    command = launch_command(sys.executable, 2, [os.path.join(ROOT, "tests", "openrlhf_child.py"), "--trainer",
                                                 "sft", "--only", "patched", "--out", str(tmp_path / "out.json")])
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("sftrl_patches: this run")]
    assert len(lines) == 2, lines  # rank 0 only: the DeepSpeed engine, then the trainer
    assert "openrlhf-sft-loss-aggregation: affected, patched" in lines[1]
    assert lines[1].startswith("sftrl_patches: this run (openrlhf 0.9.10: openrlhf-sft, ZeRO-2")
    events = read_report(report)
    assert sorted((e["event"], e["rank"]) for e in events) == [
        ("deepspeed", 0), ("deepspeed", 1), ("openrlhf-sft", 0), ("openrlhf-sft", 1)]
    trainer = next(e for e in events if e["event"] == "openrlhf-sft")
    assert trainer["run"]["gradient_accumulation_steps"] == 2 and trainer["run"]["data_parallel_size"] == 2
    assert trainer["patches"]["openrlhf-sft-loss-aggregation"] == "patched"


def test_the_engine_says_whether_its_optimizer_is_fused_adam_and_the_loss_scale_verdict_follows(tmp_path):
    """ZeRO-0 bf16 on 0.18.4: DeepSpeed wraps its own FusedAdam (an `optimizer` block) in FP16_Optimizer, whose
    scale is 1, and any other optimizer in FP16_UnfusedOptimizer, whose scale starts at 2**16 (#7837)."""
    env = require_release("0.18.4")
    seen = {}
    for optimizer in ("deepspeed_adam", "sgd"):
        report = tmp_path / f"{optimizer}.jsonl"
        case = {"stage": 0, "offload": False, "ga": 4, "dtype": "bf16", "steps": 1}
        if optimizer != "sgd":
            case["optimizer"] = optimizer
        probe(env, tmp_path, case=json.dumps([case]), SFTRL_PATCHES_REPORT=str(report))
        event = read_report(report)[0]
        seen[optimizer] = (event["run"].get("fused_adam"),
                           {f["check"]: f["verdict"] for f in event["findings"]}["deepspeed-loss-scale-unapplied"])
    assert seen == {"deepspeed_adam": (True, "not-hit"), "sgd": (False, "hit")}


def test_zero0_fp16_reads_its_loss_scale_from_the_engines_config_and_is_decided(tmp_path):
    """The loss-scale record needs fp16.loss_scale: the run-time line read it nowhere and called every ZeRO-0 fp16
    run "not decidable". DeepSpeed's dynamic scale: affected, patched; a static scale of 1: not affected."""
    env = require_release(AFFECTED)
    lines = {}
    for name, extra in (("dynamic", {"loss_scale": "dynamic"}), ("static 1", {})):
        case = dict({"stage": 0, "offload": False, "ga": 4, "dtype": "fp16", "steps": 1}, **extra)
        lines[name], = probe(env, tmp_path, case=json.dumps([case]))
    assert lines["dynamic"].endswith("deepspeed-loss-scale-unapplied: affected, patched"), lines
    assert "is not affected by the" in lines["static 1"] and "not decidable" not in lines["static 1"], lines


# What an engine cannot tell when it is built: how the loop will call backward() and step() (with GA 1).
AFTER_INIT = {"accumulation", "micro_batches_per_step"}


class _Engine:
    """The accessors _engine_facts reads, each answering (a stand-in: which facts it offers, not their values, is
    under test; the values are tested on real engines above)."""
    dp_world_size, optimizer, basic_optimizer, pipeline_parallelism = 1, object(), object(), False

    class _config:
        _param_dict = {"zero_optimization": {"stage": 0}, "fp16": {"enabled": True}}

    def __getattr__(self, name):
        return lambda: {"zero_optimization_stage": 0, "gradient_accumulation_steps": 1}.get(name, False)


def test_the_engine_offers_every_fact_a_deepspeed_record_reads_but_the_loops_own():
    """A record that reads a fact the run-time line never offers is 'not decidable' at run time on every run (the
    loss scale was, for every ZeRO-0 fp16 run): each DeepSpeed record's facts come from the engine, except how
    the loop accumulates, which no engine knows at init."""
    import sftrl_patches
    from sftrl_patches.run import RunBuilder
    builder = RunBuilder()
    runtime_report._engine_facts(builder, _Engine())
    offered = set(builder.facts)
    for patch in (p for p in sftrl_patches.PATCHES.values() if p.distribution == "deepspeed"):
        needed = {f for f in patch.when.fields() if not f.startswith("version:")} if patch.when else set()
        assert needed - AFTER_INIT <= offered, (patch.name, sorted(needed - AFTER_INIT - offered))


class _Broken:
    optimizer = object()

    def __getattr__(self, name):
        raise RuntimeError(f"no {name}")


def test_never_raises_and_says_nothing_for_objects_it_cannot_read(capsys, tmp_path, monkeypatch):
    import sftrl_patches
    monkeypatch.setattr(runtime_report, "_reported", set())
    monkeypatch.setenv("SFTRL_PATCHES_REPORT", str(tmp_path / "r.jsonl"))
    assert runtime_report.report_built(object(), "deepspeed", sftrl_patches._registry) is None  # no optimizer
    event = runtime_report.report_built(_Broken(), "deepspeed", sftrl_patches._registry)
    assert event is None or "sftrl_patches: this run" in event["line"]
    assert runtime_report.report_built(_Broken(), "openrlhf-sft", sftrl_patches._registry) is None  # no args
    assert "Traceback" not in capsys.readouterr().err


def test_the_committed_run_time_line_agrees_with_the_audit_on_every_swept_configuration():
    """benchmarks/results/runtime_agreement.json: on each one-rank configuration of the pairwise design, the line
    and the audit never decide differently; the line says unknown only for records that need how the loop
    accumulates (which no engine knows when it is built)."""
    import sftrl_patches
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import runtime_agreement
    with open(os.path.join(runtime_agreement.RESULTS, "runtime_agreement.json"), encoding="utf-8") as handle:
        data = json.load(handle)
    with open(os.path.join(runtime_agreement.RESULTS, "runtime_agreement.md"), encoding="utf-8") as handle:
        assert handle.read() == runtime_agreement.summary(data)
    loop_facts = {name for name, patch in sftrl_patches.PATCHES.items()
                  if patch.when is not None and set(patch.when.fields()) & AFTER_INIT}
    assert len(data["releases"]) >= 3
    for version, result in data["releases"].items():
        assert len(result["rows"]) == result["points"] > 20, version
        for row in result["rows"]:
            assert "error" not in row["runtime"], (version, row)
            for name, runtime, audit in runtime_agreement.differences(row):
                assert runtime == "unknown" and name in loop_facts, (version, row["label"], name, runtime, audit)
    rows = [row for result in data["releases"].values() for row in result["rows"]]
    minutes = sum(result["seconds"] for result in data["releases"].values()) / 60
    with open(os.path.join(ROOT, "docs", "audit.md"), encoding="utf-8") as handle:
        docs = " ".join(handle.read().split())
    releases = list(data["releases"])
    assert f"{minutes:.1f} min, on the grid's {len(releases)} window-edge releases" in docs
    assert f"{', '.join(releases[:-1])} and {releases[-1]};" in docs
    assert f"0 confident differences in {sum(len(r['audit']) for r in rows)} verdicts" in docs
    assert f"{sum(len(runtime_agreement.differences(r)) for r in rows)} times the line says `unknown`" in docs
