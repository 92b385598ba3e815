"""SFT with TRL's SFTTrainer on rows in the OpenR1-Math-46k-8192 schema (prompt = chat
messages, target = the expert solution). Meant to run under `accelerate launch` with a DeepSpeed
config (see examples/sftrl_tiny/configs); it also runs as a plain script.

Writes the model to --out and one JSON line per optimizer step (loss, grad_norm, learning_rate)
to --out/metrics.jsonl, plus run.json with the DeepSpeed version and the patch state seen
inside the training process.
"""
import argparse
import json
import os

from .loading import load_rows, to_prompt_completion


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a model folder or hub name")
    parser.add_argument("--data", required=True, help="a jsonl file, a folder with train.jsonl, or a hub data set")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-samples", type=int, default=None, help="use only the first N rows")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps; overrides --epochs")
    parser.add_argument("--micro-batch", type=int, default=1, help="per-device batch")
    parser.add_argument("--grad-accum", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--min-lr-rate", type=float, default=0.1, help="cosine floor as a fraction of --lr")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-length", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true")
    return parser.parse_args(argv)


def sft_config(args):
    from trl import SFTConfig
    return SFTConfig(
        output_dir=args.out, seed=args.seed, num_train_epochs=args.epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.micro_batch, gradient_accumulation_steps=args.grad_accum,
        learning_rate=args.lr, lr_scheduler_type="cosine_with_min_lr",
        lr_scheduler_kwargs={"min_lr_rate": args.min_lr_rate},
        warmup_steps=args.warmup_ratio,  # a float below 1 is a ratio; warmup_ratio is gone from transformers 5.2+
        weight_decay=args.weight_decay, adam_beta1=0.9, adam_beta2=0.999, max_length=args.max_length,
        bf16=args.bf16, logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
        completion_only_loss=True, dataloader_num_workers=0)


def step_logger(path):
    from transformers import TrainerCallback

    class StepLogger(TrainerCallback):
        """One line per logged optimizer step, written by the main process only."""
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "train_runtime" not in logs:
                with open(path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps({"step": state.global_step, **logs}) + "\n")
    return StepLogger()


def run_facts():
    """What this process actually ran with: read after training, from inside it."""
    import sys
    facts = {"deepspeed": None, "patches": {}, "SFTRL_PATCHES_DISABLE": os.environ.get("SFTRL_PATCHES_DISABLE")}
    if "deepspeed" in sys.modules:
        facts["deepspeed"] = sys.modules["deepspeed"].__version__
    if "sftrl_patches" in sys.modules:  # imported by autoload, not by this script
        facts["patches"] = {name: s.state for name, s in sys.modules["sftrl_patches"].status().items()}
    return facts


def write_run(args, folder):
    with open(os.path.join(folder, "run.json"), "w", encoding="utf-8") as handle:
        json.dump({"args": vars(args), **run_facts()}, handle, indent=2)


def main(argv=None):
    args = parse_args(argv)
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    os.makedirs(args.out, exist_ok=True)
    metrics = os.path.join(args.out, "metrics.jsonl")
    if os.path.exists(metrics):
        os.remove(metrics)
    rows = load_rows(args.data, "train", args.max_samples)
    dataset = Dataset.from_list([to_prompt_completion(row) for row in rows])
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    trainer = SFTTrainer(model=model, args=sft_config(args), train_dataset=dataset, processing_class=tokenizer,
                         callbacks=[step_logger(metrics)])
    trainer.train()
    trainer.save_model(args.out)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(args.out)
        write_run(args, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
