"""Everything the user gave (config files, a launch command, a world size) into one run description."""
from .. import _config
from ..run import (TRAINER_FIELDS, InputError, RunBuilder, accelerate_config, as_int, classify,
                   deepspeed_config, describe_openrlhf, hf_training_args, llamafactory_multimodal,
                   openrlhf_command_flags)
from .command import parse_command, program_kind
from .inputs import load_mapping, resolve_path

# What `--trainer` may declare for a script the audit cannot name, and what each means for the reading.
DECLARED_TRAINERS = {
    "transformers": "the Hugging Face Trainer (its flags are read as TrainingArguments)",
    "trl": "a TRL trainer (its flags are read as TrainingArguments)",
    "deepspeed": "its own loop around a DeepSpeed engine (say how it accumulates with --accumulation)",
}
# A script's own loop decides these; nothing in its flags or configs does.
_LOOP_FIELDS = ("trainer", "accumulation", "micro_batches_per_step", "data_parallel_size", "pipeline_parallel",
                "dynamic_batch", "critic", "multimodal", "loss_agg_mode")

_TRAINERS = {"llamafactory": "llamafactory", "training-args": "transformers"}


class _Inputs:
    def __init__(self):
        self.deepspeed = []   # (settings, where): most specific first
        self.trainer = []     # HF TrainingArguments-like layers (command flags, TRL/Llama-Factory files)
        self.whole_arguments = set()  # the trainer layers that are all of TrainingArguments (not a script's flags)
        self.accelerate = []
        self.trainer_kind = None
        self.world = []       # (size, source), most specific first
        self.multimodal = []  # ((yes/no/None, why), source) from Llama-Factory files
        self.doubts = []      # (fields, what was not understood)


def _add_deepspeed(inputs, reference, relative_to, field):
    if isinstance(reference, dict):
        inputs.deepspeed.append((deepspeed_config(reference, f"{relative_to}: {field}"), f"{relative_to}: {field}"))
        return
    path = resolve_path(reference, relative_to, field, base="" if relative_to == "launch command" else None)
    inputs.deepspeed.append((deepspeed_config(load_mapping(path), path), path))


def _add_file(inputs, path, expected=None):
    data = load_mapping(path)
    kind = expected or classify(data)
    if kind == "deepspeed":
        inputs.deepspeed.append((deepspeed_config(data, path), path))
    elif kind == "accelerate":
        settings = accelerate_config(data, path)
        inputs.accelerate.append((settings, path))
        if settings["deepspeed_config_file"]:
            _add_deepspeed(inputs, settings["deepspeed_config_file"], path, "deepspeed_config.deepspeed_config_file")
        if settings["world_size"]:
            inputs.world.append((settings["world_size"], f"{path}: num_processes"))
    elif kind in ("llamafactory", "training-args"):
        settings = hf_training_args(data, path, keys="llamafactory" if kind == "llamafactory" else "hf")
        if kind == "llamafactory":
            inputs.multimodal.append((llamafactory_multimodal(data), path))
        inputs.trainer.append((settings, path))
        inputs.whole_arguments.add(path)
        inputs.trainer_kind = inputs.trainer_kind or _TRAINERS[kind]
        if settings["deepspeed"]:
            _add_deepspeed(inputs, settings["deepspeed"], path, "deepspeed")
    else:
        raise InputError(f"{path}: not a DeepSpeed JSON, accelerate YAML, TrainingArguments or Llama-Factory "
                         "file (none of their keys found)")


def _from_launch(inputs, launch, kind, declared=None):
    if launch.not_understood:
        inputs.doubts.append((TRAINER_FIELDS, launch.not_understood))
        return
    for path in launch.config_files:
        _add_file(inputs, path, "accelerate")
    if launch.accelerate:
        flags = launch.accelerate
        settings = accelerate_config({
            "distributed_type": "DEEPSPEED" if flags.get("use_deepspeed") or "zero_stage" in flags else "",
            "mixed_precision": flags.get("mixed_precision"),
            "deepspeed_config": {k: flags[k] for k in ("zero_stage", "offload_optimizer_device",
                                                       "gradient_accumulation_steps", "deepspeed_config_file")
                                 if k in flags}}, "accelerate launch flags")
        inputs.accelerate.insert(0, (settings, "accelerate launch flags"))
        if settings["deepspeed_config_file"]:
            _add_deepspeed(inputs, settings["deepspeed_config_file"], "launch command",
                           "accelerate launch --deepspeed_config_file")
    if kind == "llamafactory":
        yamls = [p for p in launch.positional if p.lower().endswith((".yaml", ".yml", ".json"))]
        if not yamls:
            raise InputError("launch command: llamafactory-cli train: no YAML or JSON config given")
        overrides = {k: v for k, v in launch.program_args.items()}
        data = dict(load_mapping(yamls[0]), **overrides)  # key=value overrides win, as in Llama-Factory
        settings = hf_training_args(data, yamls[0], keys="llamafactory")
        inputs.multimodal.insert(0, (llamafactory_multimodal(data), yamls[0]))
        inputs.trainer.insert(0, (settings, yamls[0]))
        inputs.whole_arguments.add(yamls[0])
        inputs.trainer_kind = "llamafactory"
        if settings["deepspeed"]:
            _add_deepspeed(inputs, settings["deepspeed"], yamls[0], "deepspeed")
    elif kind == "trl" or declared in ("transformers", "trl"):
        flags = {k.replace("-", "_"): v for k, v in launch.program_args.items()}
        # `trl` is HfArgumentParser, which refuses unknown flags; a script declared by --trainer has its own too.
        settings = hf_training_args(flags, "launch command", keys="hf" if kind == "trl" else None)
        inputs.trainer.insert(0, (settings, "launch command"))
        if kind == "trl":  # TRL's own CLI: its flags are all of TrainingArguments; a script's may set GA its own way
            inputs.whole_arguments.add("launch command")
        inputs.trainer_kind = "trl" if kind == "trl" else declared
        if settings["deepspeed"]:
            _add_deepspeed(inputs, settings["deepspeed"], "launch command", "--deepspeed")
    elif kind is None:
        mentions = [f"--{name}" for name in launch.program_args if "deepspeed" in name.lower() or "zero" in name.lower()]
        if declared is None:
            inputs.doubts.append((_LOOP_FIELDS, (
                f"launch command: {launch.program} is not an entry point this audit knows (OpenRLHF's train_sft and "
                "train_ppo_ray, `trl`, `llamafactory-cli`), so its training loop (how it accumulates, whether it uses "
                "DeepSpeed) and its flags are not read" + (f", {', '.join(mentions)} among them" if mentions else "")
                + f"; if you know, say --trainer ({', '.join(DECLARED_TRAINERS)})"
                # TRL ships no trl/__main__.py: `-m trl sft` stops at start; its CLI is the `trl` command
                + ("; `-m trl` does not run TRL's CLI (TRL has no __main__): write `trl sft ...`, or name the script, "
                   "`-m trl.scripts.sft`" if launch.program == "trl" else ""))))
    if kind is None and declared not in ("transformers", "trl"):
        for name in ("deepspeed_config", "deepspeed-config", "deepspeed"):
            if isinstance(launch.program_args.get(name), str) and launch.program_args[name].lower().endswith(".json"):
                _add_deepspeed(inputs, launch.program_args[name], "launch command", f"--{name}")
    if launch.world_size:
        inputs.world.insert(0, (launch.world_size, launch.world_source))


def build_run(versions, config_paths=(), command=None, world_size=None, trainer=None, accumulation=None):
    """The normalised run description (a dict, see sftrl_patches.conditions.FIELDS).

    trainer / accumulation: what the user declares about a script the audit cannot name (--trainer,
    --accumulation); they never override what a known entry point says.
    """
    if trainer is not None and trainer not in DECLARED_TRAINERS:
        raise InputError(f"--trainer: expected one of {', '.join(DECLARED_TRAINERS)}, got {trainer!r}")
    inputs = _Inputs()
    launch = parse_command(command) if command else None
    kind = program_kind(launch) if launch else None
    if trainer is not None and kind is not None:
        raise InputError(f"--trainer: the command runs {launch.program}, which the audit reads itself ({kind}); "
                         "--trainer is for scripts it cannot name")
    declared = trainer
    if launch:
        _from_launch(inputs, launch, kind, declared)
    for path in config_paths:
        _add_file(inputs, path)
    if world_size:
        inputs.world.append((world_size, "--world-size"))
    world, world_source = inputs.world[0] if inputs.world else (None, None)

    builder = RunBuilder()
    for fields, reason in inputs.doubts:
        builder.doubt(fields, reason)
    if kind in ("openrlhf-sft", "openrlhf-ppo"):
        flags, doubts = openrlhf_command_flags(launch.program_args, versions.get("openrlhf"), "launch command")
        for fields, reason in doubts:
            builder.doubt(fields, reason)
        describe_openrlhf(builder, kind, flags, "launch command", world, world_source)
    if declared:
        builder.offer("trainer", declared, "--trainer")
        if accumulation:
            builder.offer("accumulation", accumulation, "--accumulation")
    trainer = kind if kind in ("trl", "llamafactory") else inputs.trainer_kind
    if trainer:
        builder.offer("trainer", trainer, "launch command" if kind else inputs.trainer[0][1])
    uses_ds = bool(inputs.deepspeed or any(a["uses_deepspeed"] for a, _ in inputs.accelerate)
                   or (launch and launch.launcher == "deepspeed") or declared == "deepspeed")
    builder.offer("uses_deepspeed", True if uses_ds else (False if trainer else None),
                  "the configs and the command" if uses_ds else "no DeepSpeed config or launcher given")
    _describe_layers(builder, inputs, world, world_source, trainer)
    if (trainer in HF_TRAINERS or declared in HF_TRAINERS) and not any(
            s["optimizer"] == "deepspeed" for s, _ in inputs.deepspeed):  # with a block DeepSpeed builds its own
        for settings, where in inputs.trainer:
            builder.offer("fused_adam", settings["fused_adam"], f"{where}: optim")
        builder.offer("fused_adam", False, "the HF Trainer's optimizer (TrainingArguments' default optim: torch's AdamW)")
    if launch and launch.via_sftrl_launch:
        disabled = _config.disabled_names(launch.env)
        builder.offer("sftrl_patches", "armed in every rank by sftrl_patches.launch" if disabled is None else
                      f"started through sftrl_patches.launch with {_config.DISABLE_VAR}={launch.env[_config.DISABLE_VAR]}",
                      "launch command")
    return builder.description(versions)


# The loops built on TrainingArguments; their DeepSpeed integration fills the DeepSpeed GA from it.
HF_TRAINERS = ("trl", "transformers", "llamafactory")


def _ga_mismatch(inputs, trainer):
    """Why the run cannot start, when TrainingArguments' GA and a DeepSpeed-side GA (an accelerate config, a
    DeepSpeed JSON) are both set and differ: the HF integration refuses the mismatch (its fill_match) instead of
    picking one. TrainingArguments' default (1) counts only where every trainer layer is read whole (a TrainingArguments
    or Llama-Factory file, TRL's CLI): a script's own flags may set GA in ways not read. None when they agree, when
    one is not known, or when the loop is not an HF one."""
    if trainer not in HF_TRAINERS:
        return None
    deepspeed_side = next(((s["gradient_accumulation_steps"], w) for s, w in inputs.accelerate + inputs.deepspeed
                           if s["gradient_accumulation_steps"] is not None), None)
    if deepspeed_side is None:
        return None
    hf = next(((s["gradient_accumulation_steps"], w) for s, w in inputs.trainer
               if s["gradient_accumulation_steps"] is not None), None)
    if hf is None and inputs.trainer and all(w in inputs.whole_arguments for _, w in inputs.trainer):
        hf = (1, "TrainingArguments' default")  # nothing sets it where everything that could is read
    if hf is None or hf[0] == deepspeed_side[0]:
        return None
    return (f"gradient_accumulation_steps is {hf[0]} in {hf[1]} but {deepspeed_side[0]} in {deepspeed_side[1]}: the "
            "HF Trainer's DeepSpeed integration stops such a run at start (set one of them to \"auto\" or make them "
            "equal)")


def _describe_layers(builder, inputs, world, world_source, trainer):
    for settings, _ in inputs.deepspeed + inputs.trainer:
        for fields, reason in settings.get("doubts", ()):
            builder.doubt(fields, reason)
    mismatch = _ga_mismatch(inputs, trainer)
    if mismatch:
        builder.doubt(("gradient_accumulation_steps", "micro_batches_per_step"), mismatch)
    for (multimodal, why), where in inputs.multimodal:
        builder.offer("multimodal", multimodal, f"{where}: {why}")
    for settings, where in inputs.trainer:
        builder.offer("gradient_accumulation_steps", settings["gradient_accumulation_steps"], where)
        builder.offer("precision", settings["precision"], where)
    for settings, where in inputs.accelerate:
        for field in ("zero_stage", "offload_optimizer", "gradient_accumulation_steps", "precision"):
            builder.offer(field, settings[field], where)
    micro = next((s["micro_batch"] for s, _ in inputs.trainer if s["micro_batch"]), None)
    if micro is None and trainer in ("trl", "transformers", "llamafactory") and not any(
            s["micro_batch"] for s, _ in inputs.deepspeed):
        micro = 8  # TrainingArguments' default per_device_train_batch_size
    for settings, where in inputs.deepspeed:
        for field in ("zero_stage", "offload_optimizer", "precision", "grad_accum_dtype", "fp16_loss_scale",
                      "immediate_grad_update", "gradient_accumulation_steps", "optimizer", "fused_adam"):
            builder.offer(field, settings[field], where)
        micro = micro or settings["micro_batch"]
        _check_batch(builder, settings, where, micro, world)
    if world:
        # TRL, transformers, Llama-Factory and plain DeepSpeed scripts: every rank is a data-parallel rank.
        builder.offer("data_parallel_size", as_int(world, "world size"), world_source)
    facts = builder.facts
    if facts.get("uses_deepspeed"):
        builder.offer("offload_optimizer", "none", "DeepSpeed's default")
        if inputs.deepspeed:
            builder.offer("zero_stage", 0, "DeepSpeed's default")
        builder.offer("immediate_grad_update", False, "DeepSpeed's default")
        if facts.get("precision") and inputs.deepspeed:
            builder.offer("grad_accum_dtype", facts["precision"], "DeepSpeed's default (the model's dtype)")
    if trainer in ("trl", "transformers", "llamafactory"):
        builder.offer("gradient_accumulation_steps", 1, "TrainingArguments' default")
        builder.offer("accumulation", "engine", f"{trainer} lets DeepSpeed count micro-batches")
        builder.offer("pipeline_parallel", False, f"{trainer} has no pipeline parallelism")
    builder.derive_engine_steps()


def _check_batch(builder, settings, where, micro, world):
    """DeepSpeed's rule: train_batch_size = micro batch x GA x data-parallel ranks; derive GA or refuse a mismatch."""
    batch, ga = settings["train_batch_size"], settings["gradient_accumulation_steps"]
    if not batch or not micro or not world:
        return
    if ga is None and "gradient_accumulation_steps" not in builder.facts:
        if batch % (micro * world):
            raise InputError(f"{where}: train_batch_size {batch} is not divisible by micro batch {micro} x "
                             f"{world} ranks")
        builder.offer("gradient_accumulation_steps", batch // (micro * world),
                      f"{where}: train_batch_size {batch} / (micro batch {micro} x {world} ranks)")
    elif ga is not None and batch != micro * ga * world:
        raise InputError(f"{where}: train_batch_size {batch} != micro batch {micro} x gradient_accumulation_steps "
                         f"{ga} x {world} ranks")
