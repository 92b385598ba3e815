"""Shared fixtures: a toy library on disk for engine tests, and the DeepSpeed release folders; and, with
SFTRL_REQUIRE_ALL=1 (CI), a check that turns every skip not listed in tests/expected_skips.txt into a failure."""
import fnmatch
import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import deepspeed_releases  # noqa: E402

AFFECTED = os.environ.get("SFTRL_TEST_DS_AFFECTED", "0.18.9")
FIXED = os.environ.get("SFTRL_TEST_DS_FIXED", "0.19.8")
MULTI_RANK = os.environ.get("SFTRL_TEST_DS_MULTI_RANK", "0.18.6")  # ZeRO-1/2 steps crash with 2 CPU ranks on 0.18.7-0.18.9 (#7828)
WINDOW_7718 = os.environ.get("SFTRL_TEST_DS_7718", "0.17.6")

TOY_SOURCE = textwrap.dedent('''
    class Accumulator:
        def add(self, value):
            self.total = getattr(self, "total", 0) + value
            return self.total
''')


def require_release(version):
    """Skip (or, in CI with SFTRL_REQUIRE_DEEPSPEED=1, fail) when a release folder is missing."""
    if deepspeed_releases.is_installed(version):
        return deepspeed_releases.child_env(version)
    message = (f"DeepSpeed {version} is not installed in .ds-releases/ "
               f"(python benchmarks/deepspeed_releases.py install {version})")
    if os.environ.get("SFTRL_REQUIRE_DEEPSPEED") == "1":
        pytest.fail(message)
    pytest.skip(message)


def run_smoke(module, env, out, *flags):
    """`python -m MODULE --smoke --seeds 0 FLAGS --out OUT` from the repository root, the repository on
    PYTHONPATH; returns (stdout, results.json, its records by configuration)."""
    env = dict(env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", module, "--smoke", "--seeds", "0", *flags, "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(os.path.join(out, "results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    return proc.stdout, results, {record["config"]: record for record in results["records"]}


def run_python(code, env=None, extra_path=(), check=True):
    """Run code in a fresh interpreter; returns the CompletedProcess."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *extra_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONWARNINGS", "ignore")
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def toylib(tmp_path):
    """A tiny installed distribution 'toylib' (module toylib.core) whose version tests can set."""
    def make(version="1.2.0", source=TOY_SOURCE, with_metadata=True):
        package = tmp_path / "toylib"
        package.mkdir(exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / "core.py").write_text(source)
        if with_metadata:
            info = tmp_path / f"toylib-{version or '0'}.dist-info"
            info.mkdir(exist_ok=True)
            meta = "Metadata-Version: 2.1\nName: toylib\n" + (f"Version: {version}\n" if version else "")
            (info / "METADATA").write_text(meta)
        return str(tmp_path)
    return make


# ---- OpenRLHF releases, installed with --no-deps into .orl-releases/<version> by .ci/run ----------
ORL_RELEASES = os.path.join(ROOT, ".orl-releases")
SHIMS = os.path.join(ROOT, "examples", "openrlhf_cpu", "stand_ins")  # import-only flash_attn / vllm
ORL_AFFECTED = ("0.9.10", "0.10.3")   # the paper's release, and the last one with the window half of the bug
ORL_FIXED = "0.10.4"
ORL_OLD = "0.6.4"                     # GPTLMLoss era: affected, not patched
ORL_NEWEST = "0.11.2"                 # the newest release; pins DeepSpeed 0.19.6 (below)
DS_OF_ORL_NEWEST = os.environ.get("SFTRL_TEST_DS_ORL_NEWEST", "0.19.6")


def require_openrlhf(version, deepspeed=None):
    """Environment for a child that imports OpenRLHF `version` (and a DeepSpeed release) on CPU."""
    folder = os.path.join(ORL_RELEASES, version)
    if not os.path.isdir(os.path.join(folder, "openrlhf")):
        message = (f"OpenRLHF {version} is not installed in .orl-releases/ "
                   f"(pip install --no-deps --target .orl-releases/{version} openrlhf=={version})")
        if os.environ.get("SFTRL_REQUIRE_DEEPSPEED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    env = require_release(deepspeed) if deepspeed else dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [SHIMS, folder, env.get("PYTHONPATH")]))
    return env


# ---- CI: a skip nobody expected fails the run (SFTRL_REQUIRE_ALL=1, set by .ci/run) -----------------
# Whole modules skip when trl, ray, math_verify or accelerate is missing, and a run with them gone would
# still pass. With SFTRL_REQUIRE_ALL=1 every skip must match an entry of the allow-list, one a line:
#     TEST-ID-GLOB -- why this skip is legitimate            (matched against the test id, fnmatch)
#     reason:SKIP-REASON-GLOB -- why this skip is legitimate (matched against the skip's reason)
# Any other skip is listed at the end of the run, and the exit status becomes 1.
REQUIRE_ALL_VAR = "SFTRL_REQUIRE_ALL"
EXPECTED_SKIPS_VAR = "SFTRL_EXPECTED_SKIPS"  # another allow-list file (tests/test_expected_skips.py)
EXPECTED_SKIPS = os.path.join(ROOT, "tests", "expected_skips.txt")


def read_expected_skips(path):
    """[(kind, pattern, why)] from an allow-list; kind is "id" or "reason". A line without a why is an error."""
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise pytest.UsageError(f"cannot read the allow-list of skips {path}: {exc}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, separator, why = (part.strip() for part in line.partition(" -- "))
        if not separator or not pattern or not why:
            raise pytest.UsageError(f"{path}:{number}: expected `TEST-ID-GLOB -- why` or "
                                    f"`reason:SKIP-REASON-GLOB -- why`, got {line!r}")
        if pattern.startswith("reason:"):
            entries.append(("reason", pattern[len("reason:"):].strip(), why))
        else:
            entries.append(("id", pattern, why))
    return entries


def skip_reason(report):
    """The reason a skipped test or module gave (`pytest.skip(reason)`, importorskip's message)."""
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


class UnexpectedSkips:
    """Collects skips (of tests and of whole modules at collection) that no allow-list entry matches."""

    def __init__(self, path):
        self.path = path
        self.entries = read_expected_skips(path)
        self.found = []  # (test id, reason)

    def expected(self, nodeid, reason):
        return any(fnmatch.fnmatchcase(nodeid if kind == "id" else reason, pattern)
                   for kind, pattern, _ in self.entries)

    def _check(self, report):
        if report.skipped and not hasattr(report, "wasxfail"):  # an xfail reports as skipped too
            reason = skip_reason(report)
            if not self.expected(report.nodeid, reason):
                self.found.append((report.nodeid, reason))

    def pytest_collectreport(self, report):
        self._check(report)

    def pytest_runtest_logreport(self, report):
        self._check(report)

    def pytest_sessionfinish(self, session):
        if self.found and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_terminal_summary(self, terminalreporter):
        yield  # after pytest's own summary (-rs lists every skip): this comes last, above the counts
        if not self.found:
            return
        terminalreporter.write_sep("=", f"{len(self.found)} unexpected skip(s): a failure with {REQUIRE_ALL_VAR}=1",
                                   red=True)
        for nodeid, reason in self.found:
            terminalreporter.write_line(f"UNEXPECTED SKIP {nodeid}: {reason}", red=True)
        terminalreporter.write_line(f"Install what it needs, or list it with a reason in {self.path} "
                                    "(`TEST-ID-GLOB -- why`).")


def pytest_configure(config):
    if os.environ.get(REQUIRE_ALL_VAR) == "1":
        path = os.environ.get(EXPECTED_SKIPS_VAR) or EXPECTED_SKIPS
        config.pluginmanager.register(UnexpectedSkips(path), "sftrl-unexpected-skips")
