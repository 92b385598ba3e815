"""The run-time report's __init__ wrappers are registry records: fingerprinted, in status() and the doctor,
undone by revert(), re-checked by verify(). Real DeepSpeed (the affected release), fresh interpreters."""
import json

from conftest import AFFECTED, last_json, require_release, run_python

PROBE = """
    import json, os, sys
    import sftrl_patches
    import deepspeed.runtime.engine as engine
    Engine = engine.DeepSpeedEngine
    out = {"names": sorted(sftrl_patches.HOOKS), "first": sftrl_patches.status("run-report-deepspeed").state,
           "shapes": list(sftrl_patches.status("run-report-deepspeed").shapes),
           "ours": getattr(Engine.__init__, "__sftrl_patch__", None)}
    {extra}
    print(json.dumps(out))
"""


def probe(env, extra="", **overrides):
    env = dict(env, **overrides)
    return last_json(run_python(PROBE.replace("{extra}", extra.strip()), env=env))


def test_the_engine_hook_is_a_record_that_reverts_and_reapplies():
    env = require_release(AFFECTED)
    result = probe(env, """
    sftrl_patches.revert("run-report-deepspeed")
    out["after_revert"] = [sftrl_patches.status("run-report-deepspeed").state,
                           getattr(Engine.__init__, "__sftrl_patch__", None)]
    sftrl_patches.apply("run-report-deepspeed")
    out["after_apply"] = [sftrl_patches.status("run-report-deepspeed").state,
                          getattr(Engine.__init__, "__sftrl_patch__", None)]
    """)
    assert result["names"] == ["run-report-deepspeed", "run-report-openrlhf-critic", "run-report-openrlhf-ppo",
                               "run-report-openrlhf-sft"]
    assert result["first"] == "patched" and result["ours"] == "run-report-deepspeed"
    assert result["shapes"][0].startswith("__init__: any shape (fingerprint ")
    assert result["after_revert"] == ["reverted", None]
    assert result["after_apply"] == ["patched", "run-report-deepspeed"]


def test_disabling_the_fixes_keeps_the_line_that_says_a_run_is_unpatched():
    env = require_release(AFFECTED)
    assert probe(env, SFTRL_PATCHES_DISABLE="1")["first"] == "patched"
    by_name = probe(env, SFTRL_PATCHES_DISABLE="run-report-deepspeed")
    assert by_name["first"] == "disabled" and by_name["ours"] is None
    silenced = probe(env, SFTRL_PATCHES_VERDICT="off")
    assert silenced["first"] == "disabled" and silenced["ours"] is None


def test_verify_checks_again_where_status_keeps_the_last_answer():
    env = require_release(AFFECTED)
    result = probe(env, """
    def someone_elses_init(self, *args, **kwargs):
        pass
    Engine.__init__ = someone_elses_init
    out["status"] = sftrl_patches.status("run-report-deepspeed").state
    verified = sftrl_patches.verify("run-report-deepspeed")
    out["verify"] = [verified.state, verified.details]
    """)
    assert result["status"] == "patched"
    state, details = result["verify"]
    assert state == "partial" and "was replaced by" in details[0]


def test_the_doctor_lists_the_hooks_without_asking_for_action():
    env = require_release(AFFECTED)
    proc = run_python("""
        import json, sys
        from sftrl_patches.doctor.cli import main
        sys.exit(main(["--json", "run-report-deepspeed", "run-report-openrlhf-sft"]))
    """, env=env, check=False)
    report = json.loads(proc.stdout)
    rows = {f["check"]: f for f in report["findings"]}
    assert rows["run-report-deepspeed"]["state"] in ("patchable", "patched") and rows["run-report-deepspeed"]["level"] == "ok"
    assert not any(f["level"] == "fail" for name, f in rows.items() if name.startswith("run-report"))
