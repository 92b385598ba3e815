"""Paper-scale OpenRLHF recipes. `sft` is LUFFY's published SFT baseline (ZeRO-2, Adam offload,
batch 64, micro-batch 1, 3 epochs, lr 5e-5): with --as-published exactly as it ran (both bugs),
without it corrected by sftrl_patches. `grpo` runs GRPO from the SFT checkpoint with vLLM through
Ray, with the paper's RL settings. Flags come in the style of the installed OpenRLHF (flat up to
0.10.1, dotted from 0.10.2), or as --flag-style says.

    python -m examples.recipes.openrlhf sft --dry-run
    python -m examples.recipes.openrlhf sft --as-published --dry-run
    python -m examples.recipes.openrlhf grpo --sft-checkpoint ckpt/sft --dry-run
"""
import math
import os

from . import common

# flat (<= 0.10.1) name -> dotted (>= 0.10.2) name, for every flag the recipes use
DOTTED = {
    "pretrain": "model.model_name_or_path", "dataset": "data.dataset", "input_key": "data.input_key",
    "output_key": "data.output_key", "apply_chat_template": "data.apply_chat_template", "max_len": "data.max_len",
    "zero_stage": "ds.zero_stage", "adam_offload": "ds.adam_offload", "train_batch_size": "train.batch_size",
    "micro_train_batch_size": "train.micro_batch_size", "max_epochs": "train.max_epochs",
    "learning_rate": "adam.lr", "lr_warmup_ratio": "lr_warmup_ratio", "lr_scheduler": "lr_scheduler",
    "param_dtype": "ds.param_dtype", "gradient_checkpointing": "model.gradient_checkpointing_enable",
    "attn_implementation": "ds.attn_implementation", "save_path": "ckpt.output_dir",
    "logging_steps": "logger.logging_steps", "seed": "train.seed",
    # GRPO (train_ppo_ray)
    "prompt_data": "data.prompt_dataset", "label_key": "data.label_key", "remote_rm_url": "reward.remote_url",
    "advantage_estimator": "algo.advantage.estimator", "no_advantage_std_norm": "algo.advantage.no_std_norm",
    "n_samples_per_prompt": "rollout.n_samples_per_prompt", "rollout_batch_size": "rollout.batch_size",
    "micro_rollout_batch_size": "rollout.micro_batch_size", 
    "temperature": "rollout.temperature", "max_new_tokens": "rollout.max_new_tokens",
    "eps_clip_low_high": "actor.eps_clip_low_high", "init_kl_coef": "algo.kl.init_coef",
    "num_episodes": "train.num_episodes", "actor_num_nodes": "actor.num_nodes",
    "actor_num_gpus_per_node": "actor.num_gpus_per_node", "vllm_num_engines": "vllm.num_engines",
    "vllm_tensor_parallel_size": "vllm.tensor_parallel_size", "colocate_all_models": "train.colocate_all",
    "vllm_enable_sleep": "vllm.enable_sleep", "deepspeed_enable_sleep": "ds.enable_sleep",
    "vllm_gpu_memory_utilization": "vllm.gpu_memory_utilization",
    # the CPU GRPO (examples/sftrl_tiny/openrlhf_grpo.py)
    "max_samples": "data.max_samples", "vllm_sync_backend": "vllm.sync_backend", "enforce_eager": "vllm.enforce_eager",
    "use_tensorboard": "logger.tensorboard_dir", "use_dynamic_batch": "train.dynamic_batch_enable",
    "train_max_tokens_per_gpu": "train.max_tokens_per_gpu", "rollout_max_tokens_per_gpu": "rollout.max_tokens_per_gpu",
}
# train_ppo_ray puts the model's own flags under the actor group
DOTTED_PPO = {**DOTTED, "pretrain": "actor.model_name_or_path", "actor_learning_rate": "actor.adam.lr",
              "gradient_checkpointing": "actor.gradient_checkpointing_enable"}


def installed_style():
    """'dotted' for OpenRLHF >= 0.10.2, else 'flat' (also when it is not installed here)."""
    from importlib import metadata
    try:
        parts = metadata.version("openrlhf").split(".")[:3]
    except metadata.PackageNotFoundError:
        return "flat"
    numbers = tuple(int("".join(ch for ch in part if ch.isdigit()) or 0) for part in parts)
    return "dotted" if numbers >= (0, 10, 2) else "flat"


def flags(pairs, style, dotted=DOTTED):
    """[(flat name, value)] -> argv; a value of True is a switch, a tuple spreads over several tokens."""
    argv = []
    for name, value in pairs:
        key = name if style == "flat" else dotted[name]
        argv.append("--" + key)
        if value is True:
            continue
        argv += [str(v) for v in value] if isinstance(value, tuple) else [str(value)]
    return argv


def sft_command(args, style):
    paper = common.PAPER_SFT
    common.per_gpu_accumulation(paper["batch_size"], paper["micro_batch"], args.gpus)  # fails early if uneven
    pairs = [("pretrain", common.model_name(args.model)), ("dataset", args.data), ("input_key", "prompt"),
             ("output_key", "target"), ("apply_chat_template", True), ("max_len", paper["max_len"]),
             ("zero_stage", 2), ("adam_offload", True), ("train_batch_size", paper["batch_size"]),
             ("micro_train_batch_size", paper["micro_batch"]), ("max_epochs", paper["epochs"]),
             ("learning_rate", paper["lr"]), ("lr_warmup_ratio", paper["warmup_ratio"]),
             ("lr_scheduler", "cosine_with_min_lr"), ("param_dtype", "bf16"), ("gradient_checkpointing", True),
             ("attn_implementation", "flash_attention_2"), ("save_path", os.path.join(args.out, "sft")),
             ("logging_steps", 1), ("seed", args.seed)]
    return ["deepspeed", "--num_gpus", str(args.gpus), "--module", "sftrl_patches.launch",
            "openrlhf.cli.train_sft"] + flags(pairs, style)


def grpo_command(args, style, prompts_in_data=46000):
    paper = common.PAPER_RL
    rounds_per_episode = prompts_in_data / paper["prompts"]
    pairs = [("pretrain", args.sft_checkpoint), ("prompt_data", args.data), ("input_key", "prompt"),
             ("label_key", "answer"), ("apply_chat_template", True),
             ("remote_rm_url", os.path.join(os.path.dirname(os.path.abspath(__file__)), "openrlhf_reward.py")),
             ("advantage_estimator", "group_norm"), ("no_advantage_std_norm", True), ("init_kl_coef", 0),
             ("n_samples_per_prompt", paper["rollouts"]), ("rollout_batch_size", paper["prompts"]),
             ("train_batch_size", paper["mini_batch"] * paper["rollouts"]), ("micro_train_batch_size", 1),
             ("micro_rollout_batch_size", 4), ("actor_learning_rate", paper["lr"]),
             ("temperature", paper["temperature"]), ("max_new_tokens", paper["max_response"]),
             ("max_len", paper["max_prompt"] + paper["max_response"]),
             ("eps_clip_low_high", (paper["clip_low"], paper["clip_high"])),
             # OpenRLHF has no step limit: enough episodes for 500 rounds of 128 prompts; stop at 500
             ("num_episodes", math.ceil(paper["steps"] / rounds_per_episode)),
             ("zero_stage", 2), ("adam_offload", True), ("param_dtype", "bf16"), ("gradient_checkpointing", True),
             ("actor_num_nodes", 1), ("actor_num_gpus_per_node", args.gpus),
             ("vllm_num_engines", args.gpus // 2), ("vllm_tensor_parallel_size", 2), ("colocate_all_models", True),
             ("vllm_enable_sleep", True), ("deepspeed_enable_sleep", True), ("vllm_gpu_memory_utilization", 0.6),
             ("save_path", os.path.join(args.out, "grpo")), ("logging_steps", 1), ("seed", args.seed)]
    return common.python_module("sftrl_patches.launch", "openrlhf.cli.train_ppo_ray") + flags(pairs, style, DOTTED_PPO)


def main(argv=None):
    parser, stages = common.stage_parser(__doc__, "ckpt/openrlhf")
    for stage_parser in stages.values():
        stage_parser.add_argument("--flag-style", choices=("auto", "flat", "dotted"), default="auto",
                                  help="flat: OpenRLHF <= 0.10.1 (the paper's 0.9.10); dotted: >= 0.10.2")
    args = parser.parse_args(argv)
    if args.gpus % 2 and args.stage == "grpo":
        parser.error("--gpus must be even (vLLM engines use tensor parallel 2)")
    style = installed_style() if args.flag_style == "auto" else args.flag_style
    command = sft_command(args, style) if args.stage == "sft" else grpo_command(args, style)
    return common.finish(command, common.environment(args.as_published), args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
