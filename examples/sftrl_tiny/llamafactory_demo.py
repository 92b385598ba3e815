"""The tiny SFT comparison on Llama-Factory's own `llamafactory-cli train` (0.9.5, in its own
environment): ZeRO-2 in the shape of its ds_z2_offload_config.json, GA 8, micro-batch 1, fp32, on the
tiny demo's data and base model, then evaluation on the held-out split, for three configurations x
3 seeds:

    buggy      optimizer offloaded to CPU, patches off (SFTRL_PATCHES_DISABLE=every patch by name)
    fixed      optimizer offloaded to CPU, patches on: autoload reaches the torchrun child
               Llama-Factory re-executes itself in (nothing imports them here)
    reference  no offload: DeepSpeed's other code path, untouched by the bug

Needs Llama-Factory's environment (bash examples/llamafactory_cpu/setup_env.sh -> .lf-venv) and a
DeepSpeed release in .ds-releases/ (default 0.18.4, the newest Llama-Factory 0.9.5 allows). Results
go to --out: results.md, results.json, sft_curves.png.

    python -m examples.sftrl_tiny.llamafactory_demo --out examples/sftrl_tiny/results-llamafactory
"""
import functools
import os
import sys

from . import demo, report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# name: (offload_optimizer.device, SFTRL_PATCHES_DISABLE). Every patch by name, not "1": "1" also switches
# autoload off, and then nothing inside the rank would report that the patches were off.
CONFIGS = {"buggy": ("cpu", "all-by-name"), "fixed": ("cpu", None), "reference": ("none", None)}
SETTINGS = ("train", "test", "operands", "max_operands", "digits", "pretrain_documents", "sft_lr", "eval_samples",
            "max_new_tokens")
PATCH = "deepspeed-offload-ga-drop"


def add_arguments(parser):
    parser.add_argument("--lf-python", default=os.path.join(ROOT, ".lf-venv", "bin", "python"),
                        help="the python of Llama-Factory's environment (default .lf-venv)")
    parser.add_argument("--deepspeed", default="0.18.4", help="the .ds-releases/ folder to train with")


def parse_args(argv=None):
    parser, args = demo.parse_comparison_args(argv, __doc__, "results/tiny-llamafactory", list(CONFIGS),
                                              {name: demo.DEFAULTS[name] for name in SETTINGS}, demo.SMOKE,
                                              add_arguments)
    if not os.path.isfile(args.lf_python):
        parser.error(f"{args.lf_python} not found: bash examples/llamafactory_cpu/setup_env.sh")
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import deepspeed_releases
    if not deepspeed_releases.is_installed(args.deepspeed):
        parser.error(f"DeepSpeed {args.deepspeed} is not in .ds-releases/: "
                     f"python benchmarks/deepspeed_releases.py install {args.deepspeed}")
    return args


def training_env(args, threads, disable, port):
    import deepspeed_releases
    import sftrl_patches
    if disable == "all-by-name":
        disable = ",".join(sftrl_patches.PATCHES)
    env = deepspeed_releases.child_env(args.deepspeed, base=demo.child_env(threads, disable=disable))
    env["MASTER_PORT"] = str(port)
    return env


def sft_command(args, data, base, out, offload, seed, max_steps=None):
    command = [args.lf_python, "-m", "examples.sftrl_tiny.llamafactory_sft", "--model", base, "--data", data,
               "--out", out, "--offload", offload, "--epochs", "1", "--micro-batch", "1", "--grad-accum", "8",
               "--lr", str(args.sft_lr), "--seed", str(seed)]
    return command + (["--max-steps", str(max_steps)] if max_steps else [])


def load_run(folder, config, seed):
    steps = report.read_jsonl(os.path.join(folder, "sft", "metrics.jsonl"))
    facts = report.read_json(os.path.join(folder, "sft", "run.json"))
    evaluation = report.read_json(os.path.join(folder, "eval_sft.json"))["summary"]
    return {"config": config, "seed": seed, "llamafactory": facts.get("llamafactory"),
            "deepspeed": facts.get("deepspeed"), "patch": report.patch_state(facts, PATCH),
            "acc_sft": evaluation["accuracy"], "eval_samples": evaluation["samples"],
            "sft_loss": [row["loss"] for row in steps], "sft_grad_norm": [row["grad_norm"] for row in steps]}


def pipeline(args, config, seed, port, threads, progress):
    """Llama-Factory SFT -> evaluate for one configuration and seed; returns its record."""
    offload, disable = CONFIGS[config]

    def command(sft):
        return sft_command(args, os.path.join(args.out, "data"), os.path.join(args.out, "base"), sft, offload, seed)
    return demo.sft_and_evaluate(args, config, seed, command, training_env(args, threads, disable, port),
                                 demo.child_env(threads), load_run, "Llama-Factory", progress)


def table(records):
    lines = [f"| configuration | Llama-Factory | DeepSpeed | offload patch (in the rank) | seeds "
             f"| SFT {report.metric_name(records)} (%) | SFT loss, last 10% of steps | SFT grad norm, mean |",
             "|---|---|---|---|---|---|---|---|"]
    for config, rows in report.by_config(records):
        lines.append(f"| {config} | {report.joined(rows, 'llamafactory')} | {report.joined(rows, 'deepspeed')} "
                     f"| {report.joined(rows, 'patch')} | {len(rows)} | {report.sft_cells(rows)} |")
    return "\n".join(lines)


def write(out, records, meta):
    settings = meta["settings"]
    seconds = [r["sft_s"] for r in records]
    text = ["# Tiny SFT on Llama-Factory: offload bug on and off, and the no-offload reference", "",
            f"Command: `{meta['command']}` — wall time {meta['wall_s'] / 60:.1f} min on this machine "
            f"(one SFT run: {min(seconds):.0f}-{max(seconds):.0f} s).", "",
            table(records), "",
            f"SFT: Llama-Factory's own `llamafactory-cli train` (FORCE_TORCHRUN=1: it re-executes itself under "
            f"torchrun, where autoload arms the patches), full fine-tuning, DeepSpeed ZeRO-2 in the shape of its "
            f"ds_z2_offload_config.json, GA 8 × micro-batch 1, cosine with min lr, lr {settings['sft_lr']}, fp32, "
            f"1 epoch of {settings['train']} problems, data registered through its dataset_info.json (sharegpt, "
            f"`qwen` template). Evaluation: {settings['test']} held-out problems, temperature 0.6, "
            f"{settings['eval_samples']} answer(s) per problem. The patch state is the one reported inside the "
            "training rank (SFTRL_PATCHES_REPORT).", "",
            "![SFT gradient norm and loss](sft_curves.png)", ""]
    report.save(out, records, meta, text)
    colours = {"buggy": "tab:red", "fixed": "tab:blue", "reference": "tab:green"}
    report.sft_curves(os.path.join(out, "sft_curves.png"), records, colours, dashed=("reference",))


def main(argv=None):
    args = parse_args(argv)
    return demo.run_comparison(args, argv, "examples.sftrl_tiny.llamafactory_demo",
                               lambda: (functools.partial(pipeline, args), {}), write, first_port=29800)


if __name__ == "__main__":
    raise SystemExit(main())
