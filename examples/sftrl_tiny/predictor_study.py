"""What predicts the score after RL (Quagmires in SFT-RL Post-Training, arXiv 2510.01624), and PEAR's SFT
losses beside plain SFT, on the tiny pipeline: SFT variants that differ the way the paper's do, then the same
GRPO from each, over --seeds; every SFT checkpoint measured on the validation split before RL, every RL run
on the test split after.

    fixed        plain SFT, 1 epoch over every training problem, patches on (the corrected baseline)
    buggy        the same with the patches off: DeepSpeed ZeRO-2 offload drops micro-batches (the paper's point)
    half_2ep     2 epochs over the first half of the problems (Quagmires: beats 1 epoch over all of them after RL)
    short_only   1 epoch over the problems with the fewest operands only (Quagmires: higher after SFT, lower
                 after RL)
    lr_low       --sft-lr / 3
    lr_high      --sft-lr x 3
    pear_token, pear_block, pear_seq   PEAR's SFT losses (examples/sftrl_tiny/pear.py), behaviour policy the
                 base model, its log-probabilities collected once before SFT

Every SFT run is TRL's SFTTrainer through accelerate + DeepSpeed ZeRO-2 with the optimizer offloaded (the
demo's), with the patches on except `buggy`. Problems have --operands to --max-operands operands, so solution
lengths vary. Before RL: avg@N and the unbiased pass@k (k = 1..N) from N = --pass-k-samples answers per
validation problem, and the held-out loss (mean token NLL of the validation problems' expert solutions). After
RL: avg@--eval-samples on the test split. Reports, for each pre-RL measure, Spearman's rho and R² against the
post-RL accuracy over all runs, with 90% bootstrap intervals; writes results.md, results.json, predictors.png.

    python -m examples.sftrl_tiny.predictor_study --out examples/sftrl_tiny/results-predictors
"""
import functools
import os

from . import data, demo
from .loading import load_rows
from .report import read_json

VARIANTS = {  # name: (what it is, patches on, its SFT flags added to the demo's)
    "fixed": ("plain SFT, patches on", True, []),
    "buggy": ("plain SFT, patches off (micro-batches dropped)", False, []),
    "half_2ep": ("2 epochs over half the problems", True, ["--epochs", "2"]),
    "short_only": ("short problems only (fewest operands)", True, []),
    "lr_low": ("SFT lr / 3", True, []),
    "lr_high": ("SFT lr x 3", True, []),
    "pear_token": ("PEAR, token ratios", True, ["--sft-loss", "pear-token"]),
    "pear_block": ("PEAR, block ratios", True, ["--sft-loss", "pear-block"]),
    "pear_seq": ("PEAR, sequence ratio", True, ["--sft-loss", "pear-seq"]),
}
DEFAULTS = dict(operands=2, max_operands=4, validation=200, pass_k_samples=64, grpo_steps=60, grpo_lr=5e-5)
SMOKE = dict(validation=8, pass_k_samples=4, grpo_steps=2)
# the measures taken before RL (name in the record, how the report names it, higher is better?)
PREDICTORS = (("sft_accuracy", "SFT accuracy (avg@N, validation)", True),
              ("pass_at_1", "pass@1", True), ("pass_at_8", "pass@8", True), ("pass_at_max", "pass@N", True),
              ("heldout_loss", "held-out loss", False))


def parse_args(argv=None):
    def report_flag(parser):
        parser.add_argument("--report-only", action="store_true",
                            help="write the report from the runs already finished in --out (same flags as the study)")
        parser.add_argument("--resume", action="store_true",
                            help="go on with a study stopped early: keep --out's data, base model and finished runs "
                                 "(same flags as the study)")
    return demo.parse_comparison_args(argv, __doc__, "results/predictors", list(VARIANTS),
                                      {**demo.DEFAULTS, **DEFAULTS}, {**demo.SMOKE, **SMOKE}, report_flag)[1]


def short_problems(args):
    """The training problems with the fewest operands, written to --out/data-short/train.jsonl."""
    rows = load_rows(os.path.join(args.out, "data"), "train")
    steps = [data.expert_solution(row).count("Step ") for row in rows]
    short = [row for row, count in zip(rows, steps) if count == min(steps)]
    folder = os.path.join(args.out, "data-short")
    data.write_jsonl(short, os.path.join(folder, "train.jsonl"))
    return folder, len(short)


def sft_command(args, variant, seed, port, out, short_folder):
    """The demo's SFT command with the variant's changes (argparse keeps the last value of a repeated flag)."""
    command = demo.sft_command(args, "fixed" if VARIANTS[variant][1] else "buggy", seed, port, out)
    command += VARIANTS[variant][2]
    if variant == "half_2ep":
        command += ["--max-samples", str(args.train // 2)]
    elif variant == "short_only":
        command += ["--data", short_folder]
    elif variant in ("lr_low", "lr_high"):
        command += ["--lr", repr(args.sft_lr / 3 if variant == "lr_low" else args.sft_lr * 3)]
    return command


def pre_rl_command(args, seed, model, out):
    """avg@N, pass@k from the same N answers, and the held-out loss, on the validation split."""
    return demo.module("evaluate") + [
        "--data", os.path.join(args.out, "data"), "--split", "val", "--temperature", "0.6",
        "--samples", str(args.pass_k_samples), "--pass-k-samples", str(args.pass_k_samples), "--heldout-loss",
        "--max-new-tokens", str(args.max_new_tokens), "--seed", str(seed), "--model", model, "--out", out]


def pipeline(args, short_folder, variant, seed, port, threads, progress):
    """SFT -> pre-RL measures -> GRPO -> test accuracy, for one variant and seed; returns its record."""
    folder = os.path.join(args.out, "runs", f"{variant}-seed{seed}")
    finished = load_record(folder, variant, seed) if args.resume else None
    if finished:
        progress.say(f"{variant} seed {seed}: finished earlier, read back", finished=True)
        return finished
    os.makedirs(folder, exist_ok=True)
    env = demo.child_env(threads, disable=None if VARIANTS[variant][1] else "1")
    sft, rl = os.path.join(folder, "sft"), os.path.join(folder, "rl")
    demo.run(sft_command(args, variant, seed, port, sft, short_folder), os.path.join(folder, "sft.log"), env)
    before = os.path.join(folder, "pre_rl.json")
    demo.run(pre_rl_command(args, seed, sft, before), os.path.join(folder, "pre_rl.log"), env)
    demo.run(demo.grpo_command(args, sft, rl, args.grpo_lr, seed), os.path.join(folder, "grpo.log"), env)
    after = os.path.join(folder, "eval_rl.json")
    demo.run(demo.evaluation_command(args, seed, rl, after), os.path.join(folder, "eval_rl.log"), env)
    record = load_record(folder, variant, seed)
    progress.say(f"{variant} seed {seed}: SFT {record['sft_accuracy']:.3f} (pass@{len(record['pass_at_k'])} "
                 f"{record['pass_at_max']:.3f}, held-out loss {record['heldout_loss']:.3f}) -> RL "
                 f"{record['rl_accuracy']:.3f}", finished=True)
    return record


def load_record(folder, variant, seed):
    """One finished run's record, read back from its folder (None when it has not finished)."""
    before, after = os.path.join(folder, "pre_rl.json"), os.path.join(folder, "eval_rl.json")
    if not (os.path.exists(before) and os.path.exists(after)):
        return None
    summary = read_json(before)["summary"]
    pass_k = summary["pass_at_k"]
    return {"config": variant, "seed": seed, "sft_accuracy": summary["accuracy"], "pass_at_k": pass_k,
            "pass_at_1": pass_k["1"], "pass_at_8": pass_k.get("8", pass_k[str(len(pass_k))]),
            "pass_at_max": pass_k[str(len(pass_k))], "heldout_loss": summary["heldout_loss"],
            "rl_accuracy": read_json(after)["summary"]["accuracy"],
            "patch": read_json(os.path.join(folder, "sft", "run.json")).get("patches", {}),
            "finished_at": os.path.getmtime(after)}


def report_only(args, argv):
    """The report from the runs already finished in --out (a study stopped early, or read again): the wall
    time is from the base model to the last finished run."""
    from . import predictor_report
    records = [r for r in (load_record(os.path.join(args.out, "runs", f"{v}-seed{s}"), v, s)
                           for s in args.seeds for v in args.configs) if r]
    if not records:
        raise SystemExit(f"no finished run in {os.path.join(args.out, 'runs')}")
    started = os.path.getmtime(os.path.join(args.out, "base", "config.json"))
    wall = max(r["finished_at"] for r in records) - started
    asked = len(args.seeds) * len(args.configs)
    short = load_rows(os.path.join(args.out, "data-short"), "train")
    command = "python -m examples.sftrl_tiny.predictor_study " + " ".join(a for a in argv if a != "--report-only")
    meta = {"command": command, "wall_s": wall, "settings": vars(args), "short_problems": len(short),
            "finished_runs": len(records), "asked_runs": asked}
    predictor_report.write(args.out, records, meta)
    print(open(os.path.join(args.out, "results.md"), encoding="utf-8").read())
    return 0


def earlier_sessions(previous):
    """The sessions a resumed study stands on, from the results.json it found: [{command, wall_s, finished_runs}],
    oldest first (each run's own wall time; their sum with this one's is the study's)."""
    if not previous:
        return []
    own = {"command": previous["command"], "wall_s": previous["wall_s"],
           "finished_runs": previous.get("finished_runs", len(previous.get("records", [])))}
    return list(previous.get("earlier_sessions", [])) + [own]


def make_runner(args):
    short_folder, count = short_problems(args)
    extra = {"short_problems": count}
    path = os.path.join(args.out, "results.json")
    if args.resume and os.path.exists(path):
        extra["earlier_sessions"] = earlier_sessions(read_json(path))
    return functools.partial(pipeline, args, short_folder), extra


def main(argv=None):
    import sys
    from . import predictor_report
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.report_only:
        return report_only(args, argv)
    return demo.run_comparison(args, argv, "examples.sftrl_tiny.predictor_study", lambda: make_runner(args),
                               predictor_report.write, first_port=29800, reuse_base=args.resume)


if __name__ == "__main__":
    raise SystemExit(main())
