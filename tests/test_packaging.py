"""Packaging: the artifacts a user installs from carry autoload and the licence.

From a copy of what git tracks (plus files not yet committed, minus ignored ones), build the sdist,
then a wheel FROM THAT SDIST (the path `python -m build` takes), install the wheel into a fresh
venv, and show there that autoload armed at start-up and the console script runs; then
`pip uninstall` and record what it leaves; the same for an editable install. No network:
setuptools, wheel and pip from this environment (or the fresh venv's own pip).
tests/test_autoload.py checks this environment's own install and a wheel built from the work tree.
"""
import glob
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
AUTOLOAD_FILES = {"sftrl_patches.pth", "sftrl_patches.start", "_sftrl_patches_autoload.py"}
TIMEOUT = 300


def _env():
    """This environment's variables, minus what would let the fresh venv see this checkout."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("PYTHON", "SFTRL_PATCHES", "PIP_", "VIRTUAL_ENV"))} | {"PIP_NO_INDEX": "1"}


def _run(command, cwd, env=None, check=True):
    proc = subprocess.run(command, cwd=str(cwd), env=_env() if env is None else env, capture_output=True,
                          text=True, timeout=TIMEOUT)
    if check:
        assert proc.returncode == 0, (f"{command} exited {proc.returncode}:\n"
                                      f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def _repository_copy(dest):
    """The files git tracks, and untracked ones it does not ignore (new files not yet committed)."""
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("needs a git checkout of this repository")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for relative in filter(None, listed):
        source = os.path.join(ROOT, relative)
        if os.path.isfile(source):  # a tracked file deleted in the work tree is skipped
            os.makedirs(os.path.dirname(os.path.join(dest, relative)), exist_ok=True)
            shutil.copy2(source, os.path.join(dest, relative))
    return dest


def _build_sdist(source, out):
    try:  # the `build` package itself (a find_spec would also see a build/ folder in the current directory)
        importlib.metadata.version("build")
        has_build = True
    except importlib.metadata.PackageNotFoundError:
        has_build = False
    if has_build:
        command = [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), "."]
    else:
        command = [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(out)]
    _run(command, source)
    (sdist,) = glob.glob(os.path.join(str(out), "*.tar.gz"))
    return sdist


def _site_files(folder):
    """Every file and folder under `folder`, relative, as a set."""
    found = set()
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(base, name), folder))
    return found


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("packaging")


@pytest.fixture(scope="module")
def checkout(work):
    return _repository_copy(str(work / "checkout"))


@pytest.fixture(scope="module")
def sdist(work, checkout):
    """(the sdist's path, the names in it relative to its top folder)."""
    path = _build_sdist(checkout, work / "sdist")
    with tarfile.open(path) as archive:
        names = archive.getnames()
    return path, [name.split("/", 1)[1] for name in names if "/" in name]


@pytest.fixture(scope="module")
def wheel(work, sdist):
    """A wheel built from the unpacked sdist, as `python -m build` does."""
    with tarfile.open(sdist[0]) as archive:
        archive.extractall(str(work / "unpacked"), **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (unpacked,) = glob.glob(os.path.join(str(work / "unpacked"), "*"))
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(work / "wheel"), unpacked], work)
    (path,) = glob.glob(os.path.join(str(work / "wheel"), "*.whl"))
    return path


def test_sdist_carries_the_start_up_files_and_the_licence_and_no_tests(sdist):
    _, names = sdist
    assert {"autoload/sftrl_patches.pth", "autoload/sftrl_patches.start", "autoload/_sftrl_patches_autoload.py",
            "LICENSE", "README.md", "setup.py", "MANIFEST.in"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("tests", "examples", "benchmarks", ".ci")]


def test_wheel_from_the_sdist_carries_autoload_licence_and_extras(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert AUTOLOAD_FILES <= set(names)  # at the root: they land at the root of site-packages
        licences = [n for n in names if n.split("/")[0].endswith(".dist-info") and n.endswith("/LICENSE")]
        assert licences, names
        with open(os.path.join(ROOT, "LICENSE"), "rb") as handle:
            assert archive.read(licences[0]) == handle.read()
        (metadata_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        metadata = archive.read(metadata_name).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert not [r for r in requires if "extra ==" not in r], requires  # the import path needs nothing
    assert "Provides-Extra: audit" in metadata
    normalised = [r.replace("'", '"').replace(" ", "").lower() for r in requires]
    assert 'pyyaml;extra=="audit"' in normalised and 'pyyaml;extra=="test"' in normalised, requires


def test_wheel_from_the_sdist_arms_a_fresh_venv_and_uninstall_removes_it(work, wheel):
    venv = work / "venv"
    # No system site packages; its own pip (a venv without pip would have nothing else in site-packages,
    # and pip's uninstall then removes site-packages itself, as every file in it was ours).
    _run([sys.executable, "-m", "venv", str(venv)], work)
    python = os.path.join(str(venv), "bin", "python")
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         work).stdout.strip()
    bin_before, site_before = set(os.listdir(str(venv / "bin"))), _site_files(site_packages)
    pip = [python, "-m", "pip"]
    _run(pip + ["install", "-q", "--no-deps", "--no-index", wheel], work)
    assert AUTOLOAD_FILES <= set(os.listdir(site_packages))

    # At start-up, before anything is imported: the trigger is on sys.meta_path, from the installed module.
    code = ("import sys, _sftrl_patches_autoload as a; "
            "print(any(type(f) is a.AutoloadTrigger for f in sys.meta_path), a.__file__)")
    armed, module_file = _run([python, "-c", code], work).stdout.split()
    assert armed == "True" and os.path.dirname(module_file) == site_packages
    off = _run([python, "-c", code], work, env=_env() | {"SFTRL_PATCHES_AUTOLOAD": "0"}).stdout.split()
    assert off[0] == "False"  # the control: the same check can see it unarmed
    imported = _run([python, "-c", "import sftrl_patches; print(sftrl_patches.__file__)"], work).stdout.strip()
    assert imported.startswith(site_packages + os.sep)  # imports in a venv that has nothing else

    doctor = _run([os.path.join(str(venv), "bin", "sftrl-doctor"), "--help"], work)
    assert doctor.stdout.startswith("usage: sftrl-doctor")
    # Without the `audit` extra (PyYAML), a YAML input is a usage error (exit 2) that names the fix.
    (work / "accelerate.yaml").write_text("distributed_type: DEEPSPEED\n")
    audit = _run([os.path.join(str(venv), "bin", "sftrl-doctor"), "audit", "--versions", "deepspeed==0.18.9",
                  "--config", str(work / "accelerate.yaml")], work, check=False)
    assert audit.returncode == 2 and "PyYAML" in audit.stderr, (audit.returncode, audit.stdout, audit.stderr)

    _run(pip + ["uninstall", "-q", "-y", "sftrl-patches"], work)
    assert not AUTOLOAD_FILES & set(os.listdir(site_packages))
    assert set(os.listdir(str(venv / "bin"))) == bin_before  # sftrl-doctor gone
    # What uninstall leaves in site-packages (docs/install.md states this): nothing, not even bytecode.
    assert _site_files(site_packages) == site_before, sorted(_site_files(site_packages) - site_before)
    proc = _run([python, "-c", "print('alive')"], work)
    assert proc.stdout.strip() == "alive" and proc.stderr == ""


def test_editable_install_and_its_uninstall(work):
    # tests/test_autoload.py checks that this environment's editable install arms autoload; here, what
    # `pip install -e .` puts in a fresh venv and what `pip uninstall` leaves. setuptools, wheel and pip
    # come from this environment through a plain path line (no network, no build isolation).
    checkout = _repository_copy(str(work / "editable-checkout"))  # its own: the build writes into it
    venv = work / "editable-venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], work)
    python = os.path.join(str(venv), "bin", "python")
    site_packages = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         work).stdout.strip()
    with open(os.path.join(site_packages, "zz_build_tools.pth"), "w") as handle:
        handle.write(sysconfig.get_paths()["purelib"] + "\n")
    bin_before, site_before = set(os.listdir(str(venv / "bin"))), _site_files(site_packages)
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-e", checkout],
         work)
    assert {"sftrl_patches.pth", "sftrl_patches.start"} <= set(os.listdir(site_packages))
    code = ("import sys, _sftrl_patches_autoload as a, sftrl_patches as p; "
            "print(any(type(f) is a.AutoloadTrigger for f in sys.meta_path), a.__file__, p.__file__)")
    armed, module_file, package_file = _run([python, "-c", code], work).stdout.split()
    assert armed == "True"
    assert module_file == os.path.join(checkout, "autoload", "_sftrl_patches_autoload.py")
    assert package_file == os.path.join(checkout, "sftrl_patches", "__init__.py")

    _run([python, "-m", "pip", "uninstall", "-q", "-y", "sftrl-patches"], work)
    assert _site_files(site_packages) == site_before, sorted(_site_files(site_packages) ^ site_before)
    assert set(os.listdir(str(venv / "bin"))) == bin_before
    proc = _run([python, "-c", "print('alive')"], work)
    assert proc.stdout.strip() == "alive" and proc.stderr == ""
