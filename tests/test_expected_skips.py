"""The CI check of tests/conftest.py (SFTRL_REQUIRE_ALL=1): a skip not on the allow-list fails the run.

Each case runs pytest in a subprocess on a tiny test file in a temporary folder, with tests/conftest.py
loaded as a plugin (`-p conftest`) and the allow-list replaced through SFTRL_EXPECTED_SKIPS.
"""
import os
import subprocess
import sys

import pytest

from conftest import EXPECTED_SKIPS, EXPECTED_SKIPS_VAR, REQUIRE_ALL_VAR, ROOT, read_expected_skips

TESTS = os.path.join(ROOT, "tests")

TINY = '''
import pytest

def test_passes():
    pass

def test_needs_something_missing():
    pytest.skip("needs no_such_package_here")

@pytest.mark.xfail(reason="a known failure, not a skip")
def test_known_failure():
    assert False
'''
MODULE_SKIP = 'import pytest\npytest.importorskip("no_such_package_here")\n\ndef test_never_runs():\n    pass\n'


def run_tiny(tmp_path, allowed=None, require_all="1", module_skip=False):
    folder = tmp_path / "tiny"
    folder.mkdir()
    (folder / "test_tiny.py").write_text(TINY)
    if module_skip:
        (folder / "test_tiny_module.py").write_text(MODULE_SKIP)
    allow_list = tmp_path / "allowed.txt"
    allow_list.write_text("# nothing is expected to skip\n" if allowed is None else allowed)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [TESTS, os.environ.get("PYTHONPATH")])))
    env[EXPECTED_SKIPS_VAR] = str(allow_list)
    env.pop(REQUIRE_ALL_VAR, None)
    if require_all is not None:
        env[REQUIRE_ALL_VAR] = require_all
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "conftest", "-p", "no:cacheprovider",
                           "--rootdir", str(folder), str(folder)], cwd=str(folder), env=env, capture_output=True,
                          text=True, timeout=300)
    return proc, proc.stdout + proc.stderr


def test_an_unlisted_skip_fails_the_run_and_names_the_test_and_its_reason(tmp_path):
    proc, out = run_tiny(tmp_path)
    assert proc.returncode == 1, out
    assert "UNEXPECTED SKIP test_tiny.py::test_needs_something_missing: needs no_such_package_here" in out
    assert "test_known_failure" not in out.split("unexpected skip")[-1]  # an xfail is no skip
    assert "1 passed, 1 skipped, 1 xfailed" in out


def test_a_module_skipped_at_collection_fails_the_run(tmp_path):
    proc, out = run_tiny(tmp_path, allowed="test_tiny.py::* -- the tiny file's own skip\n", module_skip=True)
    assert proc.returncode == 1, out
    assert "UNEXPECTED SKIP test_tiny_module.py: could not import 'no_such_package_here'" in out
    assert "UNEXPECTED SKIP test_tiny.py" not in out


@pytest.mark.parametrize("entry", ["test_tiny.py::test_needs_something_missing", "test_tiny.py::test_needs_*",
                                   "reason:needs no_such_package_*"], ids=["test-id", "id-glob", "reason-glob"])
def test_a_listed_skip_passes(tmp_path, entry):
    proc, out = run_tiny(tmp_path, allowed=f"# allowed\n\n{entry} -- a reason\n")
    assert proc.returncode == 0, out
    assert "UNEXPECTED SKIP" not in out and "SKIPPED" in out  # -rs still lists it


def test_without_the_switch_a_skip_is_only_a_skip(tmp_path):
    proc, out = run_tiny(tmp_path, require_all=None, module_skip=True)
    assert proc.returncode == 0 and "UNEXPECTED SKIP" not in out, out


def test_an_entry_without_a_reason_is_a_usage_error(tmp_path):
    proc, out = run_tiny(tmp_path, allowed="test_tiny.py::test_needs_something_missing\n")
    assert proc.returncode == pytest.ExitCode.USAGE_ERROR, out
    assert "allowed.txt:1: expected `TEST-ID-GLOB -- why`" in out


def test_the_committed_allow_list_gives_a_reason_for_tests_that_exist():
    entries = read_expected_skips(EXPECTED_SKIPS)
    assert entries, "an empty allow-list: remove this test's assertion if that is intended"
    for kind, pattern, why in entries:
        assert len(why.split()) >= 3, (pattern, why)
        if kind == "id":  # a renamed or deleted test leaves a stale entry behind
            path = pattern.split("::")[0]
            assert os.path.isfile(os.path.join(ROOT, path)), pattern
            function = pattern.split("::")[1].split("[")[0] if "::" in pattern else ""
            assert f"def {function}(" in open(os.path.join(ROOT, path), encoding="utf-8").read(), pattern
