"""collect() -> a plain-data report. Rendering and exit codes live elsewhere."""
import os
import platform
import sys
from dataclasses import asdict, dataclass, field

from .. import _config, registry
from ..registry import installed_version

SCHEMA = "sftrl-doctor/1"
OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skipped"

_LEVEL_OF_STATE = {
    registry.NOT_INSTALLED: OK, registry.NOT_AFFECTED: OK, registry.PATCHED: OK,
    registry.PATCHABLE: WARN, registry.REVERTED: FAIL, registry.DISABLED: FAIL,
}


@dataclass
class Finding:
    check: str
    level: str
    title: str
    state: str
    summary: str
    distribution: str = None
    installed: str = None
    affected_range: str = None
    fixed_in: str = None
    fingerprint_known: bool = None
    shapes: list = field(default_factory=list)
    details: list = field(default_factory=list)
    remediation: str = ""
    links: list = field(default_factory=list)
    data: dict = None
    conditions: str = ""


def _patch_finding(patch, reg):
    status = reg.status(patch.name)
    level = _LEVEL_OF_STATE.get(status.state, FAIL)
    remediation = ""
    if status.state == registry.DISABLED:
        # Disabled only matters where the bug is present.
        underlying = reg.status(patch.name, ignore_switches=True).state
        if underlying in (registry.NOT_AFFECTED, registry.NOT_INSTALLED):
            level = OK
        else:
            remediation = f"Unset {_config.DISABLE_VAR} (or remove {patch.name} from it). " + patch.remediation
    elif status.state == registry.PATCHABLE:
        remediation = "Patched when the target is imported in a process that imported sftrl_patches."
    elif level == FAIL:
        remediation = patch.remediation
        if patch.advisory and status.state == registry.NO_PATCH:
            level = WARN  # only runs with `conditions` are hit, and the doctor cannot see run flags
    return Finding(
        check=patch.name, level=level, title=patch.title, state=status.state, summary=status.reason,
        distribution=patch.distribution, installed=status.version, affected_range=str(patch.affected),
        fixed_in=patch.fixed_in,
        fingerprint_known=(bool(status.shapes) or status.state == registry.PATCHED) if patch.targets else None,
        shapes=list(status.shapes), details=list(status.details), remediation=remediation,
        links=list(patch.links), conditions=patch.conditions)


def _probe_finding(probe_result):
    from ..probes import case_is_correct
    if probe_result["status"] != "ran":
        level = SKIP if probe_result["status"] == "skipped" else FAIL
        return Finding(check="probe", level=level, title="DeepSpeed numerical probe", state=probe_result["status"],
                       summary=probe_result["reason"], data=probe_result)
    rows, level = [], OK
    for unpatched, patched in zip(probe_result["unpatched"]["results"], probe_result["patched"]["results"]):
        row = {"label": patched["case"].get("label", str(patched["case"])),
               "unpatched": _case_summary(unpatched), "patched": _case_summary(patched),
               "unpatched_correct": case_is_correct(unpatched), "patched_correct": case_is_correct(patched)}
        if not row["patched_correct"]:
            level = FAIL
        rows.append(row)
    broken_here = [r["label"] for r in rows if not r["unpatched_correct"]]
    summary = (f"DeepSpeed {probe_result['patched']['deepspeed']} on {probe_result['patched']['accelerator']}: "
               + (f"wrong without the patches in {', '.join(broken_here)}" if broken_here else
                  "every case correct without the patches"))
    if level == FAIL:
        summary += "; still wrong with the patches in " + ", ".join(r["label"] for r in rows if not r["patched_correct"])
    return Finding(check="probe", level=level, title="DeepSpeed numerical probe", state="ran", summary=summary,
                   data={"cases": rows, "patch_states": probe_result["patched"]["patches"],
                         "seconds": {"unpatched": probe_result["unpatched"]["wall_seconds"],
                                     "patched": probe_result["patched"]["wall_seconds"]}})


def _case_summary(result):
    if "error" in result:
        return {"error": result["error"]}
    return {k: result[k] for k in ("weights", "grad_norm", "reference_grad_norm", "max_param_diff")}


def environment():
    versions = {name: installed_version(name)[0] for name in ("torch", "deepspeed", "openrlhf", "trl",
                                                              "transformers", "accelerate", "llamafactory")}
    return {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "packages": {k: v for k, v in versions.items() if v},
        "switches": {var: os.environ.get(var) for var in (_config.DISABLE_VAR, _config.STRICT_VAR)
                     if os.environ.get(var)},
    }


def collect(reg, patches, checks=None, probe_runner=None):
    """The whole report as a dict. `checks` limits it to named checks; probe_runner() runs the probe."""
    from .. import __version__
    findings = [_patch_finding(p, reg) for p in patches if checks is None or p.name in checks]
    if probe_runner is not None:
        findings.append(_probe_finding(probe_runner()))
    action = any(f.level == FAIL for f in findings)
    return {"schema": SCHEMA, "sftrl_patches": __version__, "environment": environment(),
            "findings": [asdict(f) for f in findings], "action_needed": action}
