"""Arms sftrl_patches in every interpreter of this environment; run at start-up by
sftrl_patches.pth (and, on Python >= 3.15, by the PEP 829 file sftrl_patches.start instead).

Stdlib only and cheap, because it runs in every interpreter: it puts one small finder on
sys.meta_path that waits for the first import of a package we patch, then imports
sftrl_patches (which installs the real import hooks) and steps aside. A process that never
imports one of those packages never imports anything else because of us.

Opt out: SFTRL_PATCHES_AUTOLOAD=0 turns off only this (an explicit `import sftrl_patches` or
`python -m sftrl_patches.launch` still patches); SFTRL_PATCHES_DISABLE=1 turns off every patch.
"""
import os
import sys

# Top-level packages that own a patch target. tests/test_autoload.py checks this against the
# registry, so a patch for a new package cannot be forgotten here.
TRIGGER_PACKAGES = frozenset({"deepspeed", "openrlhf"})

AUTOLOAD_VAR = "SFTRL_PATCHES_AUTOLOAD"
DISABLE_VAR = "SFTRL_PATCHES_DISABLE"   # same meaning as in sftrl_patches._config
_OFF = frozenset({"0", "false", "no", "off"})
_ALL = frozenset({"1", "true", "yes", "on", "all", "*"})


def switched_off(environ=None):
    """The reason autoload is off by the environment, or '' when it is on."""
    environ = os.environ if environ is None else environ
    if environ.get(AUTOLOAD_VAR, "").strip().lower() in _OFF:
        return f"{AUTOLOAD_VAR}={environ[AUTOLOAD_VAR]}"
    if environ.get(DISABLE_VAR, "").strip().lower() in _ALL:
        return f"{DISABLE_VAR}={environ[DISABLE_VAR]}"
    return ""


class AutoloadTrigger:
    """Finds nothing itself. On the first lookup of a trigger package it arms sftrl_patches and
    hands that lookup to sftrl_patches' own finder, then stays inert (removing itself from
    sys.meta_path during a lookup would make the import system skip the next finder)."""

    def __init__(self):
        self.fired = False
        self.error = None

    def find_spec(self, fullname, path=None, target=None):
        if self.fired or fullname.partition(".")[0] not in TRIGGER_PACKAGES:
            return None
        self.fired = True
        finder = self._arm()
        return finder.find_spec(fullname, path, target) if finder is not None else None

    def _arm(self):
        try:
            import sftrl_patches
            return sftrl_patches._bootstrap.install()
        except Exception as exc:  # never break the program that imports a target
            self.error = f"{type(exc).__name__}: {exc}"
            import logging
            logging.getLogger("sftrl_patches").warning(
                "sftrl_patches autoload could not arm the patches (%s); this process runs unpatched", self.error)
            return None


def installed_trigger():
    for finder in sys.meta_path:
        if type(finder).__name__ == "AutoloadTrigger" and type(finder).__module__ == __name__:
            return finder
    return None


def arm():
    """Entry point of sftrl_patches.pth and sftrl_patches.start. Never raises."""
    try:
        if not switched_off() and installed_trigger() is None:
            sys.meta_path.insert(0, AutoloadTrigger())
    except Exception:  # interpreter start-up must never fail because of us
        pass
