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
    "relift": {"buffer_capacity": 1024, "entropy_coef": 0.001},
    "hpt": {"gate": 0.0, "entropy_coef": 0.001},
    "prefix_rft": {"prefixed_rollouts": 2, "prefix_ratio_min": 0.1, "prefix_ratio_max": 0.9, "entropy_coef": 0.001},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("method", choices=list(OPTIONS))
    common.add_common_arguments(parser, "ckpt/mixed_policy")
    return parser.parse_args(argv)


def option_flags(method):
    """OPTIONS[method] as examples.mixed_policy.train flags (the tiny comparison passes them too)."""
    flags = []
    for name, value in OPTIONS[method].items():
        flags += ["--" + name.replace("_", "-"), str(value).lower() if isinstance(value, bool) else str(value)]
    return flags


def command(args):
    paper = common.PAPER_RL
    flags = option_flags(args.method)
    return trl.launch(trl.write_configs(args, offload=False)) + [
        "examples.mixed_policy.train", "--method", args.method, "--model", common.model_name(args.model),
        "--data", args.data, "--out", os.path.join(args.out, args.method),
        "--steps", str(paper["steps"] * paper["prompts"] // paper["mini_batch"]),
        "--prompts-per-step", str(paper["prompts"]), "--num-generations", str(paper["rollouts"]),
        "--mini-batches", str(paper["prompts"] // paper["mini_batch"]), "--lr", str(paper["lr"]),
        "--temperature", str(paper["temperature"]), "--max-completion-length", str(paper["max_response"]),
        "--epsilon", str(paper["clip_low"]), "--epsilon-high", str(paper["clip_high"]), "--use-vllm", "--bf16",
        "--seed", str(args.seed), *flags]


def main(argv=None):
    args = parse_args(argv)
    return common.finish(command(args), common.environment(args.as_published), args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
