"""sftrl-doctor as a user runs it: real processes, real DeepSpeed releases."""
import json
import os
import subprocess
import sys

import pytest

from conftest import AFFECTED, FIXED, ROOT, last_json, require_release, run_python


def doctor(*args, env=None):
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", *args], env=env, capture_output=True,
                          text=True, timeout=600)


def findings(proc):
    report = json.loads(proc.stdout)
    assert report["schema"] == "sftrl-doctor/1"
    return {f["check"]: f for f in report["findings"]}


def test_static_report_on_affected_release_imports_neither_torch_nor_deepspeed():
    code = """
import sys, io, contextlib, json
from sftrl_patches.doctor import cli
with contextlib.redirect_stdout(io.StringIO()) as out:
    code = cli.main(["--json"])
heavy = sorted(m for m in ("torch", "deepspeed", "numpy") if m in sys.modules)
print(json.dumps({"code": code, "heavy": heavy, "report": json.loads(out.getvalue())}))
"""
    result = last_json(run_python(code, env=require_release(AFFECTED)))
    assert result["heavy"] == []
    assert result["code"] == 0  # affected, and patched on import: nothing to do
    rows = {f["check"]: f for f in result["report"]["findings"]}
    drop = rows["deepspeed-offload-ga-drop"]
    assert drop["state"] == "patchable" and drop["installed"] == AFFECTED and drop["fingerprint_known"] is True
    assert drop["fixed_in"] == "0.19.0" and any("7967" in link for link in drop["links"])
    assert rows["deepspeed-offload-multi-backward"]["state"] == "patchable"
    assert rows["deepspeed-zero2-ga-7718"]["state"] == "not-affected"


def test_disabled_on_an_affected_release_needs_action():
    proc = doctor("--json", env=dict(require_release(AFFECTED), SFTRL_PATCHES_DISABLE="1"))
    assert proc.returncode == 1
    row = findings(proc)["deepspeed-offload-ga-drop"]
    assert row["state"] == "disabled" and row["level"] == "fail" and "SFTRL_PATCHES_DISABLE" in row["remediation"]


def test_fixed_release_nothing_to_do():
    proc = doctor(env=require_release(FIXED))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "nothing to do" in proc.stdout and "not-affected" in proc.stdout


def test_text_report_is_one_line_per_ok_check_and_expands_what_needs_action_or_with_v():
    env = dict(require_release(AFFECTED), SFTRL_PATCHES_DISABLE="deepspeed-offload-multi-backward")
    short, full = doctor(env=env), doctor("-v", env=env)
    assert short.returncode == full.returncode == 1
    lines = short.stdout.splitlines()
    # An OK check: its row only. The check that needs action: its full text, with the fix.
    (ok_row,) = [line for line in lines if "deepspeed-offload-ga-drop:" in line]
    assert ok_row.startswith("[✓]") and "patchable" in ok_row
    assert "async_accumulate_grad_in_cpu_via_gpu" not in short.stdout  # its source shape, in the full text
    assert "async_accumulate_grad_in_cpu_via_gpu" in full.stdout
    assert "[✗] deepspeed-offload-multi-backward: disabled" in short.stdout
    assert "fix: Unset SFTRL_PATCHES_DISABLE" in short.stdout
    assert "sftrl-doctor -v" in short.stdout and "sftrl-doctor -v" not in full.stdout
    assert len(lines) < len(full.stdout.splitlines()) / 2


def test_without_deepspeed_probe_is_skipped_not_passed():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = doctor("--json", "--probe", env=env)
    rows = findings(proc)
    assert rows["deepspeed-offload-ga-drop"]["state"] == "not-installed"
    if rows["probe"]["state"] == "skipped":  # no deepspeed in this interpreter's own site-packages
        assert rows["probe"]["level"] == "skipped" and "deepspeed" in rows["probe"]["summary"]
        assert proc.returncode == 0


def test_probe_on_affected_release_shows_drop_and_fix():
    proc = doctor("--json", "--probe", env=require_release(AFFECTED))
    assert proc.returncode == 0, proc.stderr
    probe = findings(proc)["probe"]
    cases = {c["label"]: c for c in probe["data"]["cases"]}
    ga4 = cases["ZeRO-2 offload GA 4"]
    assert [round(w) for w in ga4["unpatched"]["weights"]] == [1, 0, 0, 1] and not ga4["unpatched_correct"]
    assert ga4["patched"]["weights"] == [1, 1, 1, 1] and ga4["patched_correct"]
    assert ga4["patched"]["max_param_diff"] <= 1e-6
    assert cases["ZeRO-1 offload GA 4"]["unpatched_correct"]
    assert probe["data"]["patch_states"]["deepspeed-offload-ga-drop"] == "patched"
    assert all(c["patched"]["steps"] == 3 for c in cases.values())
    # a bug documented without a patch stays wrong, and says which row explains it
    no_offload = cases["ZeRO-2 no offload GA=1, 4x backward(), no boundary"]
    assert not no_offload["patched_correct"] and no_offload["no_patch"] == "deepspeed-manual-accumulation-last-only"
    assert probe["level"] == "warn" and "deepspeed-manual-accumulation-last-only" in probe["summary"]


def test_text_probe_output():
    proc = doctor("--probe", "probe", env=require_release(AFFECTED))
    assert "✗ [1, 0, 0, 1]" in proc.stdout and "✓ [1, 1, 1, 1]" in proc.stdout


def test_named_checks_and_list():
    listed = doctor("--list-checks")
    assert listed.returncode == 0
    names = [line.split()[0] for line in listed.stdout.splitlines()]
    assert names == ["deepspeed-offload-ga-drop", "deepspeed-offload-multi-backward", "deepspeed-zero2-ga-7718",
                     "deepspeed-offload-manual-accumulation", "deepspeed-manual-accumulation-last-only",
                     "deepspeed-bf16-last-micro-batch-7985", "deepspeed-zero0-bf16-unfused-7837",
                     "deepspeed-loss-scale-unapplied",
                     "openrlhf-sft-loss-aggregation", "openrlhf-actor-loss-aggregation",
                     "openrlhf-critic-loss-aggregation", "openrlhf-sft-loss-gptlmloss", "openrlhf-rl-loss-before-0.8.6",
                     "openrlhf-dynamic-batch-zero12", "llamafactory-multimodal-loss-7448", "run-report-deepspeed",
                     "run-report-openrlhf-sft", "run-report-openrlhf-ppo", "run-report-openrlhf-critic", "startup",
                     "launchers",
                     "llamafactory", "ray", "probe"]
    only = doctor("--json", "deepspeed-zero2-ga-7718")
    assert list(findings(only)) == ["deepspeed-zero2-ga-7718"]


@pytest.mark.parametrize("args", [["no-such-check"], ["--no-such-flag"], ["--probe-timeout", "soon"]])
def test_usage_errors_exit_2(args):
    proc = doctor(*args)
    assert proc.returncode == 2 and "error" in proc.stderr


def test_internal_failure_exits_3():
    code = """
import sys
from sftrl_patches.doctor import cli, report
def broken(*a, **k):
    raise RuntimeError("boom")
report.collect = broken
sys.exit(cli.main([]))
"""
    proc = run_python(code, check=False)
    assert proc.returncode == 3 and "internal error: RuntimeError: boom" in proc.stderr


def test_console_script_installed():
    script = os.path.join(os.path.dirname(sys.executable), "sftrl-doctor")
    if not os.path.exists(script):
        if os.environ.get("SFTRL_REQUIRE_DEEPSPEED") == "1":
            pytest.fail("sftrl-doctor console script is not installed")
        pytest.skip("package not pip-installed in this interpreter")
    proc = subprocess.run([script, "--list-checks"], capture_output=True, text=True)
    assert proc.returncode == 0 and "deepspeed-offload-ga-drop" in proc.stdout


# ---- startup and launchers: how the patches reach other processes ----------------------------------

def test_startup_check_active_and_patchable_rows_are_ok_then_switched_off_is_a_warning():
    env = require_release(AFFECTED)
    rows = findings(doctor("--json", env=env))
    assert (rows["startup"]["state"], rows["startup"]["level"]) == ("active", "ok")
    assert (rows["deepspeed-offload-ga-drop"]["state"], rows["deepspeed-offload-ga-drop"]["level"]) == ("patchable", "ok")

    env["SFTRL_PATCHES_AUTOLOAD"] = "0"
    proc = doctor("--json", env=env)
    rows = findings(proc)
    assert proc.returncode == 0  # the user's choice: a warning, not "action needed"
    assert (rows["startup"]["state"], rows["startup"]["level"]) == ("switched-off", "warn")
    assert "SFTRL_PATCHES_AUTOLOAD=0" in rows["startup"]["summary"]
    drop = rows["deepspeed-offload-ga-drop"]
    assert drop["level"] == "warn" and "sftrl_patches.launch" in drop["remediation"]


def test_startup_check_reports_python_dash_S():
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-S", "-m", "sftrl_patches.doctor", "startup", "--json"], env=env,
                          capture_output=True, text=True, timeout=120)
    (finding,) = findings(proc).values()
    assert (finding["state"], finding["level"]) == ("no-site", "warn"), finding
    assert "-S (no site) on" in " ".join(finding["details"])


def test_launchers_check_warns_when_a_switch_would_not_reach_remote_deepspeed_nodes(tmp_path):
    env = require_release(AFFECTED)
    env.update({"HOME": str(tmp_path), "SFTRL_PATCHES_STRICT": "1"})

    def launchers_row():
        proc = subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", "launchers", "--json"], env=env,
                              cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
        return findings(proc)["launchers"]

    row = launchers_row()
    assert (row["state"], row["level"]) == ("mismatch", "warn"), row
    assert any("SFTRL_PATCHES_STRICT=1 is set here" in d for d in row["details"])
    assert any("MLFLOW, PYTHON" in d for d in row["details"])  # read from the installed runner

    (tmp_path / ".deepspeed_env").write_text("SFTRL_PATCHES_STRICT=1\n")
    row = launchers_row()
    assert (row["state"], row["level"]) == ("ok", "ok"), row

    (tmp_path / ".deepspeed_env").write_text("SFTRL_PATCHES_STRICT=1\nSFTRL_PATCHES_DISABLE=1\n")
    row = launchers_row()
    assert row["state"] == "mismatch" and any(".deepspeed_env sets SFTRL_PATCHES_DISABLE=1" in d for d in row["details"])


def test_llamafactory_rows_give_its_deepspeed_bound_against_the_windows_and_warn_on_multimodal():
    """Llama-Factory 0.9.5's metadata (.lf-release, installed --no-deps) with DeepSpeed 0.18.9."""
    lf_release = os.path.join(ROOT, ".lf-release")
    if not os.path.isdir(os.path.join(lf_release, "llamafactory")):
        pytest.skip("Llama-Factory is not installed in .lf-release/")
    env = require_release(AFFECTED)
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], lf_release])
    proc = doctor("--json", "llamafactory", "llamafactory-multimodal-loss-7448", env=env)
    rows = findings(proc)
    assert rows["llamafactory"]["data"] == {"installed": "0.9.5", "deepspeed_cap": "0.18.4"}
    assert rows["llamafactory"]["level"] == "ok"
    assert "allows deepspeed>=0.10.0,<=0.18.4" in rows["llamafactory"]["summary"]
    assert "deepspeed-offload-ga-drop (>=0.15.2,<=0.18.4)" in rows["llamafactory"]["summary"]
    # warning rows reachable under the cap: its own stock ZeRO-0 + bf16 config carries gradients over steps and,
    # from 0.18.3, gets a 65536th of each update
    assert "run-time options, of" in rows["llamafactory"]["summary"]
    assert "deepspeed-zero0-bf16-unfused-7837 (>=0.17.6,<=0.18.4)" in rows["llamafactory"]["summary"]
    assert "deepspeed-loss-scale-unapplied (>=0.18.3,<=0.18.4)" in rows["llamafactory"]["summary"]
    multimodal = rows["llamafactory-multimodal-loss-7448"]
    assert multimodal["state"] == "affected-no-patch" and multimodal["level"] == "warn"
    assert "a multimodal model" in multimodal["conditions"]
    assert proc.returncode == 0  # information and a warning: nothing this environment must act on
