"""GRPO with TRL's GRPOTrainer from an SFT checkpoint, rewarded by the rule-based
examples.sftrl_tiny.reward (last \\boxed{} equal to the ground truth under Math-Verify).

The paper's RL settings, scaled down by flags: P prompts x G rollouts per generation round, split
into mini-batches (one optimizer step each; --steps counts optimizer steps), temperature 1.0,
clip 0.2 / 0.28, token-level loss over the whole batch (loss_type "dapo"), no KL, no std
normalisation, constant learning rate.
Writes the model to --out and one JSON line per step (reward, loss, ...) to --out/metrics.jsonl.
"""
import argparse
import os

from . import run_files
from .loading import to_prompt_only
from .reward import accuracy_reward


def build_parser(description=__doc__.split("\n\n")[0]):
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", required=True, help="the SFT checkpoint")
    parser.add_argument("--data", required=True, help="a jsonl file, a folder with train.jsonl, or a hub data set")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-samples", type=int, default=None, help="use only the first N prompts")
    parser.add_argument("--steps", type=int, default=500, help="optimizer steps")
    parser.add_argument("--prompts-per-step", type=int, default=128, help="prompts per generation round")
    parser.add_argument("--num-generations", type=int, default=8, help="rollouts per prompt")
    parser.add_argument("--mini-batches", type=int, default=2, help="optimizer steps per generation round")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-completion-length", type=int, default=8192)
    parser.add_argument("--epsilon", type=float, default=0.2)
    parser.add_argument("--epsilon-high", type=float, default=0.28)
    parser.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU; colocated)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--checkpoint-every", type=int, default=0,
                        help="save the model every N optimizer steps into --out/checkpoint-<i>, listed in "
                             "checkpoints.jsonl (0: only at the end)")
    return parser


def step_checkpoints(trainer, args):
    """The callback behind --checkpoint-every (None without it)."""
    if args.checkpoint_every <= 0:
        return None
    from .checkpoints import marks_callback
    marks = range(args.checkpoint_every, args.steps, args.checkpoint_every)
    return marks_callback(trainer, args.out, marks, lambda state: state.global_step)


def add_callback(trainer, callback):
    if callback is not None:
        trainer.add_callback(callback)


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def grpo_config(args, config_class=None, **extra):
    """The GRPOConfig of these arguments; a method passes its own GRPOConfig subclass and fields."""
    if config_class is None:
        from trl import GRPOConfig as config_class
    completions = args.prompts_per_step * args.num_generations
    processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate / torchrun
    if completions % (args.mini_batches * processes):
        raise SystemExit(f"error: {completions} rollouts per round do not split into {args.mini_batches} "
                         f"mini-batches over {processes} processes")
    return config_class(
        output_dir=args.out, seed=args.seed, max_steps=args.steps, learning_rate=args.lr,
        lr_scheduler_type="constant", per_device_train_batch_size=completions // (args.mini_batches * processes),
        gradient_accumulation_steps=1, steps_per_generation=args.mini_batches,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        temperature=args.temperature, beta=0.0, epsilon=args.epsilon, epsilon_high=args.epsilon_high,
        loss_type="dapo", scale_rewards="none", use_vllm=args.use_vllm, vllm_mode="colocate",
        bf16=args.bf16, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, **extra)


def main(argv=None):
    args = parse_args(argv)
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    dataset, logger = run_files.start(args, to_prompt_only)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    trainer = GRPOTrainer(model=args.model, reward_funcs=accuracy_reward, args=grpo_config(args),
                          train_dataset=dataset, processing_class=tokenizer, callbacks=[logger])
    add_callback(trainer, step_checkpoints(trainer, args))
    run_files.train_and_save(trainer, tokenizer, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
