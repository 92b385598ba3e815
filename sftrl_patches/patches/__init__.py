"""Every known bug: one module per bug, each with its records in PATCHES, found here without a list.

A module's ORDER (default 100, then its name) places its records: the order patches are applied and the
doctor's rows. Adding a bug is adding a module (docs/patches.md, "Adding a bug").
"""
import importlib
import pkgutil


def _discover():
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "PATCHES"):
            modules.append(module)
    modules.sort(key=lambda m: (getattr(m, "ORDER", 100), m.__name__))
    return tuple(patch for module in modules for patch in module.PATCHES)


ALL = _discover()
