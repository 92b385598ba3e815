"""The audit's verdict at run time: said once per process when the real configuration is built.

When a DeepSpeed engine with an optimizer is built, and when an OpenRLHF trainer is, the records of
that library are evaluated on the live configuration (the same predicates as `sftrl-doctor audit`)
and one line goes to stderr on rank 0: affected and patched, affected and NOT patched (and why),
or not affected. Each record is reported at most once per process.

Switches: SFTRL_PATCHES_VERDICT=off|rank0|all (default rank0);
SFTRL_PATCHES_REPORT=FILE appends one JSON line per report event from every process (provenance).
Nothing here may break a training job: every step is guarded, failures are logged at debug level.
"""
import os
import sys

from . import _config

VERDICT_VAR, REPORT_VAR = _config.VERDICT_VAR, _config.REPORT_VAR
SCHEMA = "sftrl-run-report/1"

# module -> (class, what its __init__ builds, distribution)
HOOKS = {
    "deepspeed.runtime.engine": ("DeepSpeedEngine", "deepspeed", "deepspeed"),
    "openrlhf.trainer.sft_trainer": ("SFTTrainer", "openrlhf-sft", "openrlhf"),
    "openrlhf.trainer.ray.ppo_actor": ("ActorPPOTrainer", "openrlhf-ppo", "openrlhf"),
    "openrlhf.trainer.ray.ppo_critic": ("CriticPPOTrainer", "openrlhf-critic", "openrlhf"),
}
_reported = set()  # record names already said in this process
_engine_run = {}   # facts of the last DeepSpeed engine built here, for the trainer's report


def _logger():
    import logging
    return logging.getLogger("sftrl_patches")


def _wrap_init(kind):
    def make_wrapper(init):
        def __init__(self, *args, **kwargs):
            init(self, *args, **kwargs)
            registry = getattr(sys.modules.get("sftrl_patches"), "_registry", None)
            if registry is not None:
                report_built(self, kind, registry)  # subclasses reach here through super().__init__ too
        return __init__
    return make_wrapper


def _records():
    """One registry record per hook: fingerprinted (any shape: the wrapper calls __init__ unchanged, then looks),
    shown by status() and the doctor, undone by revert()."""
    from ._version import VersionRange
    from .registry import Patch, Target
    records = []
    for module, (class_name, kind, distribution) in HOOKS.items():
        records.append(Patch(
            name=f"run-report-{kind}",
            title=f"Run-time verdict line when {class_name} is built ({VERDICT_VAR}=off silences it)",
            distribution=distribution,
            affected=VersionRange(),
            targets=(Target(module, class_name, "__init__", _wrap_init(kind), any_shape=True),),
            observer=True,
            remediation=f"{VERDICT_VAR}=off or {_config.DISABLE_VAR}=run-report-{kind} switch it off"))
    return tuple(records)


RECORDS = _records()


def report_built(obj, kind, registry):
    """Evaluate and say the verdicts for a just-built engine or trainer. Never raises."""
    mode = os.environ.get(VERDICT_VAR, "rank0").strip().lower()
    silent = _config.verdict_silenced()
    report_file = os.environ.get(REPORT_VAR)
    if silent and not report_file:
        return None
    try:
        event = _event(obj, kind, registry)
        if event is None:
            return None
        rank = _rank(obj)
        if mode == "all" or (not silent and rank in (0, None)):
            sys.stderr.write(event["line"] + "\n")
            sys.stderr.flush()
        if report_file:
            _append(report_file, dict(event, rank=rank))
        return event
    except Exception:
        _logger().debug("sftrl_patches: the run report failed", exc_info=True)
        return None


def _event(obj, kind, registry):
    from .registry import installed_versions
    from .run import RunBuilder
    from .verdict import audit

    builder = RunBuilder()
    if kind == "deepspeed":
        if getattr(obj, "optimizer", None) is None:
            return None  # an inference engine (a reference model): no gradients, nothing to say
        _engine_facts(builder, obj)
        _engine_run.clear()
        _engine_run.update(builder.facts)
        distribution = "deepspeed"
    else:
        _openrlhf_facts(builder, obj, kind)
        distribution = "openrlhf"
    run = builder.description(installed_versions())
    patches = [p for p in registry.patches.values()
               if p.distribution == distribution and not p.observer and p.name not in _reported]
    if not patches:
        return None
    _reported.update(p.name for p in patches)
    findings = audit(patches, run)
    states = {p.name: registry.status(p.name).state for p in patches}
    for finding in findings:
        finding["patch_state"] = states[finding["check"]]
    return {"schema": SCHEMA, "event": kind, "pid": os.getpid(), "run": {k: v for k, v in run.items() if k != "sources"},
            "findings": findings, "patches": states, "line": _line(distribution, run, findings, registry)}


def _engine_facts(builder, engine):
    from .run import deepspeed_config
    source = "the DeepSpeed engine"
    probes = {
        "zero_stage": lambda: int(engine.zero_optimization_stage()),
        "offload_optimizer": lambda: ("cpu" if engine.zero_cpu_offload() else
                                      "nvme" if engine.zero_use_cpu_optimizer() else "none"),
        "gradient_accumulation_steps": lambda: int(engine.gradient_accumulation_steps()),
        "data_parallel_size": lambda: int(engine.dp_world_size),
        "precision": lambda: "bf16" if engine.bfloat16_enabled() else "fp16" if engine.fp16_enabled() else "fp32",
        "pipeline_parallel": lambda: bool(getattr(engine, "pipeline_parallelism", False)),
        "fused_adam": lambda: _fused_adam(engine),
    }
    for field, probe in probes.items():
        try:
            builder.offer(field, probe(), source)
        except Exception:
            continue
    try:
        settings = deepspeed_config(engine._config._param_dict, "the DeepSpeed config")
        for field in ("grad_accum_dtype", "immediate_grad_update", "fp16_loss_scale", "optimizer"):
            builder.offer(field, settings[field], "the DeepSpeed config")
    except Exception:
        pass
    builder.offer("grad_accum_dtype", builder.facts.get("precision"), "DeepSpeed's default (the model's dtype)")
    builder.offer("uses_deepspeed", True, source)
    builder.derive_engine_steps()


def _fused_adam(engine):
    """Whether DeepSpeed treats this engine's optimizer as its FusedAdam: the fp16 wrapper it built says so, else
    the optimizer it wrapped (engine._configure_fp16_optimizer's test: FusedAdam, or a 1-bit Adam block)."""
    from .patches.deepspeed_loss_scale import is_fp16_wrapper
    from .run import FP16_OPTIMIZER_TYPES
    if is_fp16_wrapper(engine.optimizer):
        return any(cls.__name__ == "FP16_Optimizer" for cls in type(engine.optimizer).__mro__)
    basic = getattr(engine, "basic_optimizer", None)
    return (any(cls.__name__ == "FusedAdam" for cls in type(basic).__mro__)
            or str(engine.optimizer_name()).lower() in FP16_OPTIMIZER_TYPES)


def _openrlhf_facts(builder, trainer, kind):
    from .run import describe_openrlhf
    args = trainer.args
    world, source = None, None
    try:
        world, source = int(trainer.strategy.world_size), "the trainer's world size"
    except Exception:
        pass
    describe_openrlhf(builder, "openrlhf-sft" if kind == "openrlhf-sft" else "openrlhf-ppo", args,
                      "OpenRLHF's arguments", world, source)
    if kind == "openrlhf-critic":
        builder.facts["critic"] = True
        builder.sources["critic"] = "this process trains the critic"
    for field, value in _engine_run.items():
        builder.offer(field, value, "the DeepSpeed engine")


def _line(distribution, run, findings, registry):
    from .run import summary
    label = f"{distribution} {run['versions'].get(distribution, '?')}"
    hits = [f for f in findings if f["verdict"] == "hit"]
    if not hits:
        unknown = [f["check"] for f in findings if f["verdict"] == "unknown"]
        tail = f"; not decidable from the configuration: {', '.join(unknown)}" if unknown else ""
        return (f"sftrl_patches: this run ({label}: {summary(run)}) is not affected by the "
                f"{len(findings)} known {distribution} bugs{tail}")
    parts = []
    for finding in hits:
        status = registry.status(finding["check"])
        if status.state == "patched" and finding.get("patch_covers") is False:
            parts.append(f"{finding['check']}: affected, NOT patched: {' and '.join(finding['not_covered'])} is "
                         f"outside this patch: {finding['effect']}")
        elif status.state == "patched" and finding.get("patch_covers") is None:
            parts.append(f"{finding['check']}: affected, patched only where {registry.patches[finding['check']].covers}"
                         " (not known for this run)")
        elif status.state == "patched":
            parts.append(f"{finding['check']}: affected, patched")
        else:
            why = _config.DISABLE_VAR if status.state == "disabled" else status.reason or status.state
            parts.append(f"{finding['check']}: affected, NOT patched ({status.state}: {why}): {finding['effect']}")
    return f"sftrl_patches: this run ({label}: {summary(run)}): " + "; ".join(parts)


def _rank(obj):
    for probe in (lambda: obj.global_rank, lambda: obj.strategy.get_rank(), lambda: int(os.environ["RANK"])):
        try:
            return int(probe())
        except Exception:
            continue
    return None


def _append(path, event):
    import json
    import socket
    import time
    record = dict(event, host=socket.gethostname(), time=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    data = (json.dumps(record, default=str) + "\n").encode("utf-8")
    # One write on an O_APPEND descriptor: lines from concurrent ranks do not interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
