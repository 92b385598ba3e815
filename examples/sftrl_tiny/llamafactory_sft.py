"""SFT with Llama-Factory's own `llamafactory-cli train`, on a CPU: the tiny demo's data registered
through Llama-Factory's dataset_info.json (sharegpt messages, its `qwen` ChatML template, loss on
the answer only), full fine-tuning under DeepSpeed ZeRO-2 in the shape of its
examples/deepspeed/ds_z2_offload_config.json (optimizer offloaded to CPU) or without offload,
GA 8, micro-batch 1: LUFFY's baseline scaled down.

It runs in Llama-Factory's own environment (examples/llamafactory_cpu/setup_env.sh: .lf-venv), with
FORCE_TORCHRUN=1, so Llama-Factory re-executes itself under torchrun and the patches reach that
child through autoload alone. Around it this script adds only what the tiny demo reads:
--out/metrics.jsonl (one line per optimizer step from Llama-Factory's trainer_state.json) and
--out/run.json (versions and the patch states reported inside the training rank through
SFTRL_PATCHES_REPORT). Set SFTRL_PATCHES_DISABLE to switch patches off.

    .lf-venv/bin/python -m examples.sftrl_tiny.llamafactory_sft --model BASE --data DATA --out OUT
"""
import argparse
import json
import os
import subprocess
import sys

from .run_files import report_events

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DATASET = "tiny_math"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder")
    parser.add_argument("--data", required=True, help="a folder with train.jsonl (the demo's schema)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--offload", choices=("cpu", "none"), default="cpu", help="offload_optimizer.device")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides --epochs")
    parser.add_argument("--micro-batch", type=int, default=1)
    parser.add_argument("--grad-accum", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--nproc", type=int, default=1, help="torchrun processes (NPROC_PER_NODE)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.micro_batch < 1 or args.grad_accum < 1 or args.nproc < 1:
        parser.error("--micro-batch, --grad-accum and --nproc must be >= 1")
    return args


def write_dataset(data, folder):
    """The demo's rows as Llama-Factory sharegpt messages (system, user, assistant), and their registration."""
    source = os.path.join(data, "train.jsonl") if os.path.isdir(data) else data
    if not os.path.isfile(source):
        raise SystemExit(f"llamafactory_sft: no train.jsonl at {data}")
    os.makedirs(folder, exist_ok=True)
    with open(source, encoding="utf-8") as rows, open(os.path.join(folder, "train.jsonl"), "w",
                                                      encoding="utf-8") as out:
        for line in rows:
            if line.strip():
                row = json.loads(line)
                out.write(json.dumps({"messages": row["prompt"] + row["target"]}) + "\n")
    info = {DATASET: {"file_name": "train.jsonl", "formatting": "sharegpt", "columns": {"messages": "messages"},
                      "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                               "assistant_tag": "assistant", "system_tag": "system"}}}
    with open(os.path.join(folder, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)


def deepspeed_config(offload):
    """Llama-Factory's ZeRO-2 example shape: every batch setting "auto" (from its YAML)."""
    zero = {"stage": 2, "allgather_partitions": True, "overlap_comm": False, "reduce_scatter": True,
            "contiguous_gradients": True, "round_robin_gradients": True}
    if offload == "cpu":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}  # no CUDA to pin for
    return {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto", "zero_allow_untested_optimizer": True, "fp16": {"enabled": "auto"},
            "bf16": {"enabled": "auto"}, "zero_optimization": zero}


def training_yaml(args, dataset_dir, deepspeed_file):
    """Llama-Factory's SFT arguments; fp32 on a CPU."""
    settings = {
        "model_name_or_path": os.path.abspath(args.model), "trust_remote_code": True, "stage": "sft",
        "do_train": True, "finetuning_type": "full", "deepspeed": deepspeed_file, "dataset": DATASET,
        "dataset_dir": dataset_dir, "template": "qwen", "cutoff_len": args.max_length,
        "preprocessing_num_workers": 1, "dataloader_num_workers": 0, "output_dir": os.path.abspath(args.out),
        "overwrite_output_dir": True, "logging_steps": 1, "save_strategy": "no", "plot_loss": False,
        "report_to": "none", "disable_tqdm": True, "per_device_train_batch_size": args.micro_batch,
        "gradient_accumulation_steps": args.grad_accum, "learning_rate": args.lr, "num_train_epochs": args.epochs,
        "max_steps": args.max_steps, "lr_scheduler_type": "cosine_with_min_lr",
        "lr_scheduler_kwargs": {"min_lr_rate": 0.1}, "warmup_ratio": args.warmup_ratio, "weight_decay": 0.01,
        "bf16": False, "seed": args.seed,
    }
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items())  # JSON values are YAML


def child_env(args, report):
    from examples.llamafactory_cpu import STAND_INS
    env = dict(os.environ)
    bin_dir = os.path.dirname(sys.executable)  # torchrun is looked up on PATH by Llama-Factory's launcher
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH"), STAND_INS]))
    env.update(FORCE_TORCHRUN="1", NPROC_PER_NODE=str(args.nproc), SFTRL_PATCHES_REPORT=report,
               DS_ACCELERATOR=env.get("DS_ACCELERATOR", "cpu"), HF_HUB_OFFLINE="1", DISABLE_VERSION_CHECK="1",
               TOKENIZERS_PARALLELISM="false")
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    return env


def collect(out, report):
    """metrics.jsonl from trainer_state.json; run.json from the rank's own report."""
    with open(os.path.join(out, "trainer_state.json"), encoding="utf-8") as handle:
        history = json.load(handle)["log_history"]
    with open(os.path.join(out, "metrics.jsonl"), "w", encoding="utf-8") as handle:
        for row in history:
            if "loss" in row and "grad_norm" in row:
                handle.write(json.dumps({"step": row["step"], "loss": row["loss"], "grad_norm": row["grad_norm"],
                                         "learning_rate": row.get("learning_rate")}) + "\n")
    events = report_events(report)
    engine = next((e for e in events if e["event"] == "deepspeed" and e.get("rank") in (0, None)), None)
    from importlib import metadata
    return {"llamafactory": metadata.version("llamafactory"), "transformers": metadata.version("transformers"),
            "deepspeed": engine["run"]["versions"].get("deepspeed") if engine else None,
            "patches": engine["patches"] if engine else {}, "run": engine["run"] if engine else None,
            "ranks_reporting": sorted({e.get("rank") for e in events if e["event"] == "deepspeed"}, key=str),
            "SFTRL_PATCHES_DISABLE": os.environ.get("SFTRL_PATCHES_DISABLE")}


def main(argv=None):
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    dataset_dir = os.path.abspath(os.path.join(args.out, "lf_data"))
    write_dataset(args.data, dataset_dir)
    deepspeed_file = os.path.abspath(os.path.join(args.out, "ds_z2_config.json"))
    with open(deepspeed_file, "w", encoding="utf-8") as handle:
        json.dump(deepspeed_config(args.offload), handle, indent=2)
    config = os.path.join(args.out, "sft.yaml")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(training_yaml(args, dataset_dir, deepspeed_file))
    report = os.path.abspath(os.path.join(args.out, "run_report.jsonl"))
    for stale in (report, os.path.join(args.out, "metrics.jsonl")):
        if os.path.exists(stale):
            os.remove(stale)
    cli = os.path.join(os.path.dirname(sys.executable), "llamafactory-cli")
    subprocess.run([cli, "train", config], env=child_env(args, report), check=True)
    facts = {"args": vars(args), "cli": [cli, "train", config], **collect(args.out, report)}
    with open(os.path.join(args.out, "run.json"), "w", encoding="utf-8") as handle:
        json.dump(facts, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
