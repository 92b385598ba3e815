"""A launch command, read the way its launcher would: world size, the program, the program's flags.

Understood: `deepspeed`, `torchrun` (and `python -m torch.distributed.run`), `accelerate launch`,
`ray job submit ... --`, `python [-m] ...`, `llamafactory-cli train`, `trl sft`, leading VAR=value.
The program's own flags are read loosely (`--name value`, `--name=value`, `--flag`), since they
belong to OpenRLHF, TRL or a user's script; the launchers' flags are checked.
"""
import os
import re

from ..run import InputError, as_int, closest

# Launcher flag -> takes a value? Flags not listed here are refused (a typo would change the world size).
_DEEPSPEED_FLAGS = {
    "--num_gpus": True, "--num_nodes": True, "--include": True, "--exclude": True, "-H": True,
    "--hostfile": True, "--master_port": True, "--master_addr": True, "--launcher": True,
    "--launcher_args": True, "--node_rank": True, "--force_multi": False, "--no_local_rank": False,
    "--no_python": False, "--module": False, "--no_ssh": False, "--no_ssh_check": False,
    "--autotuning": True, "--elastic_training": False, "--min_elastic_nodes": True,
    "--max_elastic_nodes": True, "--bind_cores_to_rank": False, "--bind_core_list": True,
    "--save_pid": False, "--enable_each_rank_log": True, "--ssh_port": True, "--comment": True,
    "--account": True,
}
_TORCHRUN_FLAGS = {
    "--nproc_per_node": True, "--nnodes": True, "--node_rank": True, "--master_addr": True,
    "--master_port": True, "--rdzv_backend": True, "--rdzv_endpoint": True, "--rdzv_id": True,
    "--rdzv_conf": True, "--standalone": False, "--max_restarts": True, "--monitor_interval": True,
    "--start_method": True, "--role": True, "--module": False, "-m": False, "--no_python": False,
    "--run_path": False, "--log_dir": True, "--redirects": True, "-r": True, "--tee": True, "-t": True,
    "--local_addr": True, "--logs_specs": True, "--local-ranks-filter": True, "--local_ranks_filter": True,
    "--use_env": False,
}
_ACCELERATE_FLAGS = {
    "--config_file": True, "--num_processes": True, "--num_machines": True, "--machine_rank": True,
    "--main_process_ip": True, "--main_process_port": True, "--mixed_precision": True,
    "--use_deepspeed": False, "--use_fsdp": False, "--multi_gpu": False, "--cpu": False,
    "--zero_stage": True, "--offload_optimizer_device": True, "--offload_param_device": True,
    "--gradient_accumulation_steps": True, "--gradient_clipping": True, "--zero3_init_flag": True,
    "--zero3_save_16bit_model": True, "--deepspeed_config_file": True, "--deepspeed_multinode_launcher": True,
    "--deepspeed_hostfile": True, "--dynamo_backend": True, "--gpu_ids": True, "--same_network": False,
    "--rdzv_backend": True, "--num_cpu_threads_per_process": True, "-m": False, "--module": False,
    "--no_python": False, "--debug": False, "--quiet": False, "-q": False, "--main_training_function": True,
    "--downcast_bf16": False, "--deepspeed_exclusion_filter": True, "--deepspeed_inclusion_filter": True,
    "--tpu": False, "--monitor_interval": True, "--max_restarts": True,
}


class Launch:
    """What a launch command says."""

    def __init__(self):
        self.launcher = None        # deepspeed, torchrun, accelerate, python, llamafactory-cli, trl
        self.world_size = None
        self.world_source = None
        self.program = None         # module or script path
        self.program_args = {}      # --flag -> value (True for bare flags); key=value overrides too
        self.positional = []        # the program's positional arguments (a Llama-Factory YAML)
        self.accelerate = {}        # accelerate launch's own DeepSpeed/precision flags
        self.config_files = []      # files the launcher was told to read (accelerate --config_file)
        self.env = {}
        self.via_sftrl_launch = False  # started through sftrl_patches.launch (patches armed in every rank)
        self.not_understood = None     # why the command could not be read (an unknown launcher), or None


def _int(value, what):
    """A launcher's count: the audit's one integer reader, and "auto" is no count here."""
    where = f"launch command: {what}"
    number = as_int(value, where)
    if number is None:
        raise InputError(f"{where}: expected a whole number, got {value!r}")
    return number


def _launcher_options(tokens, flags, launcher):
    """Split `tokens` into the launcher's options and the rest (which starts with the program)."""
    options, index = {}, 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("-") or token == "--":
            break
        name, _, inline = token.partition("=")
        key = "--" + name[2:].replace("-", "_") if name.startswith("--") else name
        if key not in flags and name not in flags:
            raise InputError(f"launch command: {launcher}: unknown flag {name}")
        takes_value = flags.get(key, flags.get(name))
        if takes_value and not inline:
            if index + 1 >= len(tokens):
                raise InputError(f"launch command: {launcher}: {name} needs a value")
            options[key] = tokens[index + 1]
            index += 2
        else:
            options[key] = inline or True
            index += 1
        if key in ("--module", "-m") and launcher != "deepspeed":
            break  # the next token is the module
    if index < len(tokens) and tokens[index] == "--":
        index += 1
    return options, tokens[index:]


def _program_flags(tokens):
    """--name value / --name=value / --flag, and key=value overrides (llamafactory-cli)."""
    flags, positional, index = {}, [], 0
    while index < len(tokens):
        token = tokens[index]
        if token.startswith("--") and len(token) > 2:
            name, eq, inline = token[2:].partition("=")
            if eq:
                flags[name] = inline
                index += 1
                continue
            values = []
            index += 1
            while index < len(tokens) and not (tokens[index].startswith("--") and len(tokens[index]) > 2):
                values.append(tokens[index])
                index += 1
            flags[name] = True if not values else (values[0] if len(values) == 1 else values)
        else:
            if re.match(r"^[A-Za-z_][\w.]*=", token):
                name, _, value = token.partition("=")
                flags[name] = value
            else:
                positional.append(token)
            index += 1
    return flags, positional


def _program(launch, tokens):
    """tokens start at the interpreter, the module flag or the program itself."""
    if tokens and re.match(r"^(.*/)?python[0-9.]*$", tokens[0]):
        tokens = tokens[1:]
        while tokens and tokens[0].startswith("-") and tokens[0] not in ("-m",):
            tokens = tokens[1:]  # interpreter switches (-u, -O)
    if tokens and tokens[0] in ("-m", "--module"):
        tokens = tokens[1:]
    if not tokens:
        raise InputError("launch command: no program to run")
    launch.program = tokens[0]
    if launch.program == "sftrl_patches.launch" or launch.program.endswith("sftrl_patches/launch.py"):
        # This package's wrapper: the program it runs comes next (after options a launcher put first).
        rest = [t for t in tokens[1:] if not t.startswith(("--local_rank", "--local-rank"))]
        launch.via_sftrl_launch = True
        _program(launch, rest)
        return
    if launch.program in ("torch.distributed.run", "torch.distributed.launch"):
        _torchrun(launch, tokens[1:])
        return
    launch.program_args, launch.positional = _program_flags(tokens[1:])


def _torchrun(launch, tokens):
    options, rest = _launcher_options(tokens, _TORCHRUN_FLAGS, "torchrun")
    launch.launcher = "torchrun"
    per_node = options.get("--nproc_per_node")
    nodes = options.get("--nnodes", "1")
    if per_node not in (None, "auto", "gpu", "cpu", "xpu") and ":" not in str(nodes):
        launch.world_size = _int(per_node, "--nproc_per_node") * _int(nodes, "--nnodes")
        launch.world_source = "torchrun --nproc_per_node x --nnodes"
    if options.get("-m") or options.get("--module"):
        rest = ["-m"] + rest
    _program(launch, rest)


def _deepspeed(launch, tokens):
    options, rest = _launcher_options(tokens, _DEEPSPEED_FLAGS, "deepspeed")
    launch.launcher = "deepspeed"
    nodes = _int(options.get("--num_nodes", "1"), "--num_nodes")
    if "--num_gpus" in options:
        launch.world_size = _int(options["--num_gpus"], "--num_gpus") * nodes
        launch.world_source = "deepspeed --num_gpus x --num_nodes"
    elif "--include" in options and nodes == 1:
        slots = re.findall(r"(?::|,)(\d+)", options["--include"])
        if slots:
            launch.world_size = len(slots)
            launch.world_source = "deepspeed --include"
    if options.get("--module"):
        rest = ["-m"] + rest
    _program(launch, rest)


def _accelerate(launch, tokens):
    if not tokens or tokens[0] != "launch":
        raise InputError("launch command: accelerate: only `accelerate launch` starts training")
    options, rest = _launcher_options(tokens[1:], _ACCELERATE_FLAGS, "accelerate launch")
    launch.launcher = "accelerate"
    if "--num_processes" in options:
        launch.world_size = _int(options["--num_processes"], "--num_processes")
        launch.world_source = "accelerate launch --num_processes"
    if "--config_file" in options:
        launch.config_files.append(options["--config_file"])
    for name in ("--zero_stage", "--offload_optimizer_device", "--gradient_accumulation_steps",
                 "--mixed_precision", "--deepspeed_config_file", "--use_deepspeed"):
        if name in options:
            launch.accelerate[name[2:]] = options[name]
    if options.get("-m") or options.get("--module"):
        rest = ["-m"] + rest
    _program(launch, rest)


def parse_command(tokens):
    """A Launch from the words after `--`."""
    launch = Launch()
    tokens = list(tokens)
    while tokens and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", tokens[0]):
        name, _, value = tokens.pop(0).partition("=")
        launch.env[name] = value
    if not tokens:
        raise InputError("launch command: empty")
    head = os.path.basename(tokens[0])
    if head == "ray" and tokens[1:2] == ["job"]:
        if "--" not in tokens:
            raise InputError("launch command: ray job submit: expected `-- python ...` after Ray's options")
        return parse_command(tokens[tokens.index("--") + 1:]) if not launch.env else _with_env(
            parse_command(tokens[tokens.index("--") + 1:]), launch.env)
    if head == "deepspeed":
        _deepspeed(launch, tokens[1:])
    elif head == "torchrun":
        _torchrun(launch, tokens[1:])
    elif head == "accelerate":
        _accelerate(launch, tokens[1:])
    elif head in ("llamafactory-cli", "lmf"):
        if tokens[1:2] != ["train"]:
            raise InputError("launch command: llamafactory-cli: only `llamafactory-cli train` trains")
        launch.launcher = "llamafactory-cli"
        launch.program = "llamafactory-cli train"
        launch.program_args, launch.positional = _program_flags(tokens[2:])
        nproc = launch.env.get("NPROC_PER_NODE")
        if nproc:
            launch.world_size = _int(nproc, "NPROC_PER_NODE") * _int(launch.env.get("NNODES", "1"), "NNODES")
            launch.world_source = "NPROC_PER_NODE x NNODES"
    elif head == "trl":
        launch.launcher = "trl"
        launch.program = "trl " + (tokens[1] if len(tokens) > 1 else "")
        launch.program_args, launch.positional = _program_flags(tokens[2:])
    elif re.match(r"^(.*/)?python[0-9.]*$", tokens[0]) or tokens[0].endswith(".py"):
        launch.launcher = "python"
        _program(launch, tokens)
    else:
        near = closest(head, KNOWN_LAUNCHERS)
        launch.not_understood = (f"launch command: {head!r} is not a launcher this audit reads"
                                 + (f" (did you mean {near!r}?)" if near else "")
                                 + f"; it reads {', '.join(KNOWN_LAUNCHERS)}, python and *.py scripts")
    return launch


KNOWN_LAUNCHERS = ("deepspeed", "torchrun", "accelerate", "llamafactory-cli", "lmf", "trl", "ray")


def _with_env(launch, env):
    launch.env = {**env, **launch.env}
    return launch


def program_kind(launch):
    """openrlhf-sft, openrlhf-ppo, llamafactory, trl, or None (a script we cannot name)."""
    if launch.program is None:
        return None
    program = launch.program.replace("/", ".")
    if program.endswith(".py"):
        program = program[:-3]
    if "openrlhf.cli.train_sft" in program:
        return "openrlhf-sft"
    if "openrlhf.cli.train_ppo" in program:
        return "openrlhf-ppo"
    if launch.launcher == "llamafactory-cli" or "llamafactory" in program:
        return "llamafactory"
    if launch.launcher == "trl" or program.startswith("trl.") or ".trl.scripts." in program:
        return "trl"
    return None
