"""What the paper-scale recipes share: the paper's hyperparameters (FACTS.md, "The paper"), the
models and data set, and how a recipe ends: write its files, print the command, run it unless
--dry-run. Every command starts its processes through `sftrl_patches.launch`, so the patches are
armed in every rank even where autoload is not installed; --as-published runs the same command
with SFTRL_PATCHES_DISABLE=1, as the published baselines ran."""
import argparse
import os
import shlex
import subprocess
import sys

MODELS = {"qwen2.5-math-7b": "Qwen/Qwen2.5-Math-7B", "llama-3.1-8b": "meta-llama/Llama-3.1-8B"}
DATASET = "Elliott/Openr1-Math-46k-8192"
PAPER_SFT = dict(batch_size=64, micro_batch=1, epochs=3, lr=5e-5, warmup_ratio=0.1, min_lr_ratio=0.1,
                 weight_decay=0.01, betas=(0.9, 0.999), max_len=16384)
PAPER_RL = dict(prompts=128, rollouts=8, mini_batch=64, lr=1e-6, steps=500, temperature=1.0, max_response=8192,
                clip_low=0.2, clip_high=0.28, max_prompt=1024)


def add_common_arguments(parser, default_out):
    parser.add_argument("--model", default="qwen2.5-math-7b",
                        help=f"one of {', '.join(MODELS)} or any hub name / local folder")
    parser.add_argument("--data", default=DATASET, help="hub data set or local jsonl in the same schema")
    parser.add_argument("--gpus", type=int, default=8, help="GPUs on the node")
    parser.add_argument("--out", default=default_out, help="checkpoint and generated-config folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--as-published", action="store_true",
                        help="patches off (SFTRL_PATCHES_DISABLE=1): reproduce the published, buggy baseline")
    parser.add_argument("--dry-run", action="store_true", help="write the configs and print the command only")


def stage_parser(doc, default_out):
    """A parser with `sft` and `grpo` sub-commands, each with the common arguments, and
    --sft-checkpoint for `grpo`; returns (parser, {stage: sub-parser}) for recipe-specific flags."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    sub = parser.add_subparsers(dest="stage", required=True)
    stages = {}
    for stage in ("sft", "grpo"):
        stages[stage] = sub.add_parser(stage)
        add_common_arguments(stages[stage], default_out)
    stages["grpo"].add_argument("--sft-checkpoint", required=True, help="the SFT output folder")
    return parser, stages


def model_name(value):
    return MODELS.get(value, value)


def per_gpu_accumulation(batch_size, micro_batch, gpus):
    """Gradient-accumulation steps per GPU that make up the global batch exactly."""
    if gpus < 1 or micro_batch < 1 or batch_size % (micro_batch * gpus):
        raise SystemExit(f"error: global batch {batch_size} is not a multiple of micro-batch {micro_batch} "
                         f"x {gpus} GPUs")
    return batch_size // (micro_batch * gpus)


def environment(as_published):
    return {"SFTRL_PATCHES_DISABLE": "1"} if as_published else {}


def render(command, env):
    prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    lines, line = [], []
    for token in command:
        if token.startswith("--") and line:
            lines.append(" ".join(line))
            line = []
        line.append(shlex.quote(token))
    lines.append(" ".join(line))
    return (prefix + " " if prefix else "") + " \\\n    ".join(lines)


def finish(command, env, dry_run):
    """Print the command; run it (patches armed by the launcher) unless this is a dry run."""
    print(render(command, env))
    if dry_run:
        return 0
    return subprocess.call(command, env={**os.environ, **env})


def python_module(*args):
    return [sys.executable, "-m", *args]
