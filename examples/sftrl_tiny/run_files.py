"""What an SFT or GRPO run of the tiny pipeline reads and writes around its trainer: the training
rows, metrics.jsonl (one line per logged optimizer step, main rank only) and run.json (arguments,
DeepSpeed version and patch states as seen inside the training process)."""
import json
import os
import sys

from .loading import load_rows
from .report import read_jsonl


def step_logger(path):
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        """One line per logged optimizer step, written by the main process only."""
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "train_runtime" not in logs:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")
    return StepLogger()


def shut_down_process_group():
    """Every rank leaves the gloo/NCCL group together. Left to the interpreter's exit, one rank can tear
    it down while the other still uses it: CI saw a two-rank GRPO run abort that way after training
    ("terminate called without an active exception"). Not imported from sftrl_patches' probe, which
    does the same, because importing sftrl_patches here would install its patches in every run."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def run_facts():
    """What this process actually ran with: read after training, from inside it."""
    facts = {"deepspeed": None, "patches": {}, "SFTRL_PATCHES_DISABLE": os.environ.get("SFTRL_PATCHES_DISABLE")}
    if "deepspeed" in sys.modules:
        facts["deepspeed"] = sys.modules["deepspeed"].__version__
    if "sftrl_patches" in sys.modules:  # imported by autoload, not by this script
        facts["patches"] = {name: s.state for name, s in sys.modules["sftrl_patches"].status().items()}
    return facts


def report_events(path):
    """The events of an SFTRL_PATCHES_REPORT file (one JSON line per reporting process); none when no
    process wrote one (autoload off, or no engine built)."""
    return read_jsonl(path) if os.path.exists(path) else []


def start(args, to_example):
    """--out created, a stale metrics.jsonl and checkpoints.jsonl removed, the training rows as a
    Dataset of `to_example(row)`, and the callback that logs each step."""
    from datasets import Dataset
    os.makedirs(args.out, exist_ok=True)
    metrics = os.path.join(args.out, "metrics.jsonl")
    for stale in (metrics, os.path.join(args.out, "checkpoints.jsonl")):
        if os.path.exists(stale):
            os.remove(stale)
    rows = load_rows(args.data, "train", args.max_samples)
    return Dataset.from_list([to_example(row) for row in rows]), step_logger(metrics)


def train_and_save(trainer, tokenizer, args, extra=None):
    """Train, then save the model (every rank: DeepSpeed gathers), the tokenizer and run.json (main rank);
    `extra()` adds facts known only after training. Every rank then leaves the process group together."""
    trainer.train()
    trainer.save_model(args.out)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.out)
        with open(os.path.join(args.out, "run.json"), "w", encoding="utf-8") as handle:
            json.dump({"args": vars(args), **run_facts(), **(extra() if extra else {})}, handle, indent=2)
    shut_down_process_group()
