"""Paper-scale Llama-Factory recipe: full-parameter SFT from a YAML file with its ZeRO-2
offload DeepSpeed config (the shape of Llama-Factory's examples/deepspeed/ds_z2_offload_config.json)
at the paper's settings. Writes sft.yaml, ds_z2_offload_config.json and dataset_info.json to --out;
the data must first be flattened to its sharegpt format:

    python -m examples.recipes.prepare_data --out data/openr1.jsonl
    python -m examples.recipes.llamafactory --dataset-file data/openr1.jsonl --dry-run

The command runs Llama-Factory's launcher under torchrun through sftrl_patches.launch, so every
rank is patched even without autoload (llamafactory-cli would re-execute the launcher itself).
"""
import argparse
import json
import os

from . import common

DATASET_NAME = "openr1_math_46k_8192"


def deepspeed_config():
    return {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto", "gradient_clipping": "auto", "zero_allow_untested_optimizer": True,
            "fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"},
            "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                                  "allgather_partitions": True, "allgather_bucket_size": 5e8,
                                  "overlap_comm": False, "reduce_scatter": True, "reduce_bucket_size": 5e8,
                                  "contiguous_gradients": True, "round_robin_gradients": True}}


def dataset_info(dataset_file):
    return {DATASET_NAME: {"file_name": os.path.abspath(dataset_file), "formatting": "sharegpt",
                           "columns": {"messages": "messages", "system": "system"},
                           "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                                    "assistant_tag": "assistant", "system_tag": "system"}}}


def sft_yaml(args, deepspeed_file):
    paper = common.PAPER_SFT
    accumulation = common.per_gpu_accumulation(paper["batch_size"], paper["micro_batch"], args.gpus)
    template = "llama3" if "llama" in common.model_name(args.model).lower() else "qwen"
    return {
        "model_name_or_path": common.model_name(args.model), "trust_remote_code": True,
        "stage": "sft", "do_train": True, "finetuning_type": "full", "deepspeed": deepspeed_file,
        "dataset": DATASET_NAME, "dataset_dir": os.path.abspath(args.out), "template": template,
        "cutoff_len": paper["max_len"], "overwrite_cache": True, "preprocessing_num_workers": 16,
        "output_dir": os.path.join(args.out, "sft"), "logging_steps": 1, "save_strategy": "epoch",
        "plot_loss": True, "overwrite_output_dir": True, "report_to": "none",
        "per_device_train_batch_size": paper["micro_batch"], "gradient_accumulation_steps": accumulation,
        "learning_rate": paper["lr"], "num_train_epochs": float(paper["epochs"]),
        "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": paper["min_lr_ratio"]},
        "warmup_ratio": paper["warmup_ratio"], "weight_decay": paper["weight_decay"],
        "adam_beta1": paper["betas"][0], "adam_beta2": paper["betas"][1], "bf16": True, "seed": args.seed,
        "gradient_checkpointing": True, "flash_attn": "fa2"}


def yaml_value(value):
    """JSON is valid YAML flow syntax, except that YAML 1.1 (PyYAML, which Llama-Factory uses) reads
    an exponent without a dot, like 5e-05, as a string: write 5.0e-05."""
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {yaml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, float):
        mantissa, _, exponent = repr(value).partition("e")
        if exponent and "." not in mantissa:
            return f"{mantissa}.0e{exponent}"
    return json.dumps(value)


def to_yaml(mapping):
    """Flat YAML, so no YAML library is needed to write it."""
    return "".join(f"{key}: {yaml_value(value)}\n" for key, value in mapping.items())


def write_files(args):
    os.makedirs(args.out, exist_ok=True)
    deepspeed_file = os.path.abspath(os.path.join(args.out, "ds_z2_offload_config.json"))
    with open(deepspeed_file, "w", encoding="utf-8") as handle:
        json.dump(deepspeed_config(), handle, indent=2)
    with open(os.path.join(args.out, "dataset_info.json"), "w", encoding="utf-8") as handle:
        json.dump(dataset_info(args.dataset_file), handle, indent=2)
    yaml_file = os.path.join(args.out, "sft.yaml")
    with open(yaml_file, "w", encoding="utf-8") as handle:
        handle.write(to_yaml(sft_yaml(args, deepspeed_file)))
    return yaml_file


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    common.add_common_arguments(parser, "ckpt/llamafactory")
    parser.add_argument("--dataset-file", default="data/openr1.jsonl",
                        help="jsonl written by examples.recipes.prepare_data")
    args = parser.parse_args(argv)
    yaml_file = write_files(args)
    command = ["torchrun", "--nproc_per_node", str(args.gpus), "-m", "sftrl_patches.launch",
               "llamafactory.launcher", "train", yaml_file]
    return common.finish(command, common.environment(args.as_published), args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
