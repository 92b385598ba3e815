"""Paper-scale TRL recipes for the mixed-policy methods: examples/mixed_policy/train.py (a TRL
GRPOTrainer subclass per method) under `accelerate launch` with DeepSpeed ZeRO-2 and vLLM
colocated, from the base model (these methods have no SFT stage), on OpenR1-Math-46k-8192 with
the paper's RL settings (128 prompts x 8 rows, mini-batch 64, lr 1e-6, temperature 1.0, 8192
response tokens, clip 0.2/0.28, no KL, 500 rounds) and each method's own options.

None of these methods maps onto OpenRLHF's command line: each needs its own batch composition
(expert rows in a group, a failed-question buffer, prefix continuation) inside the trainer, which
OpenRLHF exposes no hook for. The SFT-then-RL baseline runs on OpenRLHF: examples.recipes.openrlhf.

    python -m examples.recipes.mixed_policy luffy --dry-run
"""
import argparse
import os

from . import common, trl

# Method options at paper scale, as the method's paper or script sets them (see docs/mixed-policy.md).
# The entropy bonus and LUFFY's baseline are the authors' published values (docs/mixed-policy-fidelity.md;
# SRFT's from reports of its script, which could not be read here).
OPTIONS = {
    "luffy": {"shaping_gamma": 0.1, "off_policy_traces": 1, "clip_on_policy": False, "baseline": "group",
              "entropy_coef": 0.001},
    "srft": {"sft_weight_scale": 0.5, "rl_weight_scale": 0.1, "demonstrations": 1, "entropy_coef": 0.001},
    "relift": {"buffer_capacity": 0, "sft_mode": "add", "sft_questions": 128, "clip_on_policy": False,
               "entropy_coef": 0.001},
    "hpt": {"gate": 0, "clip_on_policy": False, "entropy_coef": 0.001},
    # Prefix-RFT publishes no run configuration: the schedule (95% -> 5%, cosine) and the top-20% entropy
    # share of the prefix tokens are the paper's as summaries report them, unverified here.
    "prefix_rft": {"prefixed_rollouts": 2, "prefix_ratio_min": 0.05, "prefix_ratio_max": 0.95,
                   "prefix_schedule": "cosine", "prefix_ratio_max_end": 0.05, "prefix_entropy_share": 0.2,
                   "entropy_coef": 0.001},
    # BRIDGE's authors' code could not be read from here and its paper's values are not known here: the
    # penalty (SFT weight 1/lambda below, gain weight lambda above), one expert trace in a group of 8 (LUFFY's
    # layout) and the entropy bonus of the other rows are this repository's choices, unverified.
    "bridge": {"penalty": 1.0, "sft_traces": 1, "lora_rank": 8, "lora_alpha": 16.0, "entropy_coef": 0.001},
}
# Methods of the tiny comparison only: BRIDGE's upper level has an optimizer of its own over the adapter, in one
# process, which this recipe's DeepSpeed ZeRO-2 launch leaves no room for.
TINY_ONLY = ("bridge",)
# Where a run under DeepSpeed ZeRO cannot take the authors' option: ReLIFT's extra SFT step needs an
# optimizer of its own, and ZeRO's owns the master weights.
UNDER_DEEPSPEED = {"relift": {"sft_mode": "round"}}
# Rows a method's group adds to the paper's 8 rollouts: HPT's expert trace sits beside 8 rollouts in
# its authors' code (LUFFY's takes one of the 8).
EXTRA_ROWS = {"hpt": 1}
# Learning rates the authors' scripts set where they differ from the paper's RL (1e-6).
LEARNING_RATES = {"hpt": 5e-6}


def group_size(method, rollouts=8):
    """num_generations for a method whose authors sample `rollouts` per question."""
    return rollouts + EXTRA_ROWS.get(method, 0)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("method", choices=[m for m in OPTIONS if m not in TINY_ONLY])
    common.add_common_arguments(parser, "ckpt/mixed_policy")
    return parser.parse_args(argv)


def option_flags(method, **overrides):
    """OPTIONS[method], updated by `overrides`, as examples.mixed_policy.train flags (the tiny
    comparison passes them too)."""
    flags = []
    for name, value in {**OPTIONS[method], **overrides}.items():
        flags += ["--" + name.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def command(args):
    paper = common.PAPER_RL
    flags = option_flags(args.method, **UNDER_DEEPSPEED.get(args.method, {}))
    return trl.launch(trl.write_configs(args, offload=False)) + [
        "examples.mixed_policy.train", "--method", args.method, "--model", common.model_name(args.model),
        "--data", args.data, "--out", os.path.join(args.out, args.method),
        "--steps", str(paper["steps"] * paper["prompts"] // paper["mini_batch"]),
        "--prompts-per-step", str(paper["prompts"]),
        "--num-generations", str(group_size(args.method, paper["rollouts"])),
        "--mini-batches", str(paper["prompts"] // paper["mini_batch"]),
        "--lr", str(LEARNING_RATES.get(args.method, paper["lr"])),
        "--temperature", str(paper["temperature"]), "--max-completion-length", str(paper["max_response"]),
        "--epsilon", str(paper["clip_low"]), "--epsilon-high", str(paper["clip_high"]), "--use-vllm", "--bf16",
        "--seed", str(args.seed), *flags]


def main(argv=None):
    args = parse_args(argv)
    return common.finish(command(args), common.environment(args.as_published), args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
