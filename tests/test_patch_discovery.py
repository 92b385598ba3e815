"""A new bug is one module: sftrl_patches/patches/ is read without a hand-kept list."""
import json
import os
import subprocess
import sys
import textwrap


def test_a_module_dropped_into_the_patches_package_is_registered(tmp_path):
    # A copy of the package with one extra bug module: the registry, status() and the doctor's list see it.
    import shutil
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    copy = tmp_path / "sftrl_patches"
    shutil.copytree(os.path.join(root, "sftrl_patches"), copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "patches" / "toy_bug.py").write_text(textwrap.dedent('''
        from .._version import VersionRange
        from ..registry import Patch
        ORDER = 1
        PATCHES = (Patch(name="toy-bug", title="a toy", distribution="toylib", affected=VersionRange("1.0")),)
    '''))
    code = ("import json, sftrl_patches; print(json.dumps({'from': sftrl_patches.__file__, 'first': "
            "list(sftrl_patches.PATCHES)[0], 'state': sftrl_patches.status('toy-bug').state}))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["from"].startswith(str(tmp_path))
    assert (result["first"], result["state"]) == ("toy-bug", "not-installed")


def test_order_places_the_records():
    import sftrl_patches
    names = list(sftrl_patches.PATCHES)
    assert names.index("deepspeed-offload-ga-drop") < names.index("deepspeed-offload-multi-backward")
    assert names[-1] == "llamafactory-multimodal-loss-7448"


def test_the_module_listing_is_what_pkgutil_finds():
    # The package lists its folder itself (pkgutil.iter_modules costs `import sftrl_patches` inspect and typing)
    import pkgutil
    from sftrl_patches import patches
    expected = sorted(m.name for m in pkgutil.iter_modules(patches.__path__) if not m.name.startswith("_"))
    assert patches._module_names() == expected and len(expected) >= 8


def test_import_sftrl_patches_pulls_in_neither_inspect_nor_typing():
    # what made the import 10 ms where 4 was measured: pkgutil's module listing imports both
    code = "import sys, sftrl_patches; print(sorted({'inspect', 'typing', 'pkgutil'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", proc.stdout
