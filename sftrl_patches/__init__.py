"""Version-gated, fingerprint-checked fixes for silent bugs in LLM post-training stacks.

Importing this module arms a stdlib-only import hook: each patch applies right after its
target module executes (at once if it is already imported). It imports no third-party module.
Switches: SFTRL_PATCHES_DISABLE=1 (or a comma list of patch names), SFTRL_PATCHES_STRICT=1.
When a DeepSpeed engine or an OpenRLHF trainer is built, one line on rank 0 says whether this run is
affected and patched (SFTRL_PATCHES_VERDICT=off|rank0|all; SFTRL_PATCHES_REPORT=FILE for JSON lines).
"""
from . import _bootstrap, runtime_report as _runtime_report
from .registry import PatchError, Registry
from .patches import ALL as _ALL

__version__ = "0.1.0"
__all__ = ["PATCHES", "PatchError", "apply", "revert", "status", "verify"]

PATCHES = {patch.name: patch for patch in _ALL}
_registry = Registry(_ALL)


def _names(name):
    return list(PATCHES) if name is None else [name]


def apply(name=None):
    """Apply one patch (or all), importing its target. Raises PatchError on any problem."""
    statuses = {n: _registry.apply(n, explicit=True) for n in _names(name) if PATCHES[n].targets or name}
    return statuses[name] if name else statuses


def revert(name=None):
    """Restore the originals we replaced; anything replaced by someone else is left alone."""
    statuses = {n: _registry.revert(n) for n in _names(name)}
    return statuses[name] if name else statuses


def status(name=None):
    """Current state of one patch (or all), without importing any target."""
    statuses = {n: _registry.status(n) for n in _names(name)}
    return statuses[name] if name else statuses


verify = status


_finder = _bootstrap.install()
_registry.arm(_finder)
_runtime_report.arm(_finder, _registry)
