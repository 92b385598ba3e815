"""Paper-scale TRL recipes: `sft` runs examples/sftrl_tiny/sft.py (TRL's SFTTrainer) under
`accelerate launch` with a ZeRO-2 config that offloads the optimizer to CPU, at the paper's
settings (global batch 64 as micro-batch 1 x GA x GPUs, 3 epochs, lr 5e-5, cosine to 10%,
10% warm-up); `grpo` runs examples/sftrl_tiny/grpo.py (TRL's GRPOTrainer) with vLLM colocated
and the paper's RL settings. The generated accelerate and DeepSpeed configs go to --out.
`sft --sft-loss pear-token|pear-block|pear-seq` (and the --pear-* options) passes PEAR's reweighted
SFT loss through to sft.py (examples/sftrl_tiny/pear.py); plain SFT is the default.

    python -m examples.recipes.trl sft --dry-run
    python -m examples.recipes.trl sft --sft-loss pear-seq --dry-run
    python -m examples.recipes.trl grpo --sft-checkpoint ckpt/trl/sft --dry-run
"""
import json
import os

from . import common
from ..sftrl_tiny import pear

TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sftrl_tiny", "configs")


def deepspeed_config(offload):
    """The tiny demo's config, in bf16 for GPUs."""
    with open(os.path.join(TINY, "zero2_offload.json" if offload else "zero2.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    config["bf16"] = {"enabled": True}
    return config


def accelerate_config(gpus, deepspeed_file):
    return "\n".join([
        "compute_environment: LOCAL_MACHINE", "distributed_type: DEEPSPEED", "deepspeed_config:",
        f"  deepspeed_config_file: {deepspeed_file}", "  zero3_init_flag: false", "machine_rank: 0",
        "main_training_function: main", "num_machines: 1", f"num_processes: {gpus}", "rdzv_backend: static",
        "same_network: true", "use_cpu: false", ""])


def write_configs(args, offload, batch=None):
    """batch: {DeepSpeed key: value} to state instead of "auto" (transformers checks they match its own
    arguments), so the file alone says what the run did: `sftrl-doctor audit` reads it."""
    os.makedirs(args.out, exist_ok=True)
    name = "zero2_offload" if offload else "zero2"
    deepspeed_file = os.path.abspath(os.path.join(args.out, f"{name}.json"))
    with open(deepspeed_file, "w", encoding="utf-8") as handle:
        json.dump({**deepspeed_config(offload), **(batch or {})}, handle, indent=2)
    accelerate_file = os.path.join(args.out, f"accelerate_{name}.yaml")
    with open(accelerate_file, "w", encoding="utf-8") as handle:
        handle.write(accelerate_config(args.gpus, deepspeed_file))
    return accelerate_file


def launch(accelerate_file):
    return ["accelerate", "launch", "--config_file", accelerate_file, "-m", "sftrl_patches.launch"]


def sft_command(args):
    paper = common.PAPER_SFT
    accumulation = common.per_gpu_accumulation(paper["batch_size"], paper["micro_batch"], args.gpus)
    batch = {"train_micro_batch_size_per_gpu": paper["micro_batch"], "gradient_accumulation_steps": accumulation}
    return launch(write_configs(args, offload=True, batch=batch)) + [
        "examples.sftrl_tiny.sft", "--model", common.model_name(args.model), "--data", args.data,
        "--out", os.path.join(args.out, "sft"), "--epochs", str(paper["epochs"]),
        "--micro-batch", str(paper["micro_batch"]), "--grad-accum", str(accumulation), "--lr", str(paper["lr"]),
        "--warmup-ratio", str(paper["warmup_ratio"]), "--min-lr-rate", str(paper["min_lr_ratio"]),
        "--weight-decay", str(paper["weight_decay"]), "--max-length", str(paper["max_len"]), "--bf16",
        "--seed", str(args.seed), *pear.argv(args)]


def grpo_command(args):
    paper = common.PAPER_RL
    return launch(write_configs(args, offload=False)) + [
        "examples.sftrl_tiny.grpo", "--model", args.sft_checkpoint, "--data", args.data,
        "--out", os.path.join(args.out, "grpo"), "--steps", str(paper["steps"] * 2),
        "--prompts-per-step", str(paper["prompts"]), "--num-generations", str(paper["rollouts"]),
        "--mini-batches", str(paper["prompts"] // paper["mini_batch"]), "--lr", str(paper["lr"]),
        "--temperature", str(paper["temperature"]), "--max-completion-length", str(paper["max_response"]),
        "--epsilon", str(paper["clip_low"]), "--epsilon-high", str(paper["clip_high"]), "--use-vllm", "--bf16",
        "--seed", str(args.seed)]


def main(argv=None):
    parser, stages = common.stage_parser(__doc__, "ckpt/trl")
    pear.add_arguments(stages["sft"])
    args = parser.parse_args(argv)
    if args.stage == "sft":
        pear.check_arguments(stages["sft"], args)
    command = sft_command(args) if args.stage == "sft" else grpo_command(args)
    return common.finish(command, common.environment(args.as_published), args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
