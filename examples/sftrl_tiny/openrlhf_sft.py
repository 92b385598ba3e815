"""SFT with OpenRLHF's own `openrlhf.cli.train_sft`, on a CPU, with LUFFY's baseline flags scaled
down: ZeRO-2, Adam offloaded to CPU, micro-batch 1, chat template over prompt/target, cosine with
min lr, bf16 (the only dtypes its CLI takes). Meant for the paper's release, OpenRLHF 0.9.10; the
flags follow the installed release's style.

What runs is OpenRLHF's CLI module as __main__, unchanged, after two CPU preparations
(examples/openrlhf_cpu): import-only stand-ins for flash_attn/vllm and no-ops for its torch.cuda
calls. Around it this script adds only what the tiny demo reads: --out/metrics.jsonl (one line per
optimizer step: loss, grad_norm, lr) and --out/run.json (DeepSpeed and OpenRLHF versions, patch
states seen inside the process). Single process; set SFTRL_PATCHES_DISABLE to switch patches off.

    python -m examples.sftrl_tiny.openrlhf_sft --model BASE --data DATA --out OUT
"""
import argparse
import json
import os
import runpy
import sys

from .loading import load_rows
from .run_files import run_facts, shut_down_process_group


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder")
    parser.add_argument("--data", required=True, help="a folder with train.jsonl, or a jsonl file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=8, help="global batch = micro-batch x this (one process)")
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flag-style", choices=("auto", "flat", "dotted"), default="auto",
                        help="flat: OpenRLHF <= 0.10.1 (the paper's 0.9.10); dotted: >= 0.10.2")
    args = parser.parse_args(argv)
    if args.micro_batch < 1 or args.grad_accum < 1:
        parser.error("--micro-batch and --grad-accum must be >= 1")
    return args


def train_file(data):
    """OpenRLHF reads a jsonl file by its extension; a folder means its train.jsonl."""
    path = os.path.join(data, "train.jsonl") if os.path.isdir(data) else data
    if not os.path.isfile(path) or not path.endswith(".jsonl"):
        raise SystemExit(f"openrlhf_sft: no train.jsonl at {data}")
    return path


def cli_argv(args, style):
    """train_sft's own flags, LUFFY's baseline scaled down (examples/recipes/openrlhf.py has the paper's)."""
    from examples.recipes.openrlhf import flags
    pairs = [("pretrain", args.model), ("dataset", train_file(args.data)), ("input_key", "prompt"),
             ("output_key", "target"), ("apply_chat_template", True), ("max_len", args.max_length),
             ("zero_stage", 2), ("adam_offload", True), ("train_batch_size", args.micro_batch * args.grad_accum),
             ("micro_train_batch_size", args.micro_batch), ("max_epochs", args.epochs),
             ("learning_rate", args.lr), ("lr_warmup_ratio", args.warmup_ratio),
             ("lr_scheduler", "cosine_with_min_lr"), ("param_dtype", "bf16"), ("attn_implementation", "eager"),
             ("save_path", args.out), ("logging_steps", 1), ("seed", args.seed)]
    return flags(pairs, style)


def log_steps(path):
    """Append each logged optimizer step of OpenRLHF's SFTTrainer to `path` (main rank)."""
    from openrlhf.trainer.sft_trainer import SFTTrainer
    original = SFTTrainer.save_logs_and_checkpoints

    def save_logs_and_checkpoints(self, args, global_step, step_bar, logs_dict={}, client_states={}):
        if self.strategy.is_rank_0():
            row = {"step": global_step, "loss": logs_dict.get("loss_mean", logs_dict.get("gpt_loss")),
                   "grad_norm": logs_dict.get("grad_norm"), "learning_rate": logs_dict.get("lr")}
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(row) + "\n")
        return original(self, args, global_step, step_bar, logs_dict, client_states)

    SFTTrainer.save_logs_and_checkpoints = save_logs_and_checkpoints


def prepare_cpu():
    """On a machine without CUDA: the import-only stand-ins (behind anything really installed) and
    the torch.cuda no-ops, before OpenRLHF binds init_device_mesh."""
    import torch
    from examples.openrlhf_cpu import STAND_INS, cuda
    if not torch.cuda.is_available():
        sys.path.append(STAND_INS)
        cuda.install()


def single_process_defaults():
    """Run without a launcher: one rank of one (a launcher's variables win)."""
    if "MASTER_PORT" not in os.environ:
        from sftrl_patches.probes import free_port
        os.environ["MASTER_PORT"] = str(free_port())
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(name, value)


def main(argv=None):
    args = parse_args(argv)
    prepare_cpu()
    from examples.recipes.openrlhf import installed_style
    style = installed_style() if args.flag_style == "auto" else args.flag_style
    argv_for_cli = cli_argv(args, style)
    load_rows(args.data, "train", 1)  # a clear error now rather than deep in datasets
    os.makedirs(args.out, exist_ok=True)
    metrics = os.path.join(args.out, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    log_steps(metrics)
    single_process_defaults()
    sys.argv = ["openrlhf.cli.train_sft"] + argv_for_cli
    runpy.run_module("openrlhf.cli.train_sft", run_name="__main__", alter_sys=True)
    from importlib import metadata
    facts = {"args": vars(args), "openrlhf": metadata.version("openrlhf"), "cli": argv_for_cli, **run_facts()}
    import torch.distributed as dist
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(os.path.join(args.out, "run.json"), "w", encoding="utf-8") as handle:
            json.dump(facts, handle, indent=2)
    shut_down_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
