"""sftrl-doctor audit --probe: prove the audited configuration on the DeepSpeed installed here.

One probe case is built from the audit's run description (`probe_case`, a pure function): the run's
ZeRO stage, optimizer offload, precision, grad_accum_dtype, optimizer kind, its way of accumulating, a
gradient accumulation kept small enough to stay quick, 3 optimizer steps. The probe
(sftrl_patches.probes) runs it twice in child interpreters, the patches off and on, on the DeepSpeed
this interpreter imports (CUDA and NCCL when there are GPUs, else CPU and gloo), and reports which
micro-batches of every step reached the optimizer.

What the probe needs and the run description does not say is refused (ProbeRefused, exit 2), naming
what is missing and how to give it: never a default in its place. What the probe does differently
from the run (a smaller GA, fewer ranks, nvme probed as cpu, SGD for a client optimizer) is said in
the notes.

Nothing here imports torch or DeepSpeed; the children do.
"""
import subprocess
import sys

MAX_GA = 4            # GA 3-4 shows the known first-and-last drop; GA 2 is exact by accident for it
STEPS = 3             # a one-step probe cannot see a leak across steps
CPU_RANKS = 2         # gloo ranks on CPU, at most
# On CPU these releases crash in step() with 2 gloo ranks (upstream #7828): probe them with 1.
GLOO_CRASH = ("0.18.7", "0.18.9")

MODES = {"engine": "ga", "boundary": "multi_backward", "manual": "no_boundary"}
MODE_TEXT = {"ga": "DeepSpeed counts micro-batches (gradient_accumulation_steps)",
             "multi_backward": "several backward() per step(), boundary set",
             "no_boundary": "several backward() per step(), no boundary"}

_SOURCES = "the run's DeepSpeed JSON (--config ds.json), its trainer's config file (--config), or its launch command " \
           "after `--`"
HOW_TO_GIVE = {
    "zero_stage": ("the ZeRO stage", _SOURCES),
    "offload_optimizer": ("the optimizer offload device", _SOURCES),
    "precision": ("the precision (fp32, bf16 or fp16)", _SOURCES + " (bf16/fp16 sections or flags)"),
    "grad_accum_dtype": ("data_types.grad_accum_dtype", "the run's DeepSpeed JSON (--config ds.json)"),
    "accumulation": ("how the training loop accumulates",
                     "the launch command of an entry point the audit knows (OpenRLHF, `trl`, `llamafactory-cli`), "
                     "or for your own script --trainer transformers|trl, or --trainer deepspeed --accumulation "
                     "engine|boundary|manual"),
    "gradient_accumulation_steps": ("gradient_accumulation_steps",
                                    "the run's DeepSpeed JSON (--config ds.json: gradient_accumulation_steps, or "
                                    "train_batch_size with --world-size N) or its trainer's flags"),
}


class ProbeRefused(ValueError):
    """The run description lacks what the probe needs; `missing` lists one line per field."""

    def __init__(self, missing):
        self.missing = list(missing)
        super().__init__("; ".join(self.missing))


def _missing(run, field):
    what, how = HOW_TO_GIVE[field]
    why = (run.get("unclear") or {}).get(field)
    return f"{what} is not known" + (f" (withheld: {why})" if why else "") + f": give {how}"


def _capped(count):
    """The run's count of micro-batches per step, kept quick: 1 and 2 as they are, above 2 at most MAX_GA."""
    return count if count <= 2 else min(count, MAX_GA)


def probe_case(run, optimizer=None):
    """(case dict for sftrl_patches.probes, [notes]) from an audit run description.

    optimizer: "deepspeed" when the run's DeepSpeed config has an `optimizer` block (DeepSpeed builds its own),
    else None or "client" (the HF Trainer, TRL and OpenRLHF pass their own). Raises ProbeRefused naming every
    field the probe needs that the description does not give.
    """
    notes = []
    if run.get("uses_deepspeed") is False:
        raise ProbeRefused(["the run does not use DeepSpeed (no DeepSpeed config or launcher given): the probe proves "
                            "DeepSpeed's accumulation; give the run's DeepSpeed JSON (--config ds.json) if it has one"])
    if run.get("pipeline_parallel") is True:
        raise ProbeRefused(["the run uses pipeline parallelism: DeepSpeed's pipeline engine accumulates on its own "
                            "schedule, which the probe does not reproduce"])
    needed = ["zero_stage", "offload_optimizer", "precision", "accumulation"]
    if "grad_accum_dtype" in (run.get("unclear") or {}):
        needed.append("grad_accum_dtype")
    if run.get("accumulation") == "engine":
        needed.append("gradient_accumulation_steps")
    missing = [_missing(run, field) for field in needed if run.get(field) is None]
    if missing:
        raise ProbeRefused(missing)

    case = {"stage": int(run["zero_stage"]), "offload": run["offload_optimizer"] != "none",
            "dtype": run["precision"], "mode": MODES[run["accumulation"]], "steps": STEPS}
    if run["offload_optimizer"] == "nvme":
        notes.append("offload_optimizer nvme is probed as cpu (the probe has no NVMe swap)")

    ga = run.get("gradient_accumulation_steps")
    if case["mode"] == "ga":
        case["ga"] = _capped(int(ga))
        if case["ga"] != ga:
            notes.append(f"GA {ga} is probed as GA {case['ga']} to stay quick (not 2: at GA 2 the first and the last "
                         "micro-batch are all of them, which hides the known drop)")
        elif ga == 2:
            notes.append("GA 2, as the run: the known first-and-last drop cannot show at GA 2 (the first and the last "
                         "micro-batch are all of them)")
        elif ga == 1:
            notes.append("GA 1, as the run: one micro-batch per step, nothing to drop within a step")
    else:
        count = run.get("micro_batches_per_step")
        if count:
            case["ga"] = _capped(int(count))
            if case["ga"] != count:
                notes.append(f"{count} backward() per step are probed as {case['ga']} to stay quick")
        else:
            case["ga"] = MAX_GA
            why = ("data-dependent with dynamic batching" if run.get("dynamic_batch")
                   else "your loop decides it; the audit cannot read it")
            notes.append(f"backward() calls per step: not a fixed number ({why}); probed with {MAX_GA}")
        if ga and ga > 1:
            notes.append(f"the run's DeepSpeed GA is {ga}; the probe's {case['mode']} mode runs DeepSpeed with GA 1 "
                         f"and {case['ga']} backward() per step()")

    accum = run.get("grad_accum_dtype")
    source = (run.get("sources") or {}).get("grad_accum_dtype", "")
    if accum and not str(source).startswith("DeepSpeed's default"):
        case["grad_accum_dtype"] = accum  # set by the run; DeepSpeed's default (unset) stays unset

    if str(run.get("trainer", "")).startswith("openrlhf"):
        optimizer = "client"  # OpenRLHF writes its own DeepSpeed config and passes its own optimizer
    if optimizer != "deepspeed" and run.get("fused_adam") and _wrapper_follows_the_optimizer(case, run):
        optimizer = "deepspeed"
        notes.append("the run's optimizer is DeepSpeed's FusedAdam, which decides the wrapper DeepSpeed builds here "
                     "(FP16_Optimizer, not FP16_UnfusedOptimizer): probed as DeepSpeed's Adam, which is FusedAdam")
    if optimizer == "deepspeed":
        case["optimizer"] = "deepspeed_adam"
        notes.append("DeepSpeed's own optimizer (the config's `optimizer` block) is probed as DeepSpeed's Adam against "
                     "torch Adam: no micro-batch weights, the largest parameter difference per step instead"
                     + ("; with offload DeepSpeed JIT-builds its CPU Adam the first time (a minute or more)"
                        if case["offload"] else ""))
    else:
        notes.append("the run's own optimizer is probed as torch SGD (linear in the gradient, so each micro-batch's "
                     "weight in the update can be read off)")
    scale = run.get("fp16_loss_scale")
    if case["dtype"] == "fp16" and scale == "dynamic":
        case["loss_scale"] = "dynamic"
        notes.append("fp16 with a dynamic loss scale, as the run: probed from 2**8 (DeepSpeed's default starts at "
                     "2**16; a wrong scale shows as every weight 1/256)")
    elif case["dtype"] == "fp16" and isinstance(scale, (int, float)) and not isinstance(scale, bool):
        if scale != 1:
            case["loss_scale"] = float(scale)  # as the run: a scale never applied shows as every weight 1/scale
    elif case["dtype"] == "fp16":
        notes.append("fp16 is probed with a static loss scale of 1 (no skipped steps); the run's loss scaling is not "
                     "reproduced")
    if run.get("immediate_grad_update"):
        notes.append("bf16.immediate_grad_update true is not reproduced by the probe (it runs DeepSpeed's default)")
    case["label"] = case_label(case)
    return case, notes


def _wrapper_follows_the_optimizer(case, run):
    """Where DeepSpeed picks its fp16 wrapper by the optimizer's class (FusedAdam or not): ZeRO-0 in 16 bits, and
    bf16 + fp32 accumulation at ZeRO-1 without offload, which builds those wrappers on 0.17.6-0.18.4 (#7788)."""
    if case["dtype"] not in ("bf16", "fp16"):
        return False
    return case["stage"] == 0 or (case["stage"] == 1 and not case["offload"] and case["dtype"] == "bf16"
                                  and run.get("grad_accum_dtype") == "fp32")


def case_label(case):
    parts = [f"ZeRO-{case['stage']}", "offload cpu" if case["offload"] else "no offload", case["dtype"]]
    if case["mode"] == "ga":
        parts.append(f"GA {case['ga']}")
    else:
        boundary = "boundary set" if case["mode"] == "multi_backward" else "no boundary"
        parts.append(f"GA 1, {case['ga']}x backward(), {boundary}")
    if case.get("grad_accum_dtype"):
        parts.append(f"grad_accum_dtype {case['grad_accum_dtype']}")
    if case.get("loss_scale") == "dynamic":
        parts.append("dynamic loss scale")
    elif case.get("loss_scale"):
        parts.append(f"loss scale {case['loss_scale']:g}")
    if case.get("optimizer") == "deepspeed_adam":
        parts.append("DeepSpeed Adam")
    return ", ".join(parts)


def probe_ranks(run, devices, deepspeed_version):
    """(ranks, [notes]): up to the run's data-parallel ranks, at most the local CUDA devices (`devices` > 0), else at
    most CPU_RANKS gloo ranks on CPU; 1 on CPU for the releases that crash there with 2 ranks."""
    from .._version import parse
    dp = run.get("data_parallel_size")
    if not dp:
        return 1, ["data-parallel ranks not known (give --world-size N or the launch command): probed with 1 rank; "
                   "a bug that needs several ranks would not show"]
    limit, where = (devices, f"{devices} local GPU(s)") if devices else (CPU_RANKS, f"at most {CPU_RANKS} on CPU")
    ranks = min(int(dp), limit)
    notes = [f"the run has {dp} data-parallel ranks; probed with {ranks} ({where})"] if ranks != dp else []
    version = parse(deepspeed_version) if deepspeed_version else None
    low, high = (parse(v) for v in GLOO_CRASH)
    if not devices and ranks > 1 and version is not None and low <= version <= high:
        ranks = 1
        notes = [f"the run has {dp} data-parallel ranks; probed with 1: DeepSpeed {deepspeed_version} crashes in "
                 "step() with 2 CPU (gloo) ranks (upstream #7828)"]
    return ranks, notes


def local_devices(python=None, timeout=120):
    """CUDA devices the probe child will use: 0 when it runs on CPU and gloo (no CUDA, or DS_ACCELERATOR=cpu)."""
    code = ("import os, torch; print(torch.cuda.device_count() if torch.cuda.is_available() and "
            "os.environ.get('DS_ACCELERATOR') != 'cpu' else 0)")
    proc = subprocess.run([python or sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"could not count the local devices (python -c 'import torch ...' exited with "
                           f"{proc.returncode}): {proc.stderr.strip()[-500:]}")
    return int(proc.stdout.strip().splitlines()[-1])


def run_probe(case, notes, run, versions, timeout=300, hits=()):
    """The probe of `case` with the patches off and on: the dict the audit's JSON carries under "probe". `hits`: the
    records the audit found hit, the only ones the conclusion may name as the cause.

    status: "ran"; "skipped" (torch or DeepSpeed not importable here); "error" (a child crashed, timed out, or the
    case failed inside it).
    """
    from ..probes import case_is_correct, missing_requirements, run_deepspeed_probe
    from ..registry import installed_version
    audited = (versions or {}).get("deepspeed")
    installed = installed_version("deepspeed")[0]
    out = {"status": None, "case": case, "notes": list(notes), "audited_deepspeed": audited,
           "deepspeed": installed, "audit_hits": sorted(hits)}
    reason = missing_requirements()
    if reason:
        return dict(out, status="skipped", reason=reason)
    try:
        devices = local_devices(timeout=min(timeout, 120))
    except (RuntimeError, ValueError, IndexError, OSError, subprocess.TimeoutExpired) as exc:
        return dict(out, status="error", reason=str(exc))
    ranks, rank_notes = probe_ranks(run, devices, installed)
    out.update(ranks=ranks, notes=out["notes"] + rank_notes)
    result = run_deepspeed_probe(cases=[case], nprocs=ranks, timeout=timeout)
    if result["status"] != "ran":
        return dict(out, status=result["status"], reason=result["reason"])
    unpatched, patched = result["unpatched"], result["patched"]
    out.update(deepspeed=patched["deepspeed"], torch=patched.get("torch"), accelerator=patched.get("accelerator"),
               wall_seconds={"unpatched": unpatched["wall_seconds"], "patched": patched["wall_seconds"]})
    errors = [f"{name}: {payload['results'][0]['error']}" for name, payload in (("without patches", unpatched),
                                                                               ("with patches", patched))
              if "error" in payload["results"][0]]
    if errors:
        return dict(out, status="error", reason="the probe case failed inside the child: " + "; ".join(errors))
    for name, payload in (("unpatched", unpatched), ("patched", patched)):
        found = payload["results"][0]
        steps = [{"weights": s["weights"], "correct": case_is_correct({"case": case, **s}),
                  "max_param_diff": s["max_param_diff"], "residual": s.get("residual", 0.0),
                  "grad_norm": s.get("grad_norm"), "reference_grad_norm": s.get("reference_grad_norm")}
                 for s in found["steps"]]
        out[name] = {"correct": case_is_correct(found), "weights": [s["weights"] for s in steps], "steps": steps}
    out["patched"]["patch_states"] = {name: state for name, state in patched["patches"].items()
                                      if name.startswith("deepspeed-") and state != "not-affected"}
    out["status"] = "ran"
    return out


def _weights(weights):
    return "[" + ", ".join(f"{round(w, 2) + 0.0:g}" for w in weights) + "]"


def _cell(step):
    mark = "✓" if step["correct"] else "✗"
    if not step["weights"]:  # DeepSpeed's own Adam: no weights to fit
        return f"{mark} max param diff {step['max_param_diff']:.1e}"
    leak = step.get("residual") or 0.0
    return f"{mark} {_weights(step['weights'])}" + (f" leak {leak:.2f}" if leak > 0.01 else "")


def to_text(probe):
    """The lines printed after the audit's text."""
    lines = [""]
    audited, installed = probe.get("audited_deepspeed"), probe.get("deepspeed")
    if audited and installed and audited != installed:
        lines.append(f"probe: the audit is about deepspeed {audited}, but deepspeed {installed} is installed here: "
                     f"this proof is of {installed}, not of the run's release")
    elif not audited and installed:
        lines.append(f"probe: the audit was given no DeepSpeed version; this proof is of deepspeed {installed}, "
                     "installed here")
    case = probe["case"]
    if probe["status"] == "skipped":
        lines.append(f"probe: could not run: {probe['reason']} (the audit above stands; install torch and DeepSpeed "
                     "here to prove it)")
        return "\n".join(lines)
    where = ", ".join(filter(None, [f"deepspeed {installed or '(version not read)'}"
                                    + (f" on {probe['accelerator']}" if probe.get("accelerator") else ""),
                                    f"{probe['ranks']} rank(s)" if probe.get("ranks") else None,
                                    f"torch {probe['torch']}" if probe.get("torch") else None]))
    lines.append(f"probe ({where}): {case['label']}; {MODE_TEXT[case['mode']]}; {case['steps']} optimizer steps")
    for note in probe.get("notes", ()):
        lines.append(f"    note: {note}")
    if probe["status"] == "error":
        lines.append(f"probe: FAILED: {probe['reason']}")
        return "\n".join(lines)
    unpatched, patched = probe["unpatched"], probe["patched"]
    width = max(len("without patches"), *(len(_cell(s)) for s in unpatched["steps"])) + 1
    lines.append(f"    {'step':<5}| {'without patches':<{width}}| with patches")
    for number, (off, on) in enumerate(zip(unpatched["steps"], patched["steps"]), 1):
        lines.append(f"    {number:<5}| {_cell(off):<{width}}| {_cell(on)}")
    if case.get("optimizer") == "deepspeed_adam":
        lines.append("    cell: the largest parameter difference from torch Adam fed every micro-batch; ✓ within the "
                     "probe's tolerance")
    else:
        leaks = any((s.get("residual") or 0.0) > 0.01 for s in unpatched["steps"] + patched["steps"])
        lines.append("    cell: each micro-batch's weight in the step's update (1 = counted, 0 = dropped)"
                     + (f"; {probe['ranks']} ranks: rank 0's micro-batches first" if (probe.get("ranks") or 1) > 1
                        else "")
                     + ("; leak = share of the update no micro-batch of that step explains" if leaks else ""))
    states = patched.get("patch_states") or {}
    if states:
        lines.append(f"    sftrl-patches records for deepspeed {installed} in the patched run: "
                     + ", ".join(f"{name} {state}" for name, state in states.items()))
    lines.append(f"probe: {verdict_line(probe)} ({probe['wall_seconds']['unpatched']:.1f} s + "
                 f"{probe['wall_seconds']['patched']:.1f} s)")
    return "\n".join(lines)


def verdict_line(probe):
    installed = f"DeepSpeed {probe['deepspeed']}"
    off, on = probe["unpatched"]["correct"], probe["patched"]["correct"]
    if off and on:
        return f"{installed} counts every micro-batch of this configuration, with and without the patches"
    if not off and on:
        return f"{installed} gets this configuration wrong without the patches; with them every micro-batch counts"
    hits = set(probe.get("audit_hits") or ())
    # a record the release has but this run does not meet explains nothing here
    known = [name for name, state in (probe["patched"].get("patch_states") or {}).items()
             if state == "affected-no-patch" and name in hits]
    tail = f" (known, not patched by sftrl-patches: {', '.join(known)})" if known else (
        f" ({_ADAM_PRECISION})" if _adam_precision(probe) else " (no record the audit hit explains it)")
    if off and not on:
        return f"{installed} is right without the patches and WRONG with them{tail}"
    return f"{installed} gets this configuration WRONG, with and without the patches{tail}"


_ADAM_PRECISION = ("an Adam trajectory in 16 bits: the configuration sweep measures 0.0065-0.0072 from torch Adam on one "
                   "rank (0.019 on two) wherever DeepSpeed's fp16 wrappers sum 16-bit gradients in 16 bits, past the "
                   "probe's 0.005 tolerance; a precision matter, no micro-batch lost: docs/patches.md, the configuration "
                   "sweep")


def _adam_precision(probe):
    """The patched run is wrong only as far as the sweep's documented 16-bit Adam precision reaches."""
    case = probe["case"]
    if case.get("optimizer") not in ("deepspeed_adam", "adamw") or case.get("dtype") not in ("bf16", "fp16"):
        return False
    worst = max((s.get("max_param_diff") or 0.0) for s in probe["patched"]["steps"])
    return worst <= (0.02 if (probe.get("ranks") or 1) > 1 else 0.0075)


def exit_code(probe, audit_code, failed, hit):
    """The audit's exit code; `failed` when the probe itself failed; at least `hit` when the patched run is wrong."""
    if probe["status"] == "error":
        return failed
    if probe["status"] == "ran" and not probe["patched"]["correct"]:
        return max(audit_code, hit)
    return audit_code
