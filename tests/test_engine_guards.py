"""Guard targets and patches spanning two modules, where one target module imports the other."""
import json
import os
import textwrap

from conftest import last_json, run_python

BASE = textwrap.dedent('''
    def scale(value):
        return value * 2
''')
CORE = textwrap.dedent('''
    from toylib.base import scale

    class Accumulator:
        def add(self, value):
            return scale(value)
''')

CHILD = '''
import json, logging, sys
from sftrl_patches import _bootstrap
from sftrl_patches._fingerprint import fingerprint_lines
from sftrl_patches._version import VersionRange
from sftrl_patches.registry import Patch, Registry, Target

records = []
logging.getLogger("sftrl_patches").addHandler(type("H", (logging.Handler,), {"emit": lambda s, r: records.append(r.getMessage())})())
logging.getLogger("sftrl_patches").setLevel(logging.INFO)
ADD = fingerprint_lines(["def add(self, value):", "return scale(value)"])
SCALE = fingerprint_lines(["def scale(value):", "return value * 2"])
guard = GUARD_FP
guard_fp = {SCALE if guard == "real" else guard: "1.x"}
patch = Patch(name="two-modules", title="t", distribution="toylib", affected=VersionRange("1.0.0", "2.0.0"),
              targets=(Target("toylib.core", "Accumulator", "add", lambda orig: (lambda self, v: orig(self, v) + 1),
                              {ADD: "1.x"}),
                       Target("toylib.base", "", "scale", None, guard_fp)))
reg = Registry([patch])
reg.arm(_bootstrap.install())
import toylib.core, toylib.base
status = reg.status("two-modules")
print(json.dumps({"state": status.state, "value": toylib.core.Accumulator().add(5),
                  "scale_untouched": toylib.base.scale.__module__ == "toylib.base" and not hasattr(toylib.base.scale, "__sftrl_patch__"),
                  "messages": records, "revert": reg.revert("two-modules").state,
                  "after_revert": toylib.core.Accumulator().add(5)}))
'''


def _run(toylib, guard_fp):
    root = toylib(source=CORE)
    with open(os.path.join(root, "toylib", "base.py"), "w") as handle:
        handle.write(BASE)
    return last_json(run_python(CHILD.replace("GUARD_FP", repr(guard_fp)), extra_path=(root,)))


def test_guard_is_checked_not_replaced_and_no_warning_while_a_target_module_is_still_running(toylib):
    out = _run(toylib, "real")
    assert out["state"] == "patched", out
    assert out["value"] == 11          # wrapped add: scale(5) + 1
    assert out["scale_untouched"]
    # core imports base mid-execution: the patch must wait for core, not call it unpatchable.
    assert not [m for m in out["messages"] if "unpatchable" in m], out["messages"]
    assert out["revert"] == "reverted" and out["after_revert"] == 10


def test_guard_with_an_unknown_shape_leaves_every_target_untouched(toylib):
    out = _run(toylib, "0000000000000000")
    assert out["state"] == "unpatchable", out
    assert "toylib.base.scale" in " ".join(out["messages"])
    assert out["value"] == 10
