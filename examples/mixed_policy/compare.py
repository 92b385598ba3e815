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
import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from examples.sftrl_tiny import data, demo
from examples.sftrl_tiny.loading import load_rows

from . import flops as flops_module
from .methods import METHODS

BASELINES = {"sft_rl_buggy": "buggy", "sft_rl_fixed": "fixed"}
MIXED = [name for name in METHODS if name != "grpo"]
DEFAULTS = dict(method_steps=200, method_lr=5e-4)
SMOKE = dict(method_steps=4)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--out", default="results/mixed_policy", help="results folder (created)")
    parser.add_argument("--configs", nargs="+", choices=list(BASELINES) + MIXED, default=list(BASELINES) + MIXED)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one CPU thread each)")
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything (CI)")
    for name, value in {**demo.DEFAULTS, **DEFAULTS}.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None, help=f"default {value}")
    args = parser.parse_args(argv)
    for name, value in {**demo.DEFAULTS, **DEFAULTS, **((demo.SMOKE | SMOKE) if args.smoke else {})}.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    demo.check_settings(parser, args)
    return args


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


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    jobs = [(config, seed) for seed in args.seeds for config in args.configs]
    progress = demo.Progress(len(jobs))
    started = time.time()
    demo.prepare(args, progress)
    from transformers import AutoModelForCausalLM
    parameters = flops_module.parameter_count(AutoModelForCausalLM.from_pretrained(os.path.join(args.out, "base")))
    sft_tokens = response_tokens(os.path.join(args.out, "data"), os.path.join(args.out, "base"))
    lanes = min(args.parallel, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // lanes)
    with ThreadPoolExecutor(lanes) as pool:
        futures = []
        for index, (config, seed) in enumerate(jobs):
            if config in BASELINES:
                futures.append(pool.submit(sft_then_rl, args, config, seed, 29700 + index, threads, progress,
                                           parameters, sft_tokens))
            else:
                futures.append(pool.submit(mixed_policy, args, config, seed, 29700 + index, threads, progress))
        records = [future.result() for future in futures]
    wall = time.time() - started
    command = "python -m examples.mixed_policy.compare " + " ".join(argv if argv is not None else sys.argv[1:])
    from . import report
    report.write(args.out, records, {"command": command.strip(), "wall_s": wall, "settings": vars(args),
                                     "parameters": parameters, "sft_tokens_per_epoch": sft_tokens})
    print(f"done in {wall / 60:.1f} min: {os.path.join(args.out, 'results.md')}")
    print(open(os.path.join(args.out, "results.md"), encoding="utf-8").read())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
