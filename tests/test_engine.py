"""The patch engine on a toy library, each scenario in a fresh interpreter."""
import itertools
import json
import os

import pytest

from conftest import ROOT, TOY_SOURCE, last_json, run_python

TESTS = os.path.dirname(os.path.abspath(__file__))

PRELUDE = """
import json, os, sys
from sftrl_patches import _bootstrap
from sftrl_patches.registry import Registry, PatchError
from toy_patch import TOY
reg = Registry([TOY])
def op_arm(): reg.arm(_bootstrap.install())
def op_import(): import toylib.core
def op_apply(): reg.apply("toy-add")
def op_revert(): reg.revert("toy-add")
def observe():
    core = sys.modules.get("toylib.core")
    out = {"state": reg.status("toy-add").state, "imported": core is not None}
    if core is not None:
        add = vars(core.Accumulator)["add"]
        out["value"] = core.Accumulator().add(1)
        out["double_wrapped"] = hasattr(getattr(add, "__wrapped__", None), "__sftrl_patch__")
    return out
"""


def run_ops(toy_root, ops, env_extra=None, check=True):
    code = PRELUDE + "".join(f"op_{op}()\n" for op in ops) + "print(json.dumps(observe()))\n"
    env = dict(os.environ, **(env_extra or {}))
    proc = run_python(code, env=env, extra_path=(toy_root, TESTS), check=check)
    return proc


def expected(ops):
    armed = imported = patched = reverted = False
    for op in ops:
        if op == "arm":
            armed = True
            patched = patched or (imported and not reverted)
        elif op == "import":
            imported = True
            patched = patched or (armed and not reverted)
        elif op == "apply":
            imported = patched = True
            reverted = False
        elif op == "revert":
            patched, reverted = False, True
    return imported, patched, reverted


SEQUENCES = sorted(set(
    list(itertools.permutations(["arm", "import", "apply", "revert"]))
    + [("arm", "import", "revert", "apply"), ("import", "apply", "apply"), ("arm", "import", "apply", "revert",
                                                                           "revert", "apply"),
       ("arm", "revert", "import"), ("import", "arm", "revert", "arm")]))


@pytest.mark.parametrize("ops", SEQUENCES, ids=lambda ops: "-".join(ops))
def test_every_ordering_of_import_apply_revert(toylib, ops):
    result = last_json(run_ops(toylib(), ops))
    imported, patched, reverted = expected(ops)
    assert result["imported"] == imported
    if imported:
        assert result["value"] == (10 if patched else 1), result
        assert not result["double_wrapped"]
    if patched:
        assert result["state"] == "patched"
    elif reverted:
        assert result["state"] == "reverted"
    else:
        assert result["state"] == "patchable"


def test_unknown_fingerprint_is_left_untouched_and_reported(toylib):
    changed = TOY_SOURCE.replace("return self.total", "return int(self.total)")
    root = toylib(source=changed)
    result = last_json(run_ops(root, ["arm", "import"]))
    assert result["state"] == "unpatchable"
    assert result["value"] == 1
    proc = run_ops(root, ["import", "apply"], check=False)
    assert proc.returncode != 0 and "PatchError" in proc.stderr and "matches no known shape" in proc.stderr


@pytest.mark.parametrize("version, state", [
    ("1.2.0+cu121", "patched"),      # local label: same release
    ("2.0.0rc1", "patched"),         # pre-release of the fix: still inside >=1.0.0,<2.0.0
    ("1.0.0.dev0", "not-affected"),  # a dev build before the first affected release
    ("2.0.0", "not-affected"),
    ("0.9.9", "not-affected"),
    ("not-a-version", "patched"),    # unreadable: decided from the source fingerprint
    (None, "patched"),               # metadata without a version
])
def test_version_strings(toylib, version, state):
    result = last_json(run_ops(toylib(version=version), ["arm", "import"]))
    assert result["state"] == state
    assert result["value"] == (10 if state == "patched" else 1)


def test_missing_metadata_decides_from_source(toylib):
    result = last_json(run_ops(toylib(with_metadata=False), ["arm", "import"]))
    assert result["state"] == "patched" and result["value"] == 10


def test_failure_inside_a_patch_is_logged_not_raised(toylib):
    root = toylib()
    proc = run_ops(root, ["arm", "import"], env_extra={"TOY_WRAPPER_RAISES": "1"})
    result = last_json(proc)
    assert result["state"] == "error" and result["value"] == 1  # nothing half-applied
    assert "wrapper factory failed on purpose" in proc.stderr


def test_strict_mode_raises_on_import(toylib):
    proc = run_ops(toylib(), ["arm", "import"], env_extra={"TOY_WRAPPER_RAISES": "1", "SFTRL_PATCHES_STRICT": "1"},
                   check=False)
    assert proc.returncode != 0 and "PatchError" in proc.stderr


def test_disable_switch(toylib):
    for value in ("1", "toy-add", "other,toy-add"):
        result = last_json(run_ops(toylib(), ["arm", "import"], env_extra={"SFTRL_PATCHES_DISABLE": value}))
        assert result["state"] == "disabled" and result["value"] == 1
    result = last_json(run_ops(toylib(), ["arm", "import"], env_extra={"SFTRL_PATCHES_DISABLE": "other"}))
    assert result["state"] == "patched"


def test_subclass_override_is_reported_partial(toylib):
    root = toylib(source=TOY_SOURCE + "\nclass Special(Accumulator):\n    add = Accumulator.add\n")
    result = last_json(run_ops(root, ["arm", "import"]))
    assert result["state"] == "partial"


def test_revert_leaves_a_foreign_replacement_alone(toylib):
    code = PRELUDE + """
op_arm(); op_import()
import toylib.core as core
foreign = lambda self, value: -1
core.Accumulator.add = foreign
status = reg.revert("toy-add")
print(json.dumps({"kept": vars(core.Accumulator)["add"] is foreign, "details": status.details}))
"""
    result = last_json(run_python(code, extra_path=(toylib(), TESTS)))
    assert result["kept"] and "no longer ours" in result["details"][0]


def test_import_sftrl_patches_imports_no_third_party_module():
    code = """
import sys
before = set(sys.modules)
import sftrl_patches
new = {m.split(".")[0] for m in set(sys.modules) - before}
print(sorted(n for n in new if n not in sys.stdlib_module_names and n != "sftrl_patches"))
"""
    assert run_python(code).stdout.strip() == "[]"


def test_the_real_package_never_raises_on_an_unknown_deepspeed_shape():
    # A stand-in for DeepSpeed's module whose method source we do not know, already imported.
    prelude = """
import sys, types, json
for name in ("deepspeed", "deepspeed.runtime", "deepspeed.runtime.zero"):
    sys.modules[name] = types.ModuleType(name)
module = types.ModuleType("deepspeed.runtime.zero.stage_1_and_2")
exec("class DeepSpeedZeroOptimizer:\\n    def async_accumulate_grad_in_cpu_via_gpu(self, p):\\n        return p\\n"
     "    def copy_grads_in_partition(self, p):\\n        return p\\n", module.__dict__)
sys.modules[module.__name__] = module
"""
    code = prelude + """
import sftrl_patches
s = sftrl_patches.status("deepspeed-offload-ga-drop")
print(json.dumps([s.state, hasattr(module.DeepSpeedZeroOptimizer.async_accumulate_grad_in_cpu_via_gpu, "__sftrl_patch__")]))
"""
    state, wrapped = last_json(run_python(code))
    assert state == "unpatchable" and not wrapped
    strict = run_python(prelude + "import sftrl_patches\n", env=dict(os.environ, SFTRL_PATCHES_STRICT="1"), check=False)
    assert strict.returncode != 0 and "PatchError" in strict.stderr
