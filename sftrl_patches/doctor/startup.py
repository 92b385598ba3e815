"""The `startup` check: is autoload (sftrl_patches.pth / .start) installed, and active here?"""
import os
import site
import sys

PTH_NAME, START_NAME, MODULE_NAME = "sftrl_patches.pth", "sftrl_patches.start", "_sftrl_patches_autoload"

ACTIVE, SWITCHED_OFF, NO_SITE, USER_SITE_OFF, INACTIVE, NOT_INSTALLED = (
    "active", "switched-off", "no-site", "user-site-ignored", "installed-not-active", "not-installed")


def _site_dirs():
    dirs = list(getattr(site, "getsitepackages", lambda: [])())
    user = site.getusersitepackages() if hasattr(site, "getusersitepackages") else None
    return dirs, user


def installed_files(name):
    """Every copy of `name` in a site dir or a directory on sys.path (de-duplicated)."""
    dirs, user = _site_dirs()
    found = []
    for directory in dict.fromkeys(dirs + [user] + [p for p in sys.path if p]):
        if directory and os.path.isfile(os.path.join(directory, name)):
            path = os.path.realpath(os.path.join(directory, name))
            if path not in found:
                found.append(path)
    return found


def autoload_module():
    """The autoload module as this interpreter has it: imported at start-up, or importable now."""
    if MODULE_NAME in sys.modules:
        return sys.modules[MODULE_NAME]
    try:
        import importlib
        return importlib.import_module(MODULE_NAME)  # stdlib only and does nothing on import
    except ImportError:
        return None


def autoload_state():
    """(state, reason, details) for this interpreter."""
    pth_files = installed_files(PTH_NAME)
    module = autoload_module()
    flags = sys.flags
    details = [f"start-up file: {path}" for path in pth_files]
    details += [f"PEP 829 file (used instead of the .pth line on Python >= 3.15): {p}"
                for p in installed_files(START_NAME)]
    details.append("interpreter flags: " + ", ".join(f"{flag} {'on' if on else 'off'}" for flag, on in (
        ("-S (no site)", flags.no_site), ("-I (isolated)", flags.isolated), ("-s (no user site)", flags.no_user_site))))
    trigger = module.installed_trigger() if module is not None and hasattr(module, "installed_trigger") else None
    if trigger is not None and getattr(trigger, "error", None):
        details.append(f"autoload fired but could not arm: {trigger.error}")
    if flags.no_site:  # checked first: under -S even a venv's site-packages is unknown here
        return NO_SITE, ("this interpreter runs with -S, so no site-packages start-up file (ours included) is read "
                         "here; interpreters started without -S still arm the patches"), details
    if not pth_files or module is None:
        return NOT_INSTALLED, "no sftrl_patches.pth start-up file in this environment's site-packages", details
    off = module.switched_off()
    if off:
        return SWITCHED_OFF, f"autoload is switched off by {off}", details
    if trigger is not None:
        return ACTIVE, "every interpreter of this environment arms the patches at start-up", details
    _, user = _site_dirs()
    if user and all(os.path.dirname(p) == os.path.realpath(user) for p in pth_files) and \
            (flags.no_user_site or flags.isolated):
        return USER_SITE_OFF, "installed in the user site-packages, which -s / -I switch off", details
    return INACTIVE, ("the start-up file exists but did not run in this interpreter (is it in a folder that is "
                      "not a site dir, such as a `pip install --target` folder?)"), details
