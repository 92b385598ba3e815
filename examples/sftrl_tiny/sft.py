"""SFT with TRL's SFTTrainer on rows in the OpenR1-Math-46k-8192 schema (prompt = chat
messages, target = the expert solution). Meant to run under `accelerate launch` with a DeepSpeed
config (see examples/sftrl_tiny/configs); it also runs as a plain script.

Writes the model to --out and one JSON line per optimizer step (loss, grad_norm, learning_rate)
to --out/metrics.jsonl, plus run.json with the DeepSpeed version and the patch state seen
inside the training process.

--sft-loss pear-token|pear-block|pear-seq weights each completion token's loss by a clipped PEAR
importance ratio (examples/sftrl_tiny/pear.py; the behaviour log-probabilities are collected once,
before the first step); --sft-loss plain, the default, is TRL's SFTTrainer unchanged.
"""
import argparse

from . import pear, run_files
from .loading import to_prompt_completion


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
    pear.add_arguments(parser)
    args = parser.parse_args(argv)
    pear.check_arguments(parser, args)
    return args


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


def build_trainer(args, model, tokenizer, dataset, callbacks=()):
    """TRL's SFTTrainer for --sft-loss plain; PEAR's subclass of it for the pear-* losses."""
    kwargs = dict(model=model, args=sft_config(args), train_dataset=dataset, processing_class=tokenizer,
                  callbacks=list(callbacks))
    if args.sft_loss == "plain":
        from trl import SFTTrainer
        return SFTTrainer(**kwargs)
    from .pear import PearSFTTrainer
    return PearSFTTrainer(pear=pear.Settings.from_args(args), **kwargs)


def main(argv=None):
    args = parse_args(argv)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    import trl  # noqa: F401  (imported here, before the data, as it always was)

    dataset, logger = run_files.start(args, to_prompt_completion)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model)
    trainer = build_trainer(args, model, tokenizer, dataset, [logger])
    extra = None if args.sft_loss == "plain" else (lambda: {"pear": trainer.pear_facts})
    run_files.train_and_save(trainer, tokenizer, args, extra)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
