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


def strict(environ=None):
    return (environ if environ is not None else os.environ).get(STRICT_VAR, "").strip().lower() in _TRUE
