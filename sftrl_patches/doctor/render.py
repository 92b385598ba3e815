"""Render a doctor report: a table for people, JSON for programs."""
import json

MARKS = {"ok": "✓", "warn": "!", "fail": "✗", "skipped": "-"}


def to_json(report):
    return json.dumps(report, indent=2, sort_keys=False)


def to_text(report, verbose=False):
    """One line per check (as `flutter doctor` does); a check that needs action, the probe's table,
    and with verbose=True every check, get their full text."""
    env = report["environment"]
    packages = ", ".join(f"{k} {v}" for k, v in env["packages"].items()) or "none of the known targets"
    lines = [f"sftrl-doctor {report['sftrl_patches']}  (Python {env['python']}; {packages})"]
    if env["switches"]:
        lines.append("switches: " + ", ".join(f"{k}={v}" for k, v in env["switches"].items()))
    width = max([0] + [len(f["check"]) for f in report["findings"]]) + 1
    for finding in report["findings"]:
        mark = MARKS.get(finding["level"], "?")
        expand = verbose or finding["level"] != "ok" or finding["check"] == "probe"
        if not expand:
            lines.append(f"[{mark}] {finding['check'] + ':':<{width}} {finding['state']:<14} {finding['title']}")
            continue
        lines.append("")
        lines.append(f"[{mark}] {finding['check']}: {finding['state']}")
        lines.append(f"    {finding['title']}")
        if finding.get("installed") or finding.get("distribution"):
            lines.append(f"    {finding['distribution']} {finding.get('installed') or '(not installed)'}; "
                         f"affected {finding['affected_range']}; fixed in {finding.get('fixed_in') or 'no release yet'}")
        lines.append(f"    {finding['summary']}")
        if finding.get("conditions") and finding["state"] not in ("not-affected", "not-installed"):
            lines.append(f"    when: {finding['conditions']}")
            if finding.get("effect"):
                lines.append(f"    unpatched: {finding['effect']}")
        if finding.get("fingerprint_known") is not None and finding["state"] not in ("not-affected", "not-installed"):
            lines.append(f"    source fingerprint known: {'yes' if finding['fingerprint_known'] else 'no'}"
                         + (f" ({'; '.join(finding['shapes'])})" if finding["shapes"] else ""))
        for detail in finding.get("details") or ():
            lines.append(f"    - {detail}")
        if finding["check"] == "probe" and finding["state"] == "ran":
            lines.extend(_probe_table(finding["data"]))
        if finding.get("remediation"):
            lines.append(f"    fix: {finding['remediation']}")
        for link in finding.get("links") or ():
            lines.append(f"    see: {link}")
        lines.append("")
    if not verbose:
        lines.append("(sftrl-doctor -v prints every check in full)")
    if lines[-1]:
        lines.append("")
    lines.append(summary_line(report))
    return "\n".join(lines)


def summary_line(report):
    """The last line. Only a failed check (`✗`) is action for this package and exit 1; a warning (`!`)
    is a check whose outcome depends on how a run is launched or calls the library, which only the
    caller can see, so it is counted, not hidden behind "nothing to do"."""
    levels = [finding["level"] for finding in report["findings"]]
    failed, warned = levels.count("fail"), levels.count("warn")
    warnings = f"{warned} warning(s) above (!)"
    if report["action_needed"]:
        return f"action needed: {failed} check(s) above failed (✗)" + (f"; also {warnings}" if warned else "")
    if warned:
        return (f"nothing to do for this package; {warnings} depend on how your runs are launched or call the "
                "libraries: yours to check")
    return "nothing to do"


def _probe_table(data):
    width = max([len("case")] + [len(case["label"]) for case in data["cases"]]) + 1
    rows = [f"    {'case':<{width}}| {'without patches':<45}| with patches",
            "    " + "-" * width + "+" + "-" * 46 + "+" + "-" * 46]
    for case in data["cases"]:
        rows.append(f"    {case['label']:<{width}}| {_cell(case['unpatched'], case['unpatched_correct']):<45}| "
                    f"{_cell(case['patched'], case['patched_correct'])}")
    rows.append("    cell: the worst optimizer step of each case: micro-batch weights (1 = counted); grad norm / "
                "reference; max param diff; leak = share of the update no micro-batch of that step explains")
    return rows


def _cell(summary, correct):
    if "error" in summary:
        return "error: " + summary["error"][:38]
    weights = "[" + ", ".join(f"{w:g}" for w in (round(w, 2) + 0.0 for w in summary["weights"])) + "]"
    norm = "n/a" if summary["grad_norm"] is None else f"{summary['grad_norm']:.3f}"
    mark = "✓" if correct else "✗"
    leak = summary.get("residual") or 0.0
    return (f"{mark} {weights} {norm}/{summary['reference_grad_norm']:.3f} {summary['max_param_diff']:.1e}"
            + (f" leak {leak:.2f}" if leak > 0.01 else ""))
