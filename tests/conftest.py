"""Shared fixtures: a toy library on disk for engine tests, and the DeepSpeed release folders."""
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
