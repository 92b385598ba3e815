"""The paper's Table 2 in miniature, on OpenRLHF's own SFT: OpenRLHF 0.9.10's train_sft with
ZeRO-2, Adam offloaded to CPU, GA 8, micro-batch 1 (examples.sftrl_tiny.openrlhf_sft) on the
tiny demo's data and base model, then evaluation on the held-out split, for four configurations
x 3 seeds, set by which patches SFTRL_PATCHES_DISABLE switches off:

    both-bugs      every patch off: as the published baselines ran
    loss-fix       only OpenRLHF's loss-aggregation patch on (micro-batches still dropped)
    optimizer-fix  only the DeepSpeed offload patches on (mean of per-micro-batch means)
    both-fixes     every patch on

Needs OpenRLHF importable (pip install --no-deps openrlhf==0.9.10, or its folder on PYTHONPATH)
and an affected DeepSpeed (0.18.9 is the one 0.9.10 pins). Results go to --out: results.md,
results.json, sft_curves.png.

    python -m examples.sftrl_tiny.openrlhf_demo --out results/tiny-openrlhf
"""
import functools
import importlib.util
import os
import re

from . import demo, report

OPTIMIZER_PATCHES = ("deepspeed-offload-ga-drop", "deepspeed-offload-multi-backward")
LOSS_PATCH = "openrlhf-sft-loss-aggregation"
CONFIGS = {  # name: SFTRL_PATCHES_DISABLE
    "both-bugs": "1",
    "loss-fix": ",".join(OPTIMIZER_PATCHES),
    "optimizer-fix": LOSS_PATCH,
    "both-fixes": None,
}
# The paper's Table 2 (Qwen2.5-Math-7B, OpenRLHF 0.9.10 + DeepSpeed 0.18.9, six-benchmark average).
PAPER = {"both-bugs": "48.3 ± 0.8", "loss-fix": "49.1 ± 0.9", "optimizer-fix": "53.4 ± 0.4",
         "both-fixes": "54.0 ± 0.2"}
SETTINGS = ("train", "test", "operands", "max_operands", "digits", "pretrain_documents", "sft_lr", "eval_samples",
            "max_new_tokens")


def parse_args(argv=None):
    parser, args = demo.parse_comparison_args(argv, __doc__, "results/tiny-openrlhf", list(CONFIGS),
                                              {name: demo.DEFAULTS[name] for name in SETTINGS}, demo.SMOKE)
    require_openrlhf(parser)
    return args


def require_openrlhf(parser):
    if importlib.util.find_spec("openrlhf") is None:
        parser.error("OpenRLHF is not importable: pip install --no-deps openrlhf==0.9.10 (plus its pure-Python "
                     "dependencies, see .ci/run), or put its folder on PYTHONPATH")


def accuracy_by_operands(details):
    """{operand count: mean score} over the evaluated problems ("Compute 7 + 1 × 0." has 3)."""
    scores = {}
    for problem in details:
        count = len(re.findall(r"\d+", problem["question"]))
        scores.setdefault(count, []).extend(problem["scores"])
    return {str(count): sum(values) / len(values) for count, values in sorted(scores.items())}


def load_run(folder, config, seed):
    steps = report.read_jsonl(os.path.join(folder, "sft", "metrics.jsonl"))
    facts = report.read_json(os.path.join(folder, "sft", "run.json"))
    evaluation = report.read_json(os.path.join(folder, "eval_sft.json"))
    after_sft = evaluation["summary"]
    return {"config": config, "seed": seed, "openrlhf": facts.get("openrlhf"), "deepspeed": facts.get("deepspeed"),
            "optimizer_patch": report.patch_state(facts, OPTIMIZER_PATCHES[0]),
            "loss_patch": report.patch_state(facts, LOSS_PATCH),
            "acc_sft": after_sft["accuracy"], "eval_samples": after_sft["samples"],
            "sft_loss": [row["loss"] for row in steps], "sft_grad_norm": [row["grad_norm"] for row in steps],
            "by_operands": accuracy_by_operands(evaluation["details"])}


def sft_command(args, seed, sft):
    """OpenRLHF's SFT of the shared base model into the folder `sft`."""
    return demo.module("openrlhf_sft") + [
        "--model", os.path.join(args.out, "base"), "--data", os.path.join(args.out, "data"), "--out", sft,
        "--epochs", "1", "--micro-batch", "1", "--grad-accum", "8", "--lr", str(args.sft_lr), "--seed", str(seed)]


def pipeline(args, config, seed, port, threads, progress):
    """OpenRLHF SFT -> evaluate for one configuration and seed; returns its record."""
    env = demo.child_env(threads, disable=CONFIGS[config])
    env["MASTER_PORT"] = str(port)
    return demo.sft_and_evaluate(args, config, seed, functools.partial(sft_command, args, seed), env, env, load_run,
                                 "OpenRLHF", progress)


def table(records):
    lines = [f"| configuration | OpenRLHF | DeepSpeed | offload patch | loss patch | seeds "
             f"| SFT {report.metric_name(records)} (%) | SFT loss, last 10% of steps | SFT grad norm, mean "
             "| paper, Table 2 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for config, rows in report.by_config(records):
        lines.append(f"| {config} | {report.joined(rows, 'openrlhf')} | {report.joined(rows, 'deepspeed')} "
                     f"| {report.joined(rows, 'optimizer_patch')} | {report.joined(rows, 'loss_patch')} | {len(rows)} "
                     f"| {report.sft_cells(rows)} | {PAPER[config]} |")
    counts = sorted({count for r in records for count in r["by_operands"]}, key=int)
    if len(counts) > 1:  # varied lengths: where the accuracy comes from
        lines += ["", f"| configuration | {' | '.join(f'{c} operands' for c in counts)} |",
                  "|---|" + "---|" * len(counts)]
        for config, rows in report.by_config(records):
            lines.append(f"| {config} | " + " | ".join(
                report.mean_std([r["by_operands"][c] for r in rows if c in r["by_operands"]], 100)
                for c in counts) + " |")
    return "\n".join(lines)


def write(out, records, meta):
    settings = meta["settings"]
    operands = str(settings["operands"]) + (f"–{settings['max_operands']}" if settings.get("max_operands") else "")
    text = report.heading("Tiny SFT on OpenRLHF: both bugs, each fix, both fixes", meta) + [
            table(records), "",
            f"SFT: OpenRLHF's own `openrlhf.cli.train_sft` (LUFFY's baseline flags scaled down: ZeRO-2, Adam "
            f"offload, bf16, batch 8 = GA 8 × micro-batch 1, cosine with min lr, lr {settings['sft_lr']}), 1 epoch "
            f"of {settings['train']} problems with {operands} operands of {settings['digits']} digit(s), "
            f"one process on the CPU. Evaluation: {settings['test']} held-out "
            f"problems, temperature 0.6, {settings['eval_samples']} answer(s) per problem. The paper's column is "
            "Qwen2.5-Math-7B on six benchmarks, for orientation only.", "",
            "![SFT gradient norm and loss](sft_curves.png)", ""]
    report.save(out, records, meta, text)
    colours = {"both-bugs": "tab:red", "loss-fix": "tab:orange", "optimizer-fix": "tab:purple",
               "both-fixes": "tab:blue"}
    report.sft_curves(os.path.join(out, "sft_curves.png"), records, colours)


def main(argv=None):
    args = parse_args(argv)
    return demo.run_comparison(args, argv, "examples.sftrl_tiny.openrlhf_demo",
                               lambda: (functools.partial(pipeline, args), {}), write, first_port=29700)


if __name__ == "__main__":
    raise SystemExit(main())
