"""collect() -> a plain-data report. Rendering and exit codes live elsewhere."""
import os
import platform
import sys
from dataclasses import asdict, dataclass, field

from .. import _config, registry
from . import launchers, llamafactory, ray_check, startup
from ..registry import installed_versions
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
    effect: str = ""


def _patch_finding(patch, reg, autoload_active=False):
    status = reg.status(patch.name)
    level = _LEVEL_OF_STATE.get(status.state, FAIL)
    remediation, details = "", list(status.details)
    if patch.observer:
        # A report hook: off by choice, or waiting for its target, needs nobody to act.
        level = OK if status.state in (registry.DISABLED, registry.PATCHABLE, registry.PATCHED,
                                       registry.NOT_INSTALLED, registry.REVERTED) else WARN
        remediation = patch.remediation if level != OK else ""
    elif status.state == registry.DISABLED:
        # Disabled only matters where the bug is present.
        underlying = reg.status(patch.name, ignore_switches=True).state
        if underlying in (registry.NOT_AFFECTED, registry.NOT_INSTALLED):
            level = OK
        else:
            remediation = f"Unset {_config.DISABLE_VAR} (or remove {patch.name} from it). " + patch.remediation
    elif status.state == registry.PATCHABLE:
        if autoload_active:
            level = OK  # every interpreter of this environment applies it when the target is imported
            details.append("autoload is active: applied in every process of this environment that imports the target")
        else:
            remediation = ("Patched only in processes that import sftrl_patches or run under "
                           "`python -m sftrl_patches.launch`: autoload is not active (see the startup check).")
    elif level == FAIL:
        remediation = patch.remediation
        if patch.advisory and status.state == registry.NO_PATCH:
            level = WARN  # only runs with `conditions` are hit, and the doctor cannot see run flags
    return Finding(
        check=patch.name, level=level, title=patch.title, state=status.state, summary=status.reason,
        distribution=patch.distribution, installed=status.version, affected_range=str(patch.affected),
        fixed_in=patch.fixed_in,
        fingerprint_known=(bool(status.shapes) or status.state == registry.PATCHED) if patch.targets else None,
        shapes=list(status.shapes), details=details, remediation=remediation,
        links=list(patch.links), conditions=patch.conditions, effect=patch.effect)


def _startup_finding(autoload, patch_findings):
    state, reason, details = autoload
    level, remediation = OK, ""
    if state != startup.ACTIVE:
        level = WARN
        remediation = ("Meanwhile, start each job as `python -m sftrl_patches.launch MODULE ...` (also behind "
                       "deepspeed --module, torchrun -m, accelerate launch -m).")
    if state in (startup.NOT_INSTALLED, startup.INACTIVE):
        remediation = ("Reinstall with pip (`pip install --force-reinstall --no-deps sftrl-patches`): copying the "
                       "package or `pip install --target` does not install the start-up files. " + remediation)
        if any(f.state == registry.PATCHABLE for f in patch_findings):
            level = FAIL  # an affected library is here and processes we do not start would run it unpatched
    elif state == startup.SWITCHED_OFF:
        remediation = "Unset that variable to switch autoload back on. " + remediation
    return Finding(check="startup", level=level,
                   title="Autoload: every interpreter of this environment arms the patches", state=state,
                   summary=reason, details=details, remediation=remediation)


def _launchers_finding(autoload_active, environ=None):
    environ = os.environ if environ is None else environ
    details = [("deepspeed, torchrun and accelerate ranks on this node are interpreters of this environment: "
                "autoload arms them") if autoload_active else
               ("ranks started by deepspeed, torchrun or accelerate are NOT armed unless they run "
                "`-m sftrl_patches.launch MODULE` (autoload is not active)")]
    problems = []
    ds_file = registry._module_file("deepspeed", "deepspeed.launcher.runner")
    if ds_file:
        prefixes = launchers.deepspeed_export_prefixes(ds_file)
        env_files = launchers.deepspeed_env_files(environ)
        details.append("DeepSpeed multi-node runner forwards variables starting with "
                       + (", ".join(prefixes) if prefixes is not None else "(could not read the list)")
                       + ", plus the lines of " + (", ".join(env_files) if env_files else
                                                   ".deepspeed_env (none in the home or current folder)"))
        problems = launchers.remote_switch_problems(environ, prefixes, env_files)
    level = WARN if problems or not autoload_active else OK
    summary = (f"{len(problems)} switch(es) would differ on remote nodes" if problems else
               "switches are the same on every node (patches are on by default; variables only switch them off)")
    remediation = "" if autoload_active else "Install sftrl-patches with pip on every node so autoload arms each rank."
    return Finding(check="launchers", level=level, title="Launcher ranks and multi-node switches", state=
                   "mismatch" if problems else ("ok" if autoload_active else "not-armed"), summary=summary,
                   details=details + problems, remediation=remediation)


def _llamafactory_finding(patches):
    installed = installed_version("llamafactory")[0]
    state, summary, details = llamafactory.row(installed, patches)
    # Not a patch row: no distribution/affected range to print, the version is in the summary and data.
    return Finding(check="llamafactory", level=OK, title="Llama-Factory: the DeepSpeed releases it allows, against "
                   "the bug windows", state=state, summary=summary, details=details,
                   data={"installed": installed, "deepspeed_cap": llamafactory.deepspeed_cap(installed)})


def _ray_finding(ray_result):
    level, state, summary, details, remediation = ray_check.summarize(ray_result)
    return Finding(check="ray", level=level, title="Ray workers on every node arm the patches", state=state,
                   summary=summary, details=details, remediation=remediation, data=ray_result)


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
            # a bug this package documents without a patch is the doctor's row to explain, not a probe failure
            known = patched["case"].get("no_patch")
            row["no_patch"] = known
            level = max(level, WARN if known else FAIL, key=(OK, WARN, FAIL).index)
        rows.append(row)
    broken_here = [r["label"] for r in rows if not r["unpatched_correct"]]
    summary = (f"DeepSpeed {probe_result['patched']['deepspeed']} on {probe_result['patched']['accelerator']}: "
               + (f"wrong without the patches in {', '.join(broken_here)}" if broken_here else
                  "every case correct without the patches"))
    if level == FAIL:
        summary += "; still wrong with the patches in " + ", ".join(r["label"] for r in rows if not r["patched_correct"]
                                                                   and not r.get("no_patch"))
    unpatched_here = [f"{r['label']} (no patch: see {r['no_patch']})" for r in rows if r.get("no_patch")]
    if unpatched_here:
        summary += "; known and not patched: " + ", ".join(unpatched_here)
    return Finding(check="probe", level=level, title="DeepSpeed numerical probe", state="ran", summary=summary,
                   data={"cases": rows, "patch_states": probe_result["patched"]["patches"],
                         "seconds": {"unpatched": probe_result["unpatched"]["wall_seconds"],
                                     "patched": probe_result["patched"]["wall_seconds"]}})


def _case_summary(result):
    if "error" in result:
        return {"error": result["error"]}
    summary = {k: result[k] for k in ("weights", "grad_norm", "reference_grad_norm", "max_param_diff")}
    summary["residual"] = max((step.get("residual", 0.0) for step in result.get("steps", [result])), default=0.0)
    summary["steps"] = len(result.get("steps", [result]))
    return summary


def environment():
    return {
        "python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform(),
        "packages": installed_versions(),
        "switches": {var: os.environ.get(var) for var in _config.SWITCH_VARS
                     if os.environ.get(var)},
    }


def collect(reg, patches, checks=None, probe_runner=None, ray_runner=None):
    """The whole report as a dict. `checks` limits it to named checks; probe_runner() runs the
    probe and ray_runner() the Ray check (both only when given)."""
    patches = list(patches)
    from .. import __version__
    autoload = startup.autoload_state()  # read once: the patch rows, startup and launchers all use it
    active = autoload[0] == startup.ACTIVE
    all_patch_findings = [_patch_finding(p, reg, active) for p in patches]
    findings = [f for f in all_patch_findings if checks is None or f.check in checks]
    if checks is None or "startup" in checks:
        findings.append(_startup_finding(autoload, all_patch_findings))
    if checks is None or "launchers" in checks:
        findings.append(_launchers_finding(active))
    if checks is None or "llamafactory" in checks:
        findings.append(_llamafactory_finding([p for p in patches if not p.observer]))
    if ray_runner is not None:
        findings.append(_ray_finding(ray_runner()))
    if probe_runner is not None:
        findings.append(_probe_finding(probe_runner()))
    action = any(f.level == FAIL for f in findings)
    return {"schema": SCHEMA, "sftrl_patches": __version__, "environment": environment(),
            "findings": [asdict(f) for f in findings], "action_needed": action}
