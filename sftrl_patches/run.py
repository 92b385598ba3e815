"""One normalised description of a training run, and the readers that build it.

A run description is a plain dict (fields in sftrl_patches.conditions.FIELDS): what the run's configs,
flags and live objects say, each fact with where it came from. Every record's `when` predicate is
evaluated over it, by the audit of a run made elsewhere (sftrl_patches.audit), by the doctor and by
the line a training job prints at run time (sftrl_patches.runtime_report): one description, one set
of readers, read the way each framework reads its own settings.

What a reader does not understand (an unknown entry point or launcher, a key or flag it does not
know) is kept as doubt: the fields it could change are withheld, named with the reason, so that
the verdicts that need them say `unknown`, never a guess. A misspelling the framework itself
would refuse is an InputError.

Stdlib only; nothing here imports the registry, the patches or a target library.
"""
import difflib


class InputError(ValueError):
    """Bad or unreadable input: one line, naming the file and the field."""


_DTYPES = {"fp32": "fp32", "float32": "fp32", "float": "fp32", "torch.float32": "fp32",
           "fp16": "fp16", "float16": "fp16", "half": "fp16", "torch.float16": "fp16",
           "bf16": "bf16", "bfloat16": "bf16", "torch.bfloat16": "bf16"}
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", ""}

# The facts DeepSpeed's own settings decide; a DeepSpeed setting not understood withholds them all.
DEEPSPEED_FIELDS = ("zero_stage", "offload_optimizer", "gradient_accumulation_steps", "micro_batches_per_step",
                    "accumulation", "precision", "grad_accum_dtype", "fp16_loss_scale", "immediate_grad_update",
                    "optimizer", "fused_adam")
# The facts a training loop decides; an entry point not understood withholds them (and DeepSpeed's).
TRAINER_FIELDS = ("trainer", "uses_deepspeed", "data_parallel_size", "pipeline_parallel", "dynamic_batch",
                  "critic", "multimodal", "loss_agg_mode") + DEEPSPEED_FIELDS

# The order a description is shown in (text and JSON).
RUN_ORDER = ("trainer", "uses_deepspeed", "zero_stage", "offload_optimizer", "gradient_accumulation_steps",
             "micro_batches_per_step", "accumulation", "data_parallel_size", "precision", "grad_accum_dtype",
             "fp16_loss_scale", "immediate_grad_update", "pipeline_parallel", "dynamic_batch", "critic", "multimodal", "loss_agg_mode",
             "tensor_parallel_size", "ring_attn_size", "optimizer", "fused_adam", "sftrl_patches")


class RunBuilder:
    """Facts with their sources; the first source to give a field wins, so callers go from specific to general."""

    def __init__(self):
        self.facts = {}
        self.sources = {}
        self.unclear = {}   # field -> why it is withheld (what was not understood)

    def offer(self, field, value, source):
        if value is not None and field not in self.facts and field not in self.unclear:
            self.facts[field] = value
            self.sources[field] = source

    def doubt(self, fields, reason):
        """Withhold `fields` (whatever offers them, before or after): `reason` says what was not understood."""
        for field in fields:
            self.facts.pop(field, None)
            self.sources.pop(field, None)
            self.unclear.setdefault(field, reason)

    def derive_engine_steps(self):
        """DeepSpeed counts micro-batches whenever its GA is above 1; counted by the engine, a step is GA of them."""
        ga = self.facts.get("gradient_accumulation_steps")
        if ga and ga > 1:
            self.offer("accumulation", "engine", "gradient_accumulation_steps > 1: DeepSpeed counts micro-batches")
        if self.facts.get("accumulation") == "engine" and ga:
            self.offer("micro_batches_per_step", ga, self.sources["gradient_accumulation_steps"])

    def description(self, versions):
        run = dict(self.facts, versions=dict(versions), sources=dict(self.sources))
        if self.unclear:
            run["unclear"] = dict(self.unclear)
        return run


def summary(run):
    """The description in one line: "openrlhf-sft, ZeRO-2, offload cpu, GA 8, ..."."""
    labels = {"trainer": "{}", "zero_stage": "ZeRO-{}", "offload_optimizer": "offload {}",
              "gradient_accumulation_steps": "GA {}", "data_parallel_size": "{} data-parallel rank(s)",
              "precision": "{}", "accumulation": "accumulation: {}", "dynamic_batch": "dynamic batching {}",
              "critic": "critic {}", "tensor_parallel_size": "tensor parallel {}",
              "ring_attn_size": "ring attention {}"}
    parts = []
    for key, label in labels.items():
        if key in run:
            value = run[key]
            value = ("on" if value else "off") if isinstance(value, bool) else value
            parts.append(label.format(value))
    text = ", ".join(parts) or "nothing known"
    if run.get("unclear"):
        text += f"; not understood: {len(set(run['unclear'].values()))} thing(s), see `unknown`"
    return text


def closest(name, known):
    """The known name `name` is most likely a misspelling of, or None."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.85)
    return match[0] if match else None


def unknown_keys(mapping, known, where, framework, refuses=True):
    """Keys of `mapping` not in `known`. A near miss of a known key is a misspelling: an InputError when the
    framework itself refuses unknown keys (the run could not have started so). Returns the rest."""
    rest = []
    for key in mapping:
        if not isinstance(key, str) or key in known:
            continue
        near = closest(key, known)
        if near and refuses:
            raise InputError(f"{where}: unknown key {key!r} (did you mean {near!r}?); {framework} refuses unknown "
                             "keys, so no run started with this file")
        rest.append(f"{key!r}" + (f" (did you mean {near!r}?)" if near else ""))
    return rest


def _auto(value):
    return None if isinstance(value, str) and value.strip().lower() == "auto" else value


def as_bool(value, where):
    value = _auto(value)
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InputError(f"{where}: expected true or false, got {value!r}")


def as_int(value, where, low=1, high=None):
    value = _auto(value)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(str(value).strip()) if not isinstance(value, float) else int(value)
    except ValueError:
        raise InputError(f"{where}: expected a whole number, got {value!r}") from None
    if number < low or (high is not None and number > high):
        bound = f"{low}-{high}" if high is not None else f">= {low}"
        raise InputError(f"{where}: expected {bound}, got {number}")
    return number


def as_dtype(value, where):
    value = _auto(value)
    if value is None:
        return None
    dtype = _DTYPES.get(str(value).strip().lower())
    if dtype is None:
        raise InputError(f"{where}: expected fp32, fp16 or bf16, got {value!r}")
    return dtype


def _section(config, key, where):
    value = config.get(key) or {}
    if not isinstance(value, dict):
        raise InputError(f"{where}: {key}: expected a mapping, got {value!r}")
    return value


# Top-level DeepSpeed keys the audit reads: DeepSpeed ignores unknown top-level keys, so a near miss of one of
# these means the run went without the setting its author meant.
_DEEPSPEED_READ_KEYS = ("zero_optimization", "bf16", "bfloat16", "fp16", "data_types", "gradient_accumulation_steps",
                        "train_batch_size", "train_micro_batch_size_per_gpu", "optimizer")


def _deepspeed_doubts(config, zero, where):
    """[(fields, reason)] for what a DeepSpeed config says that the audit does not understand; InputError for a
    misspelling inside a section DeepSpeed validates (its pydantic models forbid extra keys)."""
    from .known_keys import DEEPSPEED, DEEPSPEED_READ
    checked = f"DeepSpeed ({DEEPSPEED_READ[0]}-{DEEPSPEED_READ[-1]} checked)"
    doubts = []
    sections = [("zero_optimization", zero)]
    for name in ("offload_optimizer", "offload_param"):
        if isinstance(zero.get(name), dict):
            sections.append((name, zero[name]))
    for name, mapping in sections:
        rest = unknown_keys(mapping, DEEPSPEED[name], f"{where}: {'zero_optimization.' * (name != 'zero_optimization')}"
                            f"{name}", checked)
        if rest:
            doubts.append((DEEPSPEED_FIELDS, f"{where}: {name}: {', '.join(rest)} not a key of {checked}"))
    for key in config:
        near = closest(key, _DEEPSPEED_READ_KEYS) if isinstance(key, str) and key not in _DEEPSPEED_READ_KEYS else None
        if near:
            doubts.append((DEEPSPEED_FIELDS, f"{where}: top-level key {key!r} (did you mean {near!r}?): DeepSpeed "
                                             "ignores unknown top-level keys, so the run went without it"))
    return doubts


def deepspeed_config(config, where):
    """A DeepSpeed JSON (a dict) -> settings. DeepSpeed's defaults fill what is absent; "auto" stays unknown."""
    zero = _section(config, "zero_optimization", where)
    doubts = _deepspeed_doubts(config, zero, where)
    offload = zero.get("offload_optimizer")
    if isinstance(offload, dict):
        device = _auto(offload.get("device", "none"))
    elif offload is None:
        device = "cpu" if as_bool(zero.get("cpu_offload"), f"{where}: zero_optimization.cpu_offload") else "none"
    else:
        raise InputError(f"{where}: zero_optimization.offload_optimizer: expected a mapping, got {offload!r}")
    if device is not None:
        device = str(device).lower()
        if device not in ("none", "cpu", "nvme"):
            raise InputError(f"{where}: zero_optimization.offload_optimizer.device: expected none, cpu or nvme, "
                             f"got {device!r}")
    bf16 = _section(config, "bf16", where) or _section(config, "bfloat16", where)
    fp16 = _section(config, "fp16", where)
    bf16_on = as_bool(bf16.get("enabled", False), f"{where}: bf16.enabled")
    fp16_on = as_bool(fp16.get("enabled", False), f"{where}: fp16.enabled")
    precision = "bf16" if bf16_on else "fp16" if fp16_on else (
        None if bf16_on is None or fp16_on is None else "fp32")
    data_types = _section(config, "data_types", where)
    settings = {
        "zero_stage": as_int(zero.get("stage", 0), f"{where}: zero_optimization.stage", low=0, high=3),
        "offload_optimizer": device,
        "precision": precision,
        "grad_accum_dtype": as_dtype(data_types.get("grad_accum_dtype"), f"{where}: data_types.grad_accum_dtype"),
        # read unless fp16 is off: with "enabled": "auto" the HF integration decides fp16, the scale stays this one
        "fp16_loss_scale": fp16_loss_scale(fp16, where) if fp16 and fp16_on is not False else None,
        "immediate_grad_update": as_bool(bf16.get("immediate_grad_update", False),
                                         f"{where}: bf16.immediate_grad_update"),
        "gradient_accumulation_steps": as_int(config.get("gradient_accumulation_steps"),
                                              f"{where}: gradient_accumulation_steps"),
        "train_batch_size": as_int(config.get("train_batch_size"), f"{where}: train_batch_size"),
        "micro_batch": as_int(config.get("train_micro_batch_size_per_gpu"),
                              f"{where}: train_micro_batch_size_per_gpu"),
        # A client optimizer (the HF Trainer's, OpenRLHF's) or DeepSpeed's own `optimizer` block.
        "optimizer": "deepspeed" if config.get("optimizer") else "client",
        "fused_adam": block_is_fused_adam(_section(config, "optimizer", where), device, where)
        if config.get("optimizer") else None,
        "doubts": doubts,
    }
    return settings


# DeepSpeed's `optimizer` block types it builds FusedAdam for without offload, and the 1-bit ones its fp16 path treats
# alike (engine._configure_fp16_optimizer: FP16_Optimizer for these, FP16_UnfusedOptimizer for any other optimizer).
_FUSED_TYPES = {"adam", "adamw"}
FP16_OPTIMIZER_TYPES = {"onebitadam", "zerooneadam"}


def block_is_fused_adam(block, offload_device, where):
    """Whether DeepSpeed's own optimizer (its config's `optimizer` block) is one its fp16 wrappers treat as FusedAdam;
    None when the block leaves that to what the audit cannot read ("auto")."""
    kind = block.get("type")
    if not isinstance(kind, str) or kind.strip().lower() == "auto":
        return None
    kind = kind.strip().lower()
    if kind in FP16_OPTIMIZER_TYPES:
        return True
    if kind not in _FUSED_TYPES:
        return False
    params = block.get("params") or {}
    if not isinstance(params, dict):
        raise InputError(f"{where}: optimizer.params: expected a mapping, got {params!r}")
    torch_adam = params.get("torch_adam", False)
    if isinstance(torch_adam, str) and torch_adam.strip().lower() == "auto":
        return None  # whoever fills it in decides
    if torch_adam:  # DeepSpeed tests the raw value (`if torch_adam:`): published configs write "torch_impl"
        return False  # torch's Adam, not DeepSpeed's
    if offload_device is None:
        return None
    return offload_device == "none"  # with offload DeepSpeed builds its CPU Adam instead


def fp16_loss_scale(fp16, where):
    """fp16.loss_scale: "dynamic" (0 or unset, DeepSpeed's default) or the static scale; None for "auto"."""
    value = fp16.get("loss_scale", 0)
    if isinstance(value, str) and value.strip().lower() == "auto":
        return None  # whoever fills it in (the HF integration) decides
    try:
        scale = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: fp16.loss_scale: expected a number, got {value!r}") from None
    if scale < 0:
        raise InputError(f"{where}: fp16.loss_scale: expected 0 (dynamic) or a positive scale, got {value!r}")
    return "dynamic" if scale == 0 else scale


def hf_training_args(args, where, keys=None):
    """transformers/TRL TrainingArguments (a dict) -> settings; `deepspeed` may be a path or a dict.

    keys: "llamafactory" or "hf" checks every key against what that parser accepts (both refuse unknown keys);
    None reads a live object's arguments, which its parser already checked.
    """
    doubts = []
    if keys is not None:
        from . import known_keys
        known, framework, read = {
            "llamafactory": (known_keys.LLAMAFACTORY, "Llama-Factory", known_keys.LLAMAFACTORY_READ),
            "hf": (known_keys.HF_TRAINING, "HfArgumentParser", known_keys.HF_TRAINING_READ)}[keys]
        framework = f"{framework} ({', '.join(read)} checked)"
        rest = unknown_keys({k: v for k, v in args.items() if k != "deepspeed_config"}, known, where, framework)
        if rest:
            doubts.append((TRAINER_FIELDS, f"{where}: {', '.join(rest)}: not an argument of {framework}"))
    bf16 = as_bool(args.get("bf16"), f"{where}: bf16")
    fp16 = as_bool(args.get("fp16"), f"{where}: fp16")
    pure_bf16 = as_bool(args.get("pure_bf16"), f"{where}: pure_bf16")  # Llama-Factory
    return {
        # Absent: left to the DeepSpeed config, then to TrainingArguments' defaults (GA 1, batch 8).
        "gradient_accumulation_steps": as_int(args.get("gradient_accumulation_steps"),
                                              f"{where}: gradient_accumulation_steps"),
        "micro_batch": as_int(args.get("per_device_train_batch_size"), f"{where}: per_device_train_batch_size"),
        # Absent flags leave precision to the DeepSpeed config (a mismatch would stop the Trainer anyway).
        "precision": "bf16" if (bf16 or pure_bf16) else "fp16" if fp16 else (
            "fp32" if False in (bf16, fp16) else None),
        "deepspeed": args.get("deepspeed"),
        # The HF Trainer builds a torch optimizer unless `optim` names apex's fused Adam (which DeepSpeed's fp16
        # path treats as FusedAdam); absent: TrainingArguments' default, a torch AdamW.
        "fused_adam": None if args.get("optim") is None else "apex_fused" in str(args.get("optim")),
        "doubts": doubts,
    }


# Llama-Factory 0.9.5's templates that carry a multimodal plugin (data/template.py): a model trained with one
# may load a processor, which is what turns its token-mean loss off (llamafactory-multimodal-loss-7448).
LLAMAFACTORY_MM_TEMPLATES = frozenset("""
    dots_ocr ernie_vl gemma3 gemma3n gemma4 gemma4n glm4v glm4_5v glm_ocr granite3_vision intern_vl intern_s1
    keye_vl kimi_vl lfm2_vl llama4 mllama llava llava_next llava_next_llama3 llava_next_mistral llava_next_qwen
    llava_next_yi llava_next_video llava_next_video_mistral llava_next_video_yi mimo_vl minicpm_v minicpm_v_4_6
    minicpm_o mistral_small ministral3 paligemma paligemma_chat pixtral qwen2_audio qwen2_omni qwen3_omni
    qwen3_omni_nothink qwen2_vl qwen3_vl qwen3_vl_nothink qwen3_5 qwen3_5_nothink qwen3_6 video_llava yi_vl
    youtu_vl""".split())
_MM_KEYS = ("image_max_pixels", "image_min_pixels", "video_max_pixels", "video_fps", "audio_sampling_rate",
            "freeze_vision_tower", "freeze_multi_modal_projector", "freeze_language_model")


def llamafactory_multimodal(config):
    """(True | False | None, why) for a Llama-Factory YAML: media keys say yes; a template decides the rest."""
    keys = [k for k in _MM_KEYS if k in config]
    if keys:
        return True, f"media settings ({', '.join(keys)})"
    template = config.get("template")
    if template is None:
        return None, "no template given"
    if template in LLAMAFACTORY_MM_TEMPLATES:
        return None, f"template {template} serves multimodal models; whether this one loads a processor decides"
    return False, f"template {template} is text-only"


def accelerate_config(config, where):
    """An accelerate YAML -> settings (inline DeepSpeed plugin fields, or its deepspeed_config_file)."""
    plugin = _section(config, "deepspeed_config", where)
    distributed = str(config.get("distributed_type", "")).upper()
    mixed = str(config.get("mixed_precision", "") or "").lower()
    machines = as_int(config.get("num_machines", 1), f"{where}: num_machines")
    return {
        "uses_deepspeed": distributed == "DEEPSPEED" or bool(plugin),
        "deepspeed_config_file": plugin.get("deepspeed_config_file"),
        "zero_stage": as_int(plugin.get("zero_stage"), f"{where}: deepspeed_config.zero_stage", low=0, high=3),
        "offload_optimizer": (str(plugin["offload_optimizer_device"]).lower()
                              if plugin.get("offload_optimizer_device") is not None else None),
        "gradient_accumulation_steps": as_int(plugin.get("gradient_accumulation_steps"),
                                              f"{where}: deepspeed_config.gradient_accumulation_steps"),
        "precision": {"bf16": "bf16", "fp16": "fp16", "no": "fp32"}.get(mixed),
        "world_size": as_int(config.get("num_processes"), f"{where}: num_processes"),
        "num_machines": machines,
    }


def classify(config):
    """deepspeed, accelerate, llamafactory or training-args; None when the keys say nothing we know."""
    if any(k in config for k in ("zero_optimization", "train_micro_batch_size_per_gpu", "train_batch_size")) \
            and "per_device_train_batch_size" not in config:
        return "deepspeed"
    if any(k in config for k in ("distributed_type", "deepspeed_config", "compute_environment")):
        return "accelerate"
    if any(k in config for k in ("stage", "finetuning_type", "template", "dataset_dir")):
        return "llamafactory"
    if any(k in config for k in ("per_device_train_batch_size", "gradient_accumulation_steps", "output_dir",
                                 "deepspeed", "bf16", "fp16", "learning_rate")):
        return "training-args"
    return None


# ---- OpenRLHF --------------------------------------------------------------------------------

# field -> (flat flag of <= 0.10.1, dotted flag of >= 0.10.2)
OPENRLHF_FLAGS = {
    "zero_stage": ("zero_stage", "ds.zero_stage"),
    "adam_offload": ("adam_offload", "ds.adam_offload"),
    "param_dtype": ("param_dtype", "ds.param_dtype"),
    "bf16": ("bf16", None),
    "grad_accum_dtype": ("grad_accum_dtype", "ds.grad_accum_dtype"),
    "train_batch_size": ("train_batch_size", "train.batch_size"),
    "micro_train_batch_size": ("micro_train_batch_size", "train.micro_batch_size"),
    "ring_attn_size": ("ring_attn_size", "ds.ring_attn_size"),
    "tensor_parallel_size": ("ds_tensor_parallel_size", "ds.tensor_parallel_size"),
    "dynamic_batch": ("use_dynamic_batch", "train.dynamic_batch_enable"),
    "actor_num_nodes": ("actor_num_nodes", "actor.num_nodes"),
    "actor_num_gpus_per_node": ("actor_num_gpus_per_node", "actor.num_gpus_per_node"),
    "advantage_estimator": ("advantage_estimator", "algo.advantage.estimator"),
    "loss_agg_mode": (None, "actor.loss_agg_mode"),
    "policy_loss_type": ("policy_loss_type", "actor.policy_loss_type"),
}
# OpenRLHF's own defaults (the same in 0.8.x-0.11.x; SFT and PPO differ in the micro-batch size).
OPENRLHF_DEFAULTS = {"zero_stage": 2, "train_batch_size": 128, "ring_attn_size": 1, "tensor_parallel_size": 1,
                     "actor_num_nodes": 1, "actor_num_gpus_per_node": 8, "advantage_estimator": "gae",
                     "policy_loss_type": "ppo"}
_MISSING = object()


def read_flag(args, name):
    """A flag's value from a dict of CLI flags (flat or dotted keys) or OpenRLHF's parsed namespace."""
    if isinstance(args, dict) and name in args:
        return args[name]
    value = args
    for part in name.split("."):
        value = value.get(part, _MISSING) if isinstance(value, dict) else getattr(value, part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


def openrlhf_command_flags(flags, version, where):
    """OpenRLHF's flags as its argparse reads them: abbreviations expanded; InputError for what it refuses.

    Returns (flags, doubts). For a release not in the table, a flag never seen is doubt, not an error.
    """
    from .known_keys import OPENRLHF
    known = OPENRLHF.get(version)
    checked = f"OpenRLHF {version}" if known else f"OpenRLHF ({', '.join(OPENRLHF)} checked)"
    known = known or frozenset().union(*OPENRLHF.values())
    out, unseen = {}, []
    for name, value in flags.items():
        if name in known:
            out[name] = value
            continue
        expansions = [k for k in known if k.startswith(name)]
        if len(expansions) == 1:  # argparse accepts an unambiguous prefix
            out[expansions[0]] = value
            continue
        if len(expansions) > 1:
            raise InputError(f"{where}: --{name} is ambiguous for {checked} (could be --{', --'.join(sorted(expansions)[:4])}"
                             "); its argparse refuses it, so no run started with this command")
        near = closest(name, known)
        if near or version in OPENRLHF:
            hint = f" (did you mean --{near}?)" if near else ""
            raise InputError(f"{where}: {checked} has no flag --{name}{hint}; its argparse refuses unknown flags, "
                             "so no run started with this command")
        unseen.append(f"--{name}")
    doubts = [(TRAINER_FIELDS, f"{where}: {', '.join(unseen)}: not a flag of {checked}")] if unseen else []
    return out, doubts


def openrlhf_settings(args, where):
    """OpenRLHF's arguments (CLI flags or its parsed args) -> raw settings, with OpenRLHF's defaults."""
    settings, defaulted = {}, set()
    for field, names in OPENRLHF_FLAGS.items():
        value = _MISSING
        for name in filter(None, names):
            value = read_flag(args, name)
            if value is not _MISSING:
                break
        if value is _MISSING or value is None:
            if field in OPENRLHF_DEFAULTS:
                settings[field] = OPENRLHF_DEFAULTS[field]
                defaulted.add(field)
            continue
        settings[field] = value
    out = {
        "zero_stage": as_int(settings.get("zero_stage"), f"{where}: --zero_stage", low=0, high=3),
        "adam_offload": bool(as_bool(settings.get("adam_offload", False), f"{where}: --adam_offload")),
        "grad_accum_dtype": as_dtype(settings.get("grad_accum_dtype"), f"{where}: --grad_accum_dtype"),
        "train_batch_size": as_int(settings.get("train_batch_size"), f"{where}: --train_batch_size"),
        "micro_train_batch_size": as_int(settings.get("micro_train_batch_size"), f"{where}: --micro_train_batch_size"),
        "ring_attn_size": as_int(settings.get("ring_attn_size"), f"{where}: --ring_attn_size"),
        "tensor_parallel_size": as_int(settings.get("tensor_parallel_size"), f"{where}: --ds_tensor_parallel_size"),
        "dynamic_batch": bool(as_bool(settings.get("dynamic_batch", False), f"{where}: --use_dynamic_batch")),
        "actor_world": (as_int(settings.get("actor_num_nodes"), f"{where}: --actor_num_nodes")
                        * as_int(settings.get("actor_num_gpus_per_node"), f"{where}: --actor_num_gpus_per_node")),
        "actor_world_defaulted": bool({"actor_num_nodes", "actor_num_gpus_per_node"} & defaulted),
        "critic": str(settings.get("advantage_estimator")) == "gae",
        "loss_agg_mode": settings.get("loss_agg_mode"),
        "policy_loss_type": str(settings.get("policy_loss_type")),
        "defaulted": defaulted,
    }
    if "param_dtype" in settings:
        out["precision"] = as_dtype(settings["param_dtype"], f"{where}: --param_dtype")
    elif "bf16" in settings:
        out["precision"] = "bf16" if as_bool(settings["bf16"], f"{where}: --bf16") else None
    else:
        out["precision"] = "bf16"  # --param_dtype's default since it exists
        defaulted.add("precision")
    return out


def describe_openrlhf(builder, kind, args, where, world_size, world_source):
    """Offer the facts of an OpenRLHF run; `world_size` is the launcher's (SFT) and ignored for PPO."""
    s = openrlhf_settings(args, where)
    builder.offer("trainer", kind, where)
    builder.offer("uses_deepspeed", True, "OpenRLHF trains with DeepSpeed")
    for field in ("zero_stage", "grad_accum_dtype", "loss_agg_mode", "tensor_parallel_size", "ring_attn_size"):
        builder.offer(field, s[field], where if field not in s["defaulted"] else "OpenRLHF's default")
    if kind == "openrlhf-ppo":
        builder.offer("policy_loss_type", s["policy_loss_type"],
                      where if "policy_loss_type" not in s["defaulted"] else "OpenRLHF's default")
    builder.offer("offload_optimizer", "cpu" if s["adam_offload"] else "none", where)
    builder.offer("precision", s.get("precision"), where if "precision" not in s["defaulted"] else "OpenRLHF's default")
    builder.offer("dynamic_batch", s["dynamic_batch"], where)
    builder.offer("pipeline_parallel", False, "OpenRLHF has no pipeline parallelism")
    builder.offer("immediate_grad_update", False, "DeepSpeed's default (OpenRLHF does not set it)")
    builder.offer("optimizer", "client", "OpenRLHF builds its own optimizer and hands it to DeepSpeed")
    builder.offer("fused_adam", not s["adam_offload"],
                  f"{where}: OpenRLHF builds DeepSpeed's {'CPU Adam' if s['adam_offload'] else 'FusedAdam'}")
    if kind == "openrlhf-ppo":
        builder.offer("critic", s["critic"], f"{where}: advantage estimator")
        world_size = s["actor_world"]
        world_source = ("OpenRLHF's default --actor_num_nodes x --actor_num_gpus_per_node" if s["actor_world_defaulted"]
                        else f"{where}: --actor_num_nodes x --actor_num_gpus_per_node")
    else:
        builder.offer("critic", False, "SFT")
    if world_size is None:
        return
    group = s["ring_attn_size"] * s["tensor_parallel_size"]
    if world_size % group:
        raise InputError(f"{where}: world size {world_size} is not divisible by --ring_attn_size x "
                         f"--ds_tensor_parallel_size ({group})")
    dp = world_size // group
    builder.offer("data_parallel_size", dp, world_source)
    if s["dynamic_batch"]:
        # OpenRLHF sets DeepSpeed's GA to 1 and calls backward once per token-budget micro-batch, no boundary.
        builder.offer("gradient_accumulation_steps", 1, "OpenRLHF with dynamic batching")
        builder.offer("accumulation", "manual", "OpenRLHF with dynamic batching")
        return
    micro, batch = s["micro_train_batch_size"], s["train_batch_size"]
    if micro is None:
        micro = 8 if kind == "openrlhf-sft" else 4  # OpenRLHF's defaults
    if batch % (micro * dp):
        raise InputError(f"{where}: --train_batch_size {batch} is not divisible by --micro_train_batch_size "
                         f"{micro} x {dp} data-parallel ranks")
    ga = batch // (micro * dp)
    source = f"{where}: train batch {batch} / (micro batch {micro} x {dp} data-parallel ranks)"
    builder.offer("gradient_accumulation_steps", ga, source)
    builder.offer("micro_batches_per_step", ga, source)
    builder.offer("accumulation", "engine", "OpenRLHF lets DeepSpeed count micro-batches")
