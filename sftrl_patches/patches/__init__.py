"""Every known bug: one module per bug, each with its records in PATCHES, found here without a list.

A module's ORDER (default 100, then its name) places its records: the order patches are applied and the
doctor's rows. Adding a bug is adding a module (docs/patches.md, "Adding a bug").
"""
import importlib
import os


def _module_names():
    """This folder's modules by file name: pkgutil.iter_modules would import inspect and typing, about 7 ms of
    every `import sftrl_patches` (tests/test_patch_discovery.py holds the two listings equal)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    return sorted(name[:-3] for name in os.listdir(folder) if name.endswith(".py") and not name.startswith("_"))


def _discover():
    modules = []
    for name in _module_names():
        module = importlib.import_module(f"{__name__}.{name}")
        if hasattr(module, "PATCHES"):
            modules.append(module)
    modules.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    return tuple(patch for module in modules for patch in module.PATCHES)


ALL = _discover()
