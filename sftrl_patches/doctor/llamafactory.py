"""The Llama-Factory row: which DeepSpeed releases the installed Llama-Factory allows, against the
DeepSpeed bug windows. Information: the DeepSpeed rows say whether the installed release is patched.

The caps are read from Llama-Factory's own packaging at each tag (setup.py extras up to 0.9.3,
pyproject.toml from 0.9.4): its wheels do not carry the `deepspeed` extra's bound.
"""
from .._version import Version, parse

# (first release, last release) -> the highest DeepSpeed that release's `deepspeed` extra allows
DEEPSPEED_CAPS = ((("0.9.0", "0.9.1"), "0.14.4"), (("0.9.2", "0.9.2"), "0.16.4"), (("0.9.3", "0.9.4"), "0.16.9"),
                  (("0.9.5", "0.9.5"), "0.18.4"))
LOWEST = "0.10.0"  # every release's lower bound
VERIFIED_THROUGH = "0.9.5"


def deepspeed_cap(version_text):
    version = parse(version_text) if version_text else None
    if version is None:
        return None
    for (first, last), cap in DEEPSPEED_CAPS:
        if Version(first) <= version <= Version(last):
            return cap
    return None


def windows_inside(cap, patches, advisory=False):
    """[(patch name, 'low-cap')] for each DeepSpeed record whose affected range overlaps [LOWEST, cap]:
    the records that always apply, or (advisory=True) those that need a run-time option to apply."""
    found = []
    top = Version(cap)
    for patch in patches:
        if patch.distribution != "deepspeed" or bool(patch.advisory) != advisory:
            continue
        low = patch.affected.low or Version(LOWEST)
        low = max(low, Version(LOWEST))
        if low > top:
            continue
        cut = patch.affected.high is None or patch.affected.high > top
        found.append((patch.name, f">={low},<={top}" if cut else f">={low},<{patch.affected.high}"))
    return found


def row(installed, patches):
    """(state, summary, details) for the installed Llama-Factory."""
    if installed is None:
        return "not-installed", "llamafactory is not installed", []
    cap = deepspeed_cap(installed)
    if cap is None:
        return "unknown-release", (f"llamafactory {installed}: its DeepSpeed bound is not in this package's table "
                                   f"(checked 0.9.0-{VERIFIED_THROUGH})"), []
    inside = windows_inside(cap, patches)
    summary = f"llamafactory {installed} allows deepspeed>={LOWEST},<={cap}"
    for lead, windows in (("inside the windows of", inside),
                          ("with some run-time options, of", windows_inside(cap, patches, advisory=True))):
        if windows:
            summary += f"; {lead} " + ", ".join(f"{name} ({span})" for name, span in windows)
    details = ["the DeepSpeed rows above say whether the installed release is affected and patched",
               "multimodal SFT: see llamafactory-multimodal-loss-7448"]
    return "info", summary, details
