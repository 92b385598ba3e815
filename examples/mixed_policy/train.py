"""Train one mixed-policy method (or plain GRPO) with TRL on prompts that carry an expert solution.

The GRPO arguments are those of examples.sftrl_tiny.grpo (P prompts x G rollouts per round,
mini-batches, clip 0.2/0.28, no KL, token-level loss); each method adds its own (see --help).
Writes the model, metrics.jsonl (one line per step, with the running `flops`) and run.json
(arguments, FLOPs by token kind) to --out.

    python -m examples.mixed_policy.train --method luffy --model BASE --data DATA --out OUT
"""
import argparse

from examples.sftrl_tiny import grpo, run_files

from . import methods


def to_example(row):
    """Prompt, ground truth for the reward, and the expert solution the methods train on."""
    return {"prompt": row["prompt"], "reward_model": row["reward_model"], "target": row["target"]}


def method_flags():
    """Every method's own config fields as --flags: name -> (methods that have it, default, type, help);
    a field two methods share (shaping_gamma) is one flag."""
    flags = {}
    for name in methods.METHODS:
        _, config_class = methods.load(name)
        for field_name, (default, help_text) in methods.own_fields(config_class).items():
            owners = flags.get(field_name, ((),))[0]
            flags[field_name] = (owners + (name,), default, type(default), help_text)
    return flags


def parse_args(argv=None):
    parser = grpo.build_parser(__doc__.split("\n\n")[0])
    parser.formatter_class, parser.epilog = argparse.RawDescriptionHelpFormatter, __doc__
    parser.add_argument("--method", required=True, choices=list(methods.METHODS))
    parser.add_argument("--flops-budget", type=float, default=None,
                        help="stop at the first round end with this many training FLOPs counted (--steps stays a "
                             "ceiling)")
    parser.add_argument("--checkpoint-flops", type=float, nargs="+", default=[],
                        help="save the model each time the run passes one of these FLOPs counts, into "
                             "--out/checkpoint-<i>, listed in checkpoints.jsonl")
    parser.add_argument("--entropy-coef", type=float, default=None,
                        help="every method: entropy bonus, TRL's entropy_coef (the authors' LUFFY, HPT, ReLIFT and "
                             "Prefix-RFT scripts: 0.001; default 0)")
    flags = method_flags()
    for field_name, (owners, default, kind, help_text) in flags.items():
        option = "--" + field_name.replace("_", "-")
        label = ", ".join(owners)
        if kind is bool:
            parser.add_argument(option, type=lambda text: text.lower() in ("1", "true", "yes"), default=None,
                                help=f"{label}: {help_text} (default {default})")
        else:
            parser.add_argument(option, type=kind, default=None, help=f"{label}: {help_text} (default {default})")
    args = parser.parse_args(argv)
    if args.flops_budget is not None and args.flops_budget <= 0:
        parser.error("--flops-budget must be > 0")
    if any(mark <= 0 for mark in args.checkpoint_flops):
        parser.error("--checkpoint-flops takes positive FLOPs counts")
    args.method_options = {}
    for field_name, (owners, _, _, _) in flags.items():
        value = getattr(args, field_name)
        if value is None:
            continue
        if args.method not in owners:
            parser.error(f"--{field_name.replace('_', '-')} belongs to --method {' or '.join(owners)}, "
                         f"not {args.method}")
        args.method_options[field_name] = value
    if args.entropy_coef is not None:
        args.method_options["entropy_coef"] = args.entropy_coef
    return args


def main(argv=None):
    args = parse_args(argv)
    from transformers import AutoTokenizer
    from examples.sftrl_tiny.reward import accuracy_reward

    trainer_class, config_class = methods.load(args.method)
    config = grpo.grpo_config(args, config_class, **args.method_options)
    dataset, logger = run_files.start(args, to_example)
    tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
    trainer = trainer_class(model=args.model, reward_funcs=accuracy_reward, args=config,
                            train_dataset=dataset, processing_class=tokenizer, callbacks=[logger])
    if args.flops_budget:
        trainer.progress = lambda: min(1.0, trainer.flops.total / args.flops_budget)
    if args.checkpoint_flops or args.flops_budget:
        from examples.sftrl_tiny.checkpoints import marks_callback
        trainer.add_callback(marks_callback(trainer, args.out, args.checkpoint_flops,
                                            lambda state: trainer.flops.total, args.flops_budget))
    grpo.add_callback(trainer, grpo.step_checkpoints(trainer, args))
    run_files.train_and_save(trainer, tokenizer, args, extra=lambda: {"method": args.method,
                                                                       "flops": trainer.flops.as_dict(),
                                                                       "steps": trainer.state.global_step})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
