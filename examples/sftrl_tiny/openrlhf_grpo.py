"""GRPO with OpenRLHF's own `openrlhf.cli.train_ppo_ray`, on a CPU: group-normalised advantages,
8 rollouts per prompt, the rule-based Math-Verify reward as a reward file (--remote_rm_url),
ZeRO-2 with Adam offloaded to CPU, no critic, no KL, the paper's clip range. Meant for the paper's
release, OpenRLHF 0.9.10; the flags follow the installed release's style.

What runs is OpenRLHF's CLI module as __main__, unchanged, on a local Ray cluster started first
(examples/openrlhf_cpu/ray_cpu.py: fake GPUs, every worker prepared for the CPU): one actor rank,
one rollout engine from the working vLLM stand-in (HF generate, weights synced over gloo after
every training step). The patches reach the Ray actors through autoload; set
SFTRL_PATCHES_DISABLE to switch them off. Around it this script adds only what the tiny demo
reads: --out/metrics.jsonl (one line per RL step: reward, loss, grad norm, ...), --out/run.json
(versions, and the patch states reported inside the actor process) and the model in --out.

    python -m examples.sftrl_tiny.openrlhf_grpo --model SFT --data DATA --out OUT
"""
import argparse
import json
import os
import runpy
import sys

from .loading import load_rows
from .run_files import report_events

HERE = os.path.dirname(os.path.abspath(__file__))
REWARD_FILE = os.path.join(os.path.dirname(HERE), "recipes", "openrlhf_reward.py")


# What stops OpenRLHF's dynamic batching on a CPU, in 0.9.10 to 0.11.2. This driver is CPU-only (stand-in
# vLLM, torch.cuda no-ops): on GPUs, examples/recipes/openrlhf.py is the recipe.
CPU_DYNAMIC_BATCH = (
    "--dynamic-batch cannot run on a CPU: train_ppo_ray turns --use_dynamic_batch into --packing_samples, which "
    "sets --attn_implementation flash_attention_2 (0.9.10: openrlhf/cli/train_ppo_ray.py lines 565-578), and "
    "flash-attn is CUDA-only: the actor's from_pretrained raises ImportError in transformers' "
    "_flash_attn_can_dispatch. cli_argv() still writes its flags, which tests check against OpenRLHF's parser")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the SFT checkpoint (a model folder)")
    parser.add_argument("--data", required=True, help="a folder with train.jsonl, or a jsonl file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=8, help="generation rounds (--mini-batches optimizer steps each)")
    parser.add_argument("--prompts-per-step", type=int, default=4, help="prompts per generation round")
    parser.add_argument("--num-generations", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--mini-batches", type=int, default=2, help="optimizer steps per generation round")
    parser.add_argument("--micro-batch", type=int, default=4, help="sequences per backward (GA = the rest)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="OpenRLHF's --use_dynamic_batch: refused, it cannot run on a CPU (says why)")
    parser.add_argument("--max-tokens-per-micro-batch", type=int, default=256,
                        help="with --dynamic-batch: token budget of a micro-batch")
    parser.add_argument("--reward-file", default=REWARD_FILE,
                        help="OpenRLHF's --remote_rm_url: a .py file with reward_func(queries, prompts, labels)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flag-style", choices=("auto", "flat", "dotted"), default="auto",
                        help="flat: OpenRLHF <= 0.10.1 (the paper's 0.9.10); dotted: >= 0.10.2")
    args = parser.parse_args(argv)
    for name in ("steps", "prompts_per_step", "num_generations", "mini_batches", "micro_batch", "max_new_tokens"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.num_generations < 2:
        parser.error("--num-generations must be >= 2 (group-normalised advantages need a group)")
    if not (args.reward_file.endswith(".py") and os.path.isfile(args.reward_file)):
        parser.error(f"--reward-file {args.reward_file}: not a .py file")
    args.reward_file = os.path.abspath(args.reward_file)
    if args.dynamic_batch:
        parser.error(CPU_DYNAMIC_BATCH)
    rollouts = args.prompts_per_step * args.num_generations
    if rollouts % args.mini_batches or (rollouts // args.mini_batches) % args.micro_batch:
        parser.error(f"{rollouts} rollouts per round must split into --mini-batches {args.mini_batches} of whole "
                     f"--micro-batch {args.micro_batch}")
    return args


def write_prompts(data, path):
    """OpenRLHF's prompt data set: the chat prompt and the ground truth as a plain `answer` field."""
    rows = load_rows(data, "train")
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"prompt": row["prompt"], "answer": row["reward_model"]["ground_truth"]}) + "\n")
    return len(rows)


def cli_argv(args, style, prompts):
    """train_ppo_ray's own flags: the recipe's GRPO (examples/recipes/openrlhf.py) scaled down to one
    actor rank and one rollout engine on a CPU."""
    from examples.recipes.openrlhf import DOTTED_PPO, flags
    rollouts = args.prompts_per_step * args.num_generations
    pairs = [("pretrain", args.model), ("prompt_data", prompts), ("input_key", "prompt"), ("label_key", "answer"),
             ("apply_chat_template", True), ("remote_rm_url", args.reward_file),
             ("advantage_estimator", "group_norm"), ("no_advantage_std_norm", True), ("init_kl_coef", 0),
             ("n_samples_per_prompt", args.num_generations), ("rollout_batch_size", args.prompts_per_step),
             ("max_samples", args.steps * args.prompts_per_step), ("num_episodes", 1),
             ("train_batch_size", rollouts // args.mini_batches), ("micro_train_batch_size", args.micro_batch),
             ("micro_rollout_batch_size", args.micro_batch), ("actor_learning_rate", args.lr),
             ("temperature", args.temperature), ("max_new_tokens", args.max_new_tokens),
             ("max_len", 1024), ("eps_clip_low_high", (0.2, 0.28)),
             ("zero_stage", 2), ("adam_offload", True), ("param_dtype", "bf16"), ("attn_implementation", "eager"),
             ("actor_num_nodes", 1), ("actor_num_gpus_per_node", 1), ("vllm_num_engines", 1),
             ("vllm_tensor_parallel_size", 1), ("vllm_sync_backend", "gloo"), ("enforce_eager", True),
             ("save_path", args.out), ("logging_steps", 1), ("seed", args.seed),
             # the metrics channel: ray_cpu turns OpenRLHF's TensorBoard logger into metrics.jsonl
             ("use_tensorboard", os.path.join(args.out, "tensorboard"))]
    if args.dynamic_batch:
        pairs += [("use_dynamic_batch", True), ("train_max_tokens_per_gpu", args.max_tokens_per_micro_batch),
                  ("rollout_max_tokens_per_gpu", args.max_tokens_per_micro_batch)]
    return flags(pairs, style, DOTTED_PPO)


def actor_facts(report):
    """Versions and patch states as the actor process reported them (SFTRL_PATCHES_REPORT)."""
    events = report_events(report)
    actor = next((e for e in events if e["event"] == "openrlhf-ppo"), None)  # the actor's trainer
    same_process = [e for e in events if actor and e["pid"] == actor["pid"]]
    engine = next((e for e in same_process if e["event"] == "deepspeed"), None)
    patches = {}
    for event in same_process:
        patches.update(event["patches"])
    return {"deepspeed": engine["run"]["versions"].get("deepspeed") if engine else None,
            "patches": patches, "actor_pid": actor["pid"] if actor else None,
            "run": actor["run"] if actor else None, "reporting_processes": sorted({e["pid"] for e in events})}


def main(argv=None):
    args = parse_args(argv)
    from examples.openrlhf_cpu import ray_cpu
    from examples.recipes.openrlhf import installed_style
    style = installed_style() if args.flag_style == "auto" else args.flag_style
    os.makedirs(args.out, exist_ok=True)
    prompts = os.path.abspath(os.path.join(args.out, "prompts.jsonl"))
    available = write_prompts(args.data, prompts)
    if available < args.steps * args.prompts_per_step:
        raise SystemExit(f"openrlhf_grpo: {args.steps} steps x {args.prompts_per_step} prompts need "
                         f"{args.steps * args.prompts_per_step} prompts; {args.data} has {available}")
    argv_for_cli = cli_argv(args, style, prompts)
    metrics, report = (os.path.abspath(os.path.join(args.out, name)) for name in ("metrics.jsonl", "run_report.jsonl"))
    for stale in (metrics, report):
        if os.path.exists(stale):
            os.remove(stale)
    os.environ.update({ray_cpu.METRICS_VAR: metrics, "SFTRL_PATCHES_REPORT": report,
                       "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")})
    ray_cpu.worker_setup()  # this driver imports OpenRLHF too
    ray = ray_cpu.start(num_gpus=2)  # one actor rank, one engine
    try:
        sys.argv = ["openrlhf.cli.train_ppo_ray"] + argv_for_cli
        runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
    finally:
        ray.shutdown()
    from importlib import metadata
    facts = {"args": vars(args), "openrlhf": metadata.version("openrlhf"), "cli": argv_for_cli, "driver_pid": os.getpid(),
             "SFTRL_PATCHES_DISABLE": os.environ.get("SFTRL_PATCHES_DISABLE"), **actor_facts(report)}
    with open(os.path.join(args.out, "run.json"), "w", encoding="utf-8") as handle:
        json.dump(facts, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
