"""Environment switches. Patches are on by default; variables only switch them off
(multi-node launchers do not forward arbitrary variables)."""
import os

DISABLE_VAR = "SFTRL_PATCHES_DISABLE"
STRICT_VAR = "SFTRL_PATCHES_STRICT"
# Read by the start-up module (autoload/_sftrl_patches_autoload.py), which cannot import this one.
AUTOLOAD_VAR = "SFTRL_PATCHES_AUTOLOAD"
# The run-time verdict line (sftrl_patches/runtime_report.py): off, rank0 (default) or all; and a JSON-lines file.
VERDICT_VAR = "SFTRL_PATCHES_VERDICT"
REPORT_VAR = "SFTRL_PATCHES_REPORT"
SWITCH_VARS = (DISABLE_VAR, STRICT_VAR, AUTOLOAD_VAR, VERDICT_VAR, REPORT_VAR)
_TRUE = {"1", "true", "yes", "on", "all", "*"}


def disabled_names(environ=None):
    """None when nothing is disabled, "all" when everything is, else a frozenset of patch names."""
    value = (environ if environ is not None else os.environ).get(DISABLE_VAR, "").strip()
    if not value or value.lower() in {"0", "false", "no", "off"}:
        return None
    if value.lower() in _TRUE:
        return "all"
    return frozenset(part.strip() for part in value.split(",") if part.strip())


def is_disabled(name, environ=None):
    disabled = disabled_names(environ)
    return disabled == "all" or (disabled is not None and name in disabled)


def unknown_disabled(known, environ=None):
    """Names in SFTRL_PATCHES_DISABLE that are no patch's name (sorted); empty when none, or for "all"."""
    disabled = disabled_names(environ)
    if disabled is None or disabled == "all":
        return []
    return sorted(disabled - set(known))


def unknown_disabled_message(known, environ=None):
    """The warning for a SFTRL_PATCHES_DISABLE that names unknown patches, or None when it names none."""
    unknown = unknown_disabled(known, environ)
    if not unknown:
        return None
    import difflib  # only on this path: a typo is the usual cause, say which name was meant
    named = []
    for name in unknown:
        close = difflib.get_close_matches(name, list(known), n=1)
        named.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (f"sftrl_patches: {DISABLE_VAR} names unknown patch{'es' if len(unknown) > 1 else ''} "
            f"{', '.join(named)}, which switch{'' if len(unknown) > 1 else 'es'} nothing off; known patches: "
            f"{', '.join(sorted(known))} (or 1/all for every patch)")


def observer_off(name, environ=None):
    """Why a run-time report hook is off ('' when on): named in SFTRL_PATCHES_DISABLE, or nothing to report to.

    SFTRL_PATCHES_DISABLE=1 switches the fixes off, not the line that says a run is unpatched.
    """
    environ = environ if environ is not None else os.environ
    disabled = disabled_names(environ)
    if disabled is not None and disabled != "all" and name in disabled:
        return DISABLE_VAR
    if verdict_silenced(environ) and not environ.get(REPORT_VAR):
        return f"{VERDICT_VAR}={environ[VERDICT_VAR]}"
    return ""


def verdict_silenced(environ=None):
    """SFTRL_PATCHES_VERDICT switches the run-time line off (the JSON-lines file may still be asked for)."""
    environ = environ if environ is not None else os.environ
    return environ.get(VERDICT_VAR, "").strip().lower() in ("off", "0", "false", "no")


def strict(environ=None):
    return (environ if environ is not None else os.environ).get(STRICT_VAR, "").strip().lower() in _TRUE
