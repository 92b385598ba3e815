"""One finding per registry record: hit, not-hit or unknown, the facts that decided, the effect, the fix.

Shared by the audit (sftrl_patches.audit) and the run-time line (sftrl_patches.runtime_report).
"""
import re
import string

from ._version import parse
from .conditions import FIELDS
from .registry import NOT_AFFECTED, UNVERIFIED, version_verdict

HIT, NOT_HIT, UNKNOWN = "hit", "not-hit", "unknown"
_USES = {"deepspeed": "uses_deepspeed"}
_RANGE = re.compile(r"^(?P<low>[0-9][^-]*)(?:-(?P<high>[0-9].*))?$")
_MISSING_TEXT = {
    "micro_batches_per_step": "micro-batches per optimizer step (data-dependent with dynamic batching; "
                              "give the DeepSpeed config or batch flags otherwise)",
    "accumulation": "how the training loop accumulates: DeepSpeed's GA, several backward() with the boundary "
                    "marked, or without (a plain DeepSpeed script: read its loop)",
    "data_parallel_size": "the number of data-parallel ranks (--world-size, or the launcher's process count)",
    "trainer": "which training loop runs (give the launch command after --)",
    "pipeline_parallel": "whether the model is a DeepSpeed PipelineModule",
    "multimodal": "whether the model is multimodal (Llama-Factory: a media setting, or a text-only template)",
}


def _patched_release(patch, version):
    """True when one of the patch's known source shapes covers `version`: the package can fix this release."""
    wrapped = [t for t in patch.targets if not t.is_guard]
    if not wrapped or version is None:
        return False
    for target in wrapped:
        covered = False
        for label in target.fingerprints.values():
            match = _RANGE.match(label.split()[0] if label.strip() else "")
            if not match:
                continue
            low, high = parse(match.group("low")), parse(match.group("high") or match.group("low"))
            if low is not None and high is not None and low <= version <= high:
                covered = True
        if not covered:
            return False
    return True


class _Blanks(dict):
    def __missing__(self, key):
        return "N"


def _effect(patch, run):
    if callable(patch.impact):
        return patch.impact(run)
    if not patch.impact:
        return patch.title
    fields = {f for _, f, _, _ in string.Formatter().parse(patch.impact) if f}
    return patch.impact.format_map(_Blanks({f: run[f] for f in fields if run.get(f) is not None}))


def _missing_text(field, run):
    if field.startswith("version:"):
        return f"the {field.split(':', 1)[1]} version (--versions or --requirements)"
    text = _MISSING_TEXT.get(field, FIELDS.get(field, field))
    if field in run.get("unclear", {}):
        return f"{text} (withheld: see `not understood`)"
    return text


def finding(patch, run):
    versions = run.get("versions", {})
    dist = patch.distribution
    result = {"check": patch.name, "title": patch.title, "verdict": UNKNOWN, "because": [], "effect": "",
              "missing": [], "remediation": ""}
    if dist in _USES and run.get(_USES[dist]) is False:
        result.update(verdict=NOT_HIT, because=[f"the run does not use {dist}"])
        return result
    version_text = versions.get(dist)
    version_known = True
    if version_text is None:
        version_known = False
        result["missing"].append(_missing_text(f"version:{dist}", run))
    else:
        state, reason = version_verdict(patch, version_text)
        if state == NOT_AFFECTED:
            result.update(verdict=NOT_HIT, because=[f"{dist} {reason}"])
            return result
        if state == UNVERIFIED:
            version_known = False
            result["missing"].append(f"whether {dist} {version_text} still has it ({reason})")
        else:
            result["because"].append(f"{dist} {reason}")
    holds, because, missing = patch.when.evaluate(run) if patch.when is not None else (True, [], [])
    if holds is False:
        result.update(verdict=NOT_HIT, because=because, missing=[])
        return result
    result["because"] += because
    result["missing"] += [_missing_text(field, run) for field in missing]
    result["verdict"] = HIT if holds and version_known else UNKNOWN
    result["effect"] = _effect(patch, run)
    _coverage(result, patch, run, parse(version_text) if version_text else None)
    return result


def _coverage(result, patch, run, version):
    """Whether this package's patch fixes this run: `patch_covers` True, False or None (not known), and the fix text."""
    if not _patched_release(patch, version):
        result["patch_covers"] = False
        result["remediation"] = patch.remediation
        return
    covers, because, missing = patch.covers.evaluate(run) if patch.covers is not None else (True, [], [])
    result["patch_covers"] = covers
    if covers:
        result["remediation"] = f"install sftrl-patches (its {patch.name} patch covers this release); or: {patch.remediation}"
    elif covers is False:
        result["not_covered"] = [f"{fact._label()} {_shown(run[fact.field])}" for fact in _facts(patch.covers)
                                 if fact.evaluate(run)[0] is False]
        result["remediation"] = (f"NOT fixed by sftrl-patches: its patch stands aside for "
                                 f"{' and '.join(result['not_covered'])} (it covers runs with {patch.covers}); "
                                 f"{patch.remediation}")
    else:
        result["remediation"] = (f"sftrl-patches fixes this release only where {patch.covers} (not known here: "
                                 f"{', '.join(_missing_text(f, run) for f in missing)}); or: {patch.remediation}")


def _facts(predicate):
    parts = getattr(predicate, "parts", None)
    return [fact for part in parts for fact in _facts(part)] if parts is not None else [predicate]


def _shown(value):
    return ("yes" if value else "no") if isinstance(value, bool) else str(value)


def audit(patches, run):
    return [finding(patch, run) for patch in patches]
