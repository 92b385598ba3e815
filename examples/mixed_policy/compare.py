"""Corrected SFT-then-RL against the mixed-policy methods on the tiny CPU task, like the paper's
Table 1 in miniature: every run starts from the same pretrained base model, trains on the same
generated problems (with their expert solutions) and is evaluated the same way.

    sft_rl_buggy   SFT (DeepSpeed ZeRO-2 offload, patches off) then GRPO   (examples.sftrl_tiny)
    sft_rl_fixed   the same with the patches on
    luffy, srft, relift, hpt, prefix_rft   one RL-stage run each from the base model

Each run reports its training FLOPs by the paper's accounting (6ND per SFT token, 8ND per
generated token, 6ND per expert token in an RL batch). Writes results.md (accuracy ± std over
seeds, FLOPs), results.json and accuracy_vs_flops.png to --out.

    python -m examples.mixed_policy.compare --out examples/mixed_policy/results
"""
import json
import os
import sys
import time

from examples.sftrl_tiny import data, demo
from examples.sftrl_tiny.loading import load_rows

from . import flops as flops_module
from .methods import METHODS

BASELINES = {"sft_rl_buggy": "buggy", "sft_rl_fixed": "fixed"}
MIXED = [name for name in METHODS if name != "grpo"]
DEFAULTS = dict(method_steps=200, method_lr=5e-4)
SMOKE = dict(method_steps=4)


def parse_args(argv=None):
    return demo.parse_comparison_args(argv, __doc__, "results/mixed_policy", list(BASELINES) + MIXED,
                                      {**demo.DEFAULTS, **DEFAULTS}, demo.SMOKE | SMOKE)[1]


def response_tokens(data_folder, tokenizer_folder):
    """Expert-solution tokens of the training split (content + EOS), what one SFT epoch trains on."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    rows = load_rows(data_folder, "train")
    return sum(len(tokenizer(data.expert_solution(row), add_special_tokens=False)["input_ids"]) + 1
               for row in rows)


def rl_generated_tokens(metrics_path, rollouts_per_round):
    """Generated tokens of a TRL GRPO run: mean completion length x rollouts, per generation round."""
    with open(metrics_path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    return sum(row["completions/mean_length"] * rollouts_per_round for row in rows if "completions/mean_length" in row)


def sft_then_rl(args, name, seed, port, threads, progress, parameters, sft_tokens):
    record = demo.pipeline(args, BASELINES[name], seed, port, threads, progress)
    folder = os.path.join(args.out, "runs", f"{BASELINES[name]}-seed{seed}")
    generated = rl_generated_tokens(os.path.join(folder, "rl", "metrics.jsonl"), args.grpo_prompts * 8)
    counter = flops_module.FlopsCounter(parameters)
    counter.add("sft", sft_tokens)
    counter.add("on_policy", generated)
    return {"config": name, "seed": seed, "accuracy": record["acc_rl"], "accuracy_sft": record["acc_sft"],
            "flops": counter.total, "tokens": counter.tokens, "patch": record["patch"],
            "seconds": record["sft_s"] + record["grpo_s"]}


def mixed_policy(args, name, seed, port, threads, progress):
    folder = os.path.join(args.out, "runs", f"{name}-seed{seed}")
    os.makedirs(folder, exist_ok=True)
    env = demo.child_env(threads)
    started = time.time()
    demo.run([sys.executable, "-m", "examples.mixed_policy.train", "--method", name,
              "--model", os.path.join(args.out, "base"), "--data", os.path.join(args.out, "data"),
              "--out", os.path.join(folder, "model")] + demo.rl_round_flags(args, args.method_steps, args.method_lr, seed),
             os.path.join(folder, "train.log"), env)
    seconds = time.time() - started
    demo.run(demo.evaluation_command(args, seed, os.path.join(folder, "model"), os.path.join(folder, "eval.json")),
             os.path.join(folder, "eval.log"), env)
    with open(os.path.join(folder, "model", "run.json"), encoding="utf-8") as handle:
        counted = json.load(handle)["flops"]
    with open(os.path.join(folder, "eval.json"), encoding="utf-8") as handle:
        accuracy = json.load(handle)["summary"]["accuracy"]
    progress.say(f"{name} seed {seed}: accuracy {accuracy:.3f}, {counted['flops']:.3g} FLOPs, {seconds:.0f} s",
                 finished=True)
    return {"config": name, "seed": seed, "accuracy": accuracy, "flops": counted["flops"],
            "tokens": counted["tokens"], "seconds": seconds}


def runner(args):
    """Made once the base model exists: its parameter count and one SFT epoch's tokens count the FLOPs."""
    from transformers import AutoModelForCausalLM
    parameters = flops_module.parameter_count(AutoModelForCausalLM.from_pretrained(os.path.join(args.out, "base")))
    sft_tokens = response_tokens(os.path.join(args.out, "data"), os.path.join(args.out, "base"))

    def run_one(config, seed, port, threads, progress):
        if config in BASELINES:
            return sft_then_rl(args, config, seed, port, threads, progress, parameters, sft_tokens)
        return mixed_policy(args, config, seed, port, threads, progress)
    return run_one, {"parameters": parameters, "sft_tokens_per_epoch": sft_tokens}


def main(argv=None):
    from . import report
    args = parse_args(argv)
    return demo.run_comparison(args, argv, "examples.mixed_policy.compare", lambda: runner(args), report.write,
                               first_port=29700)


if __name__ == "__main__":
    raise SystemExit(main())
