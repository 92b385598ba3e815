"""Autoload and the ways patches reach other processes, with real processes and no mocks.

The rank stand-in (tests/autoload_rank.py) never imports sftrl_patches: each test checks that the
DeepSpeed method it imports carries our mark, and, as a control, that it does not when the
switches turn autoload off. These tests need the package installed with pip (`pip install -e .`
or a wheel), because autoload is a file in site-packages; .ci/run does that.
"""
import glob
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

import autoload_startup  # benchmarks/, on the path through conftest: builds the wheel and the venv
import sftrl_patches
from conftest import AFFECTED, MULTI_RANK, ROOT, require_release

RANK_SCRIPT = os.path.join(ROOT, "tests", "autoload_rank.py")
TESTS = os.path.join(ROOT, "tests")
OFF = {"SFTRL_PATCHES_AUTOLOAD": "0"}


def _env(version=AFFECTED, **extra):
    env = require_release(version)
    env.update({"MASTER_ADDR": "127.0.0.1", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def _run(command, env, cwd=ROOT, timeout=600):
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{command} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def _reports(folder):
    return [json.load(open(path)) for path in sorted(glob.glob(os.path.join(str(folder), "rank*.json")))]


def _assert_patched(report):
    assert report["armed"] and report["patch_mark"] in sftrl_patches.PATCHES, report


def _assert_unpatched(report):
    assert not report["armed"] and report["patch_mark"] is None, report


def test_this_environment_has_autoload_installed():
    # Everything below relies on it; a plain `pip install -e .` (or a wheel) installs it.
    assert "_sftrl_patches_autoload" in sys.modules, "reinstall the package with pip: pip install -e ."
    import _sftrl_patches_autoload
    assert _sftrl_patches_autoload.installed_trigger() is not None


def test_trigger_packages_cover_every_patch_target():
    import _sftrl_patches_autoload
    owners = {module.partition(".")[0] for patch in sftrl_patches.PATCHES.values() for module in patch.target_modules}
    assert owners and owners <= _sftrl_patches_autoload.TRIGGER_PACKAGES


# ---- plain child processes -----------------------------------------------------------------------

def test_child_and_grandchild_are_patched_without_importing_us(tmp_path):
    _run([sys.executable, RANK_SCRIPT, str(tmp_path), "--spawn-child"], _env())
    (child,), (grandchild,) = _reports(tmp_path), _reports(tmp_path / "child")
    for report in (child, grandchild):
        assert not report["armed_at_start"], report  # nothing armed before DeepSpeed was imported
        _assert_patched(report)
    assert child["pid"] != grandchild["pid"]


@pytest.mark.parametrize("switch", [{"SFTRL_PATCHES_DISABLE": "1"}, OFF], ids=["disable", "autoload-off"])
def test_switches_turn_autoload_off_in_a_child(tmp_path, switch):
    _run([sys.executable, RANK_SCRIPT, str(tmp_path), "--spawn-child"], _env(**switch))
    for report in _reports(tmp_path) + _reports(tmp_path / "child"):
        _assert_unpatched(report)


MODULES_CODE = ("import json, sys, importlib.util, email.message; importlib.util.find_spec('packaging'); "
                "print(json.dumps([sorted(sys.modules), [type(f).__name__ for f in sys.meta_path]]))")


def test_a_process_that_imports_no_target_imports_nothing_because_of_us():
    (on, finders_on), (off, finders_off) = (json.loads(_run([sys.executable, "-c", MODULES_CODE], env).stdout)
                                            for env in (_env(), _env(**OFF)))
    assert "AutoloadTrigger" in finders_on and "AutoloadTrigger" not in finders_off  # armed vs not
    # The start-up file loads only our stdlib-only module either way; armed, nothing more is imported.
    assert set(on) == set(off) and "_sftrl_patches_autoload" in on
    assert not {"torch", "deepspeed", "sftrl_patches", "logging"} & set(on)
    import _sftrl_patches_autoload
    source = open(_sftrl_patches_autoload.__file__).read()
    top_level_imports = {line.split()[1] for line in source.splitlines() if line.startswith("import ")}
    assert top_level_imports == {"os", "sys"}


def test_autoload_never_breaks_interpreter_start_or_the_import(tmp_path):
    broken_autoload = tmp_path / "broken_autoload"
    broken_autoload.mkdir()
    (broken_autoload / "_sftrl_patches_autoload.py").write_text("raise RuntimeError('broken on purpose')\n")
    env = _env(PYTHONPATH=os.pathsep.join([str(broken_autoload), _env()["PYTHONPATH"]]))
    proc = _run([sys.executable, "-c", "print('alive')"], env)
    # The interpreter runs; the one line the .pth prints says it runs unpatched, and why.
    assert proc.stdout.strip() == "alive"
    (line,) = proc.stderr.splitlines()
    assert "could not start" in line and "broken on purpose" in line

    broken_package = tmp_path / "broken_package" / "sftrl_patches"
    broken_package.mkdir(parents=True)
    (broken_package / "__init__.py").write_text("raise RuntimeError('broken on purpose')\n")
    out = tmp_path / "out"
    out.mkdir()
    env = _env(PYTHONPATH=os.pathsep.join([str(broken_package.parent), _env()["PYTHONPATH"]]))
    proc = _run([sys.executable, RANK_SCRIPT, str(out)], env)  # DeepSpeed still imports; the run goes on
    (report,) = _reports(out)
    assert report["patch_mark"] is None
    assert "could not arm the patches" in proc.stderr and "broken on purpose" in proc.stderr


# ---- a regular (non-editable) install into a fresh environment --------------------------------------

def test_wheel_install_arms_a_fresh_environment_and_uninstall_removes_it(tmp_path):
    require_release(AFFECTED)
    python = autoload_startup.fresh_venv(str(tmp_path / "venv"), autoload_startup.build_wheel(str(tmp_path / "wheels")))
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         dict(os.environ)).stdout.strip()
    installed = {"sftrl_patches.pth", "sftrl_patches.start", "_sftrl_patches_autoload.py"}
    assert installed <= set(os.listdir(site_packages))
    # torch and DeepSpeed come from this test's environment through plain path lines (no start-up code).
    with open(os.path.join(site_packages, "zz_test_deps.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n" + os.path.join(ROOT, ".ds-releases", AFFECTED) + "\n")
    env = _env()
    env.pop("PYTHONPATH")

    out = tmp_path / "installed"
    out.mkdir()
    _run([python, RANK_SCRIPT, str(out), "--spawn-child"], env, cwd=str(tmp_path))
    for report in _reports(out) + _reports(out / "child"):
        _assert_patched(report)
    doctor = json.loads(_run([python, "-m", "sftrl_patches.doctor", "startup", "--json"], env,
                             cwd=str(tmp_path)).stdout)
    assert doctor["findings"][0]["state"] == "active"

    # A copy without the start-up file (what `pip install --target` or copying the package gives):
    # the doctor calls that a failure, because an affected DeepSpeed is here.
    os.rename(os.path.join(site_packages, "sftrl_patches.pth"), str(tmp_path / "moved.pth"))
    proc = subprocess.run([python, "-m", "sftrl_patches.doctor", "startup", "--json"], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True)
    finding = json.loads(proc.stdout)["findings"][0]
    # ("installed-not-active": this test's path line shows the outer environment's copy, not run here.)
    assert proc.returncode == 1 and finding["level"] == "fail", finding
    assert finding["state"] in ("not-installed", "installed-not-active"), finding
    os.rename(str(tmp_path / "moved.pth"), os.path.join(site_packages, "sftrl_patches.pth"))

    _run([sys.executable, "-m", "pip", "--python", python, "uninstall", "-q", "-y", "sftrl-patches"], dict(os.environ))
    assert not installed & set(os.listdir(site_packages))
    proc = _run([python, "-c", "print('alive')"], env, cwd=str(tmp_path))
    assert proc.stdout.strip() == "alive" and proc.stderr == ""


# ---- python -m sftrl_patches.launch ------------------------------------------------------------------

def test_launcher_arms_and_runs_a_module_as_main_with_launcher_options_passed_on(tmp_path):
    env = _env(**OFF, PYTHONPATH=os.pathsep.join([TESTS, _env()["PYTHONPATH"]]))
    _run([sys.executable, "-m", "sftrl_patches.launch", "--local_rank=1", "autoload_rank", str(tmp_path), "x"], env)
    (report,) = _reports(tmp_path)
    assert report["armed_at_start"] and report["name"] == "__main__"
    assert report["argv"] == ["--local_rank=1", str(tmp_path), "x"]
    _assert_patched(report)


def test_launcher_usage_errors():
    env = _env(**OFF)
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.launch"], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and "name the module or script" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.launch", "no_such_module_here.sub"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and "no module named 'no_such_module_here.sub'" in proc.stderr


# ---- launchers with two ranks -----------------------------------------------------------------------

def _two_ranks(folder):
    reports = _reports(folder)
    assert sorted(r["rank"] for r in reports) == ["0", "1"], reports
    for report in reports:
        _assert_patched(report)


# Each launcher starting two local ranks on this CPU: its command up to the script, and the option
# that makes it run a module. DeepSpeed's own runner works on its CPU accelerator (`--num_gpus 2`);
# accelerate needs --use_deepspeed for two CPU ranks (with --cpu it starts one process).
LAUNCHERS = {
    "torchrun": (["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571"], "-m"),
    "deepspeed": (["-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", "29572"], "--module"),
    "accelerate": (["-m", "accelerate.commands.launch", "--use_deepspeed", "--num_processes", "2",
                    "--num_machines", "1", "--zero_stage", "2", "--offload_optimizer_device", "cpu",
                    "--gradient_accumulation_steps", "4", "--mixed_precision", "no", "--dynamo_backend", "no",
                    "--main_process_port", "29573"], "-m"),
}


@pytest.mark.parametrize("launcher,through_launcher", [
    ("torchrun", False), ("torchrun", True), ("deepspeed", False), ("deepspeed", True), ("accelerate", True)],
    ids=["torchrun-autoload", "torchrun-launcher-autoload-off", "deepspeed-autoload",
         "deepspeed-launcher-autoload-off", "accelerate-launcher-autoload-off"])
def test_two_ranks_under_a_launcher(tmp_path, launcher, through_launcher):
    if launcher == "accelerate":
        pytest.importorskip("accelerate")
    command, module_option = LAUNCHERS[launcher]
    wrap = [module_option, "sftrl_patches.launch"] if through_launcher else []
    env = _env(MULTI_RANK, **(OFF if through_launcher else {}))
    _run([sys.executable, *command, *wrap, RANK_SCRIPT, str(tmp_path)], env)
    _two_ranks(tmp_path)


@pytest.mark.parametrize("value", ["", "0", "off", "No", "1", "true", "YES", "on", "all", "*", " 1 ",
                                   "deepspeed-offload-ga-drop", "a,b"])
def test_start_up_module_reads_the_switches_as_the_package_does(value):
    # The start-up module keeps its own copy of the switch parsing (it must not import the package).
    import _sftrl_patches_autoload
    from sftrl_patches import _config
    assert (_sftrl_patches_autoload.AUTOLOAD_VAR, _sftrl_patches_autoload.DISABLE_VAR) == \
        (_config.AUTOLOAD_VAR, _config.DISABLE_VAR)
    everything_off = _config.disabled_names({_config.DISABLE_VAR: value}) == "all"
    assert bool(_sftrl_patches_autoload.switched_off({_config.DISABLE_VAR: value})) is everything_off
