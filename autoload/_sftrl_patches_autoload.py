"""Arms sftrl_patches in every interpreter of this environment; run at start-up by
sftrl_patches.pth (and, on Python >= 3.15, by the PEP 829 file sftrl_patches.start instead).

Stdlib only and cheap, because it runs in every interpreter: it puts one small finder on
sys.meta_path that waits for the first import of a package we patch, then imports
sftrl_patches (which installs the real import hooks) and steps aside. A process that never
imports one of those packages never imports anything else because of us.

Opt out: SFTRL_PATCHES_AUTOLOAD=0 turns off only this (an explicit `import sftrl_patches` or
`python -m sftrl_patches.launch` still patches); SFTRL_PATCHES_DISABLE=1 turns off every patch.

Failures are said in one line on stderr, not through logging: at start-up no logging is configured
yet, and by the time a target is imported the program may have sent logging elsewhere. The .pth
line itself says so when this module is missing or broken (see autoload/sftrl_patches.pth); it marks
`sys._sftrl_patches_autoload_warned` so that the line is said once, since site.py runs the .pth of a
venv twice up to Python 3.14 (CPython issue #75723).
"""
import os
import sys

# Top-level packages that own a patch target. tests/test_autoload.py checks this against the
# registry, so a patch for a new package cannot be forgotten here.
TRIGGER_PACKAGES = frozenset({"deepspeed", "openrlhf"})

AUTOLOAD_VAR = "SFTRL_PATCHES_AUTOLOAD"
DISABLE_VAR = "SFTRL_PATCHES_DISABLE"   # same meaning as in sftrl_patches._config
STRICT_VAR = "SFTRL_PATCHES_STRICT"
_OFF = frozenset({"0", "false", "no", "off"})
_ALL = frozenset({"1", "true", "yes", "on", "all", "*"})


def _say(message):
    """One line on stderr, whatever logging's configuration. Never raises."""
    try:
        sys.stderr.write("sftrl_patches: " + str(message).replace("\n", " ") + "\n")
        sys.stderr.flush()
    except Exception:  # no stderr (pythonw), or a closed one
        pass


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
        except Exception as exc:  # never break the program that imports a target...
            if type(exc).__name__ == "PatchError" and \
                    os.environ.get(STRICT_VAR, "").strip().lower() in _ALL:
                raise  # ...unless SFTRL_PATCHES_STRICT=1 asked for problems to be errors
            self.error = f"{type(exc).__name__}: {exc}"
            _say(f"autoload could not arm the patches ({self.error}); this process runs unpatched")
            return None


def installed_trigger():
    for finder in sys.meta_path:
        if type(finder).__name__ == "AutoloadTrigger" and type(finder).__module__ == __name__:
            return finder
    return None


_start_error = None  # why arm() failed, said once (site.py may run the start-up file twice)


def arm():
    """Entry point of sftrl_patches.pth and sftrl_patches.start. Never raises."""
    global _start_error
    try:
        if not switched_off() and installed_trigger() is None:
            sys.meta_path.insert(0, AutoloadTrigger())
    except Exception as exc:  # interpreter start-up must never fail because of us
        if _start_error is None:
            _start_error = f"{type(exc).__name__}: {exc}"
            _say(f"autoload could not start ({_start_error}); this interpreter runs unpatched")
