"""Ray workers get the patches: through autoload alone, through our worker setup hook (with
autoload off), and through RAY_RUNTIME_ENV_HOOK for a job that calls ray.init itself, as
OpenRLHF does. A real local Ray cluster on this CPU; every positive case has a control that
must come out unpatched."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import sftrl_patches
from sftrl_patches.integrations import ray as ray_integration
from conftest import AFFECTED, ROOT, require_release

ray = pytest.importorskip("ray")
TESTS = os.path.join(ROOT, "tests")
OFF = {"SFTRL_PATCHES_AUTOLOAD": "0"}

DRIVER = textwrap.dedent('''
    import json, os, sys
    import ray
    ray.init(address=os.environ["SFTRL_TEST_RAY_ADDRESS"], runtime_env=json.loads(sys.argv[1]) or None,
             logging_level="ERROR", log_to_driver=False)

    @ray.remote(num_cpus=0)
    class Rank:
        def report(self):
            armed_at_start = "sftrl_patches" in sys.modules
            import deepspeed.runtime.zero.stage_1_and_2 as zero
            method = zero.DeepSpeedZeroOptimizer.__dict__["copy_grads_in_partition"]
            return {"armed_at_start": armed_at_start, "armed": "sftrl_patches" in sys.modules,
                    "patch_mark": getattr(method, "__sftrl_patch__", None), "pid": os.getpid(),
                    "env": {k: os.environ.get(k) for k in ("SFTRL_TEST_OWN_ENV", "SFTRL_TEST_USER_SETUP_HOOK",
                                                           "SFTRL_TEST_USER_ENV_HOOK")}}

    print(json.dumps(ray.get(Rank.remote().report.remote(), timeout=300)))
''')


def _env(**extra):
    env = require_release(AFFECTED)
    env["PYTHONPATH"] = os.pathsep.join([TESTS, env["PYTHONPATH"]])
    env.update({"PYTHONWARNINGS": "ignore", "RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def _ray_cli(*args, env):
    return subprocess.run([sys.executable, "-c", "from ray.scripts.scripts import main; main()", *args],
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cluster():
    """A one-node Ray cluster; its workers inherit this environment (DeepSpeed on the path)."""
    port = "6397"
    env = _env()
    started = _ray_cli("start", "--head", "--port", port, "--num-cpus", "2", "--include-dashboard", "false",
                       "--disable-usage-stats", env=env)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        _ray_cli("stop", "--force", env=env)


def _drive(cluster, tmp_path, runtime_env=None, wrap=(), **env_extra):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = _env(SFTRL_TEST_RAY_ADDRESS=cluster, **env_extra)
    proc = subprocess.run([sys.executable, *wrap, str(driver), json.dumps(runtime_env or {})], env=env,
                          capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _patched(report):
    return report["armed"] and report["patch_mark"] in sftrl_patches.PATCHES


def test_actor_is_patched_by_autoload_alone(cluster, tmp_path):
    report = _drive(cluster, tmp_path)
    assert not report["armed_at_start"] and _patched(report), report


@pytest.mark.parametrize("with_hook", [True, False], ids=["setup-hook", "control"])
def test_actor_is_patched_by_the_setup_hook_with_autoload_off(cluster, tmp_path, with_hook):
    base = {"env_vars": dict(OFF)}
    report = _drive(cluster, tmp_path, ray_integration.runtime_env(base) if with_hook else base)
    assert _patched(report) is with_hook, report
    assert report["armed_at_start"] is with_hook  # the hook arms the worker before any task runs


def test_setup_hook_chains_to_a_users_own_hook(cluster, tmp_path):
    runtime_env = ray_integration.runtime_env({"worker_process_setup_hook": "ray_user_hooks.worker_setup",
                                               "env_vars": dict(OFF)})
    assert runtime_env["worker_process_setup_hook"] == ray_integration.SETUP_HOOK
    report = _drive(cluster, tmp_path, runtime_env)
    assert _patched(report) and report["env"]["SFTRL_TEST_USER_SETUP_HOOK"] == "ran", report


@pytest.mark.parametrize("through_launcher", [True, False], ids=["launcher", "control"])
def test_launcher_adds_the_hook_to_a_job_that_calls_ray_init_itself(cluster, tmp_path, through_launcher):
    # The job passes its own env_vars to ray.init (as OpenRLHF does); a RAY_RUNTIME_ENV_HOOK set
    # before ours must still run.
    own = {"env_vars": {**OFF, "SFTRL_TEST_OWN_ENV": "kept"}}
    wrap = ("-m", "sftrl_patches.launch") if through_launcher else ()
    report = _drive(cluster, tmp_path, own, wrap, RAY_RUNTIME_ENV_HOOK="ray_user_hooks.runtime_env_hook")
    assert _patched(report) is through_launcher, report
    assert report["env"]["SFTRL_TEST_OWN_ENV"] == "kept" and report["env"]["SFTRL_TEST_USER_ENV_HOOK"] == "ran"


def test_doctor_ray_check_reports_every_node(cluster):
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", "ray", "--ray-address", cluster, "--json"],
                          env=_env(), capture_output=True, text=True, timeout=600)
    (finding,) = json.loads(proc.stdout)["findings"]
    assert (proc.returncode, finding["state"], finding["level"]) == (0, "armed", "ok"), finding
    (node,) = finding["data"]["nodes"].values()
    for variant in ("autoload", "setup-hook"):
        assert node[variant]["armed"] and node[variant]["patches"]["deepspeed-offload-ga-drop"] == "patched", node


def test_doctor_ray_check_sees_workers_that_only_the_hook_arms(tmp_path):
    # Control for the check itself: a fresh local cluster whose workers inherit autoload off.
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.doctor", "ray", "--ray-address", "local", "--json"],
                          env=_env(**OFF), capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    (finding,) = json.loads(proc.stdout)["findings"]
    assert (finding["state"], finding["level"]) == ("hook-only", "warn"), finding
    (node,) = finding["data"]["nodes"].values()
    assert not node["autoload"]["armed"] and node["setup-hook"]["armed"]


# ---- the runtime_env helper's contract, without Ray -----------------------------------------------

def test_runtime_env_keeps_the_users_keys_and_refuses_what_it_cannot_chain():
    base = {"env_vars": {"A": "1"}, "pip": ["x"]}
    merged = ray_integration.runtime_env(base)
    assert merged == {"env_vars": {"A": "1"}, "pip": ["x"], "worker_process_setup_hook": ray_integration.SETUP_HOOK}
    assert base == {"env_vars": {"A": "1"}, "pip": ["x"]}  # not modified in place
    assert ray_integration.runtime_env(merged) == merged     # idempotent
    with pytest.raises(ValueError, match="as a function"):
        ray_integration.runtime_env({"worker_process_setup_hook": print})


def test_install_runtime_env_hook_chains_and_is_idempotent():
    environ = {"RAY_RUNTIME_ENV_HOOK": "users.hook"}
    assert ray_integration.install_runtime_env_hook(environ) == "users.hook"
    assert ray_integration.install_runtime_env_hook(environ) == "users.hook"
    assert environ == {"RAY_RUNTIME_ENV_HOOK": ray_integration.RUNTIME_ENV_HOOK,
                       ray_integration.PREVIOUS_RUNTIME_ENV_HOOK_VAR: "users.hook"}
