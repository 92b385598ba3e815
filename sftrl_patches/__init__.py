"""Version-gated, fingerprint-checked fixes for silent bugs in LLM post-training stacks.

Importing this module arms a stdlib-only import hook: each patch applies right after its
target module executes (at once if it is already imported). It imports no third-party module.
Switches: SFTRL_PATCHES_DISABLE=1 (or a comma list of patch names; an unknown name is warned about,
and an error under SFTRL_PATCHES_STRICT=1), SFTRL_PATCHES_STRICT=1.
When a DeepSpeed engine or an OpenRLHF trainer is built, one line on rank 0 says whether this run is
affected and patched (SFTRL_PATCHES_VERDICT=off|rank0|all; SFTRL_PATCHES_REPORT=FILE for JSON lines).
"""
from . import _bootstrap, runtime_report as _runtime_report
from .registry import PatchError, Registry
from .patches import ALL as _ALL

__version__ = "0.1.0"
__all__ = ["HOOKS", "PATCHES", "PatchError", "apply", "revert", "status", "verify"]

PATCHES = {patch.name: patch for patch in _ALL}                         # the known bugs
HOOKS = {record.name: record for record in _runtime_report.RECORDS}   # the run-time report's __init__ wrappers
_registry = Registry(_ALL + _runtime_report.RECORDS)


def _names(name):
    return [*PATCHES, *HOOKS] if name is None else [name]


def apply(name=None):
    """Apply one patch (or all), importing its target. Raises PatchError on any problem."""
    statuses = {n: _registry.apply(n, explicit=True) for n in _names(name) if _registry.patches[n].targets or name}
    return statuses[name] if name else statuses


def revert(name=None):
    """Restore the originals we replaced; anything replaced by someone else is left alone."""
    statuses = {n: _registry.revert(n) for n in _names(name)}
    return statuses[name] if name else statuses


def status(name=None):
    """Current state of one patch (or all), without importing any target."""
    statuses = {n: _registry.status(n) for n in _names(name)}
    return statuses[name] if name else statuses


def verify(name=None):
    """Check again now that every applied patch is still reached (not replaced, no stale alias); fresh states."""
    statuses = {n: _registry.verify(n) for n in _names(name)}
    return statuses[name] if name else statuses


_registry.check_switches()  # a SFTRL_PATCHES_DISABLE name that is no patch's: one warning (strict: PatchError)
_finder = _bootstrap.install()
_registry.arm(_finder)
