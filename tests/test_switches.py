"""Switches that say what they did not understand, and autoload failures that say so; each case in a
fresh interpreter. (tests/test_autoload.py covers autoload through real DeepSpeed ranks; here the
start-up file runs from a temporary site dir, and the trigger package is a stand-in `deepspeed`.)"""
import json
import os
import subprocess
import sys

import pytest

import sftrl_patches
from sftrl_patches import _config
from conftest import ROOT, run_python

PTH = os.path.join(ROOT, "autoload", "sftrl_patches.pth")
AUTOLOAD_DIR = os.path.join(ROOT, "autoload")
SWITCHES = ("SFTRL_PATCHES_DISABLE", "SFTRL_PATCHES_STRICT", "SFTRL_PATCHES_AUTOLOAD")
UNKNOWN = "deepspeed-offload-ga-drops,no-such-patch"


def _env(**switches):
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env.update(switches)
    return env


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


# ---- SFTRL_PATCHES_DISABLE with a name that is no patch's ------------------------------------------

def test_an_unknown_name_warns_once_naming_it_and_listing_the_known_ones():
    proc = run_python("import sftrl_patches; print('imported')", env=_env(SFTRL_PATCHES_DISABLE=UNKNOWN))
    assert proc.stdout.strip() == "imported"
    (line,) = _lines(proc.stderr)  # logging is not configured: its last-resort handler prints the warning
    assert line.startswith("sftrl_patches: SFTRL_PATCHES_DISABLE names unknown patches 'deepspeed-offload-ga-drops' "
                           "(did you mean 'deepspeed-offload-ga-drop'?), 'no-such-patch', which switch nothing off")
    assert all(name in line.split("known patches:")[1] for name in sftrl_patches.PATCHES)


def test_the_warning_goes_through_the_sftrl_patches_logger_once():
    code = """
    import logging, sys
    logging.basicConfig(stream=sys.stdout, format="%(name)s|%(levelname)s|%(message)s")
    import sftrl_patches
    """
    proc = run_python(code, env=_env(SFTRL_PATCHES_DISABLE="no-such-patch"))
    (line,) = _lines(proc.stdout)
    assert line.startswith("sftrl_patches|WARNING|sftrl_patches: SFTRL_PATCHES_DISABLE names unknown patch "
                           "'no-such-patch', which switches nothing off; known patches: ")
    assert proc.stderr == ""


def test_strict_mode_makes_an_unknown_name_an_error():
    code = """
    import json, sys
    try:
        import sftrl_patches
    except Exception as exc:
        finders = [type(f).__name__ for f in sys.meta_path]
        print(json.dumps([type(exc).__module__, type(exc).__name__, str(exc), "PostImportFinder" in finders]))
    """
    proc = run_python(code, env=_env(SFTRL_PATCHES_DISABLE="no-such-patch", SFTRL_PATCHES_STRICT="1"))
    module, name, message, hook_left = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (module, name) == ("sftrl_patches.registry", "PatchError")
    assert message.startswith("sftrl_patches: SFTRL_PATCHES_DISABLE names unknown patch 'no-such-patch'")
    assert "known patches: deepspeed-" in message and not hook_left  # raised before any hook was installed


@pytest.mark.parametrize("value", ["deepspeed-offload-ga-drop", " deepspeed-offload-ga-drop , openrlhf-sft-loss-aggregation ",
                                   "1", "all", "0", ""])
def test_known_names_and_the_all_or_nothing_values_say_nothing(value):
    assert _config.unknown_disabled_message(sftrl_patches.PATCHES, {_config.DISABLE_VAR: value}) is None


def test_known_names_import_silently_even_in_strict_mode():
    proc = run_python("import sftrl_patches; print(sftrl_patches.status('deepspeed-offload-ga-drop').state)",
                      env=_env(SFTRL_PATCHES_DISABLE="deepspeed-offload-ga-drop,openrlhf-sft-loss-aggregation",
                               SFTRL_PATCHES_STRICT="1"))
    assert proc.stdout.strip() in ("disabled", "not-installed") and proc.stderr == ""


# ---- the .pth start-up line --------------------------------------------------------------------------

BROKEN = "raise RuntimeError('broken on purpose')\n"


def _site(tmp_path, module_source=None):
    """A site dir holding the repository's .pth and, unless None, a `_sftrl_patches_autoload.py`."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    with open(PTH, encoding="utf-8") as source:
        (site_dir / "sftrl_patches.pth").write_text(source.read())
    if module_source is not None:
        (site_dir / "_sftrl_patches_autoload.py").write_text(module_source)
    return str(site_dir)


def _start(site_dir, **switches):
    """An interpreter without the real site-packages (-S) that processes `site_dir` as a site dir, twice:
    site.py does that to a venv's site-packages up to Python 3.14 (CPython issue #75723)."""
    env = _env(**switches)
    env.pop("PYTHONPATH", None)
    code = ("import site, sys; site.addsitedir(sys.argv[1]); site.addsitedir(sys.argv[1]); "
            "print('alive', [type(f).__name__ for f in sys.meta_path if type(f).__name__ == 'AutoloadTrigger'])")
    proc = subprocess.run([sys.executable, "-S", "-c", code, site_dir], env=env, cwd=site_dir, capture_output=True,
                          text=True, timeout=60)  # cwd: `-c` puts it first on sys.path
    assert proc.returncode == 0, proc.stderr
    return proc


def test_the_start_up_file_is_one_import_line():
    with open(PTH, encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    assert len(lines) == 1 and lines[0].startswith("import ")  # site.py executes only lines starting `import`
    compile(lines[0], PTH, "exec")


@pytest.mark.parametrize("module_source,error", [
    (BROKEN, "RuntimeError: broken on purpose"),
    (None, "ModuleNotFoundError: No module named '_sftrl_patches_autoload'"),
    ("def arm():\n    raise ValueError('arm broke')\n", "ValueError: arm broke"),
    ("x = 1\n", "AttributeError: module '_sftrl_patches_autoload' has no attribute 'arm'"),
], ids=["raises-at-import", "missing", "arm-raises", "no-arm"])
def test_a_broken_or_missing_module_is_one_line_and_the_interpreter_runs(tmp_path, module_source, error):
    proc = _start(_site(tmp_path, module_source))
    assert proc.stdout.strip() == "alive []"
    (line,) = proc.stderr.splitlines()
    assert line == (f"sftrl_patches: autoload (sftrl_patches.pth) could not start, so this interpreter runs unpatched: "
                    f"{error} (reinstall sftrl-patches; SFTRL_PATCHES_AUTOLOAD=0 silences this)")


@pytest.mark.parametrize("switch", [{"SFTRL_PATCHES_AUTOLOAD": "0"}, {"SFTRL_PATCHES_AUTOLOAD": " Off "},
                                    {"SFTRL_PATCHES_DISABLE": "1"}, {"SFTRL_PATCHES_DISABLE": "all"}],
                         ids=["autoload-0", "autoload-off", "disable-1", "disable-all"])
def test_switching_autoload_off_silences_it(tmp_path, switch):
    proc = _start(_site(tmp_path, BROKEN), **switch)
    assert proc.stdout.strip() == "alive []" and proc.stderr == ""


def test_disabling_some_patches_by_name_still_warns(tmp_path):
    proc = _start(_site(tmp_path), SFTRL_PATCHES_DISABLE="deepspeed-offload-ga-drop")
    assert len(proc.stderr.splitlines()) == 1 and "could not start" in proc.stderr


def test_the_real_module_arms_silently(tmp_path):
    with open(os.path.join(AUTOLOAD_DIR, "_sftrl_patches_autoload.py"), encoding="utf-8") as handle:
        proc = _start(_site(tmp_path, handle.read()))
    assert proc.stdout.strip() == "alive ['AutoloadTrigger']" and proc.stderr == ""


def test_a_real_interpreter_start_says_it_once(tmp_path):
    # A bare venv (no pip) with only our start-up file, started for real: its site-packages is read at
    # start-up as in any environment (twice, up to Python 3.14).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    with open(PTH, encoding="utf-8") as source, open(os.path.join(purelib, "sftrl_patches.pth"), "w") as target:
        target.write(source.read())
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "_sftrl_patches_autoload.py").write_text(BROKEN)
    for path, error in ((str(broken), "RuntimeError: broken on purpose"),
                        ("", "ModuleNotFoundError: No module named '_sftrl_patches_autoload'")):
        env = _env(PYTHONPATH=path)
        proc = subprocess.run([python, "-c", "print('alive')"], env=env, cwd=str(tmp_path), capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and proc.stdout.strip() == "alive", proc.stderr
        (line,) = proc.stderr.splitlines()
        assert error in line and line.startswith("sftrl_patches: autoload (sftrl_patches.pth) could not start")
    proc = subprocess.run([python, "-c", "print('alive')"], env=_env(SFTRL_PATCHES_AUTOLOAD="0"), cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "alive" and proc.stderr == ""


# ---- the trigger, when sftrl_patches itself fails ----------------------------------------------------

def _trigger(tmp_path, code, package_source=None, **switches):
    """-S interpreter: the autoload module armed by hand, a stand-in `deepspeed` as the trigger package, and
    either a broken `sftrl_patches` (package_source) or the repository's."""
    stand_in = tmp_path / "stand_in"
    (stand_in / "deepspeed").mkdir(parents=True)
    (stand_in / "deepspeed" / "__init__.py").write_text("VALUE = 'stand-in'\n")
    path = [str(stand_in), AUTOLOAD_DIR]
    if package_source is None:
        path.append(ROOT)
    else:
        (stand_in / "sftrl_patches").mkdir()
        (stand_in / "sftrl_patches" / "__init__.py").write_text(package_source)
    env = _env(**switches)
    env["PYTHONPATH"] = os.pathsep.join(path)
    prelude = "import _sftrl_patches_autoload\n_sftrl_patches_autoload.arm()\n"
    return subprocess.run([sys.executable, "-S", "-c", prelude + code], env=env, cwd=str(stand_in),
                          capture_output=True, text=True, timeout=60)  # not the repository's root: it is on sys.path


def test_a_broken_package_is_one_stderr_line_whatever_logging_is_set_to(tmp_path):
    # Logging configured to drop warnings, as a training script may: the line still reaches stderr.
    code = "import logging\nlogging.basicConfig(level=logging.ERROR)\nimport deepspeed\nprint('alive', deepspeed.VALUE)\n"
    proc = _trigger(tmp_path, code, package_source=BROKEN)
    assert proc.returncode == 0 and proc.stdout.strip() == "alive stand-in", proc.stderr
    assert proc.stderr.splitlines() == ["sftrl_patches: autoload could not arm the patches (RuntimeError: broken on "
                                        "purpose); this process runs unpatched"]


def test_through_autoload_an_unknown_name_warns_and_strict_mode_fails_the_import(tmp_path):
    code = "import deepspeed\nprint('alive', deepspeed.VALUE)\n"
    proc = _trigger(tmp_path, code, SFTRL_PATCHES_DISABLE="no-such-patch")
    assert proc.returncode == 0 and proc.stdout.strip() == "alive stand-in", proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("sftrl_patches: SFTRL_PATCHES_DISABLE names unknown patch 'no-such-patch'")

    proc = _trigger(tmp_path / "strict", code, SFTRL_PATCHES_DISABLE="no-such-patch", SFTRL_PATCHES_STRICT="1")
    assert proc.returncode == 1 and "alive" not in proc.stdout
    assert "sftrl_patches.registry.PatchError: sftrl_patches: SFTRL_PATCHES_DISABLE names unknown patch" in proc.stderr
