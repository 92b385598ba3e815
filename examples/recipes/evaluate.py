"""The paper's evaluation, as commands of examples/sftrl_tiny/evaluate.py on vLLM: temperature 0.6,
up to 8192 new tokens, avg@32 on AIME24, AIME25 and AMC, pass@1 on MATH-500, Minerva and
OlympiadBench, Math-Verify grading. Benchmark sets load from the hub (rows with problem/question
and answer are accepted); pass --benchmark NAME=SOURCE to use other copies.

Predictors of the score after RL (examples/sftrl_tiny/predictors.py), off by default:
--pass-k-samples N adds the unbiased pass@1..min(64, N) to every benchmark's json (N = a benchmark's
own answers per problem reuses them, e.g. 32 on AIME; any other N draws N more); --heldout-data
SOURCE adds a `heldout` command: the mean token NLL of the checkpoint on held-out expert solutions
(rows with `target`, e.g. problems kept out of the SFT data), tokenised as SFT trains on them, no
generation.

    python -m examples.recipes.evaluate --model ckpt/trl/grpo --dry-run
    python -m examples.recipes.evaluate --model ckpt/trl/sft --pass-k-samples 64 \
        --heldout-data data/openr1_heldout.jsonl --dry-run
"""
import argparse
import os

from . import common

BENCHMARKS = {  # name: (default source, answers per problem)
    "aime24": ("HuggingFaceH4/aime_2024", 32), "aime25": ("math-ai/aime25", 32), "amc": ("math-ai/amc23", 32),
    "math500": ("HuggingFaceH4/MATH-500", 1), "minerva": ("math-ai/minervamath", 1),
    "olympiadbench": ("math-ai/olympiadbench", 1),
}


def commands(args, sources):
    for name, (source, samples) in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        yield name, common.python_module(
            "examples.sftrl_tiny.evaluate", "--backend", "vllm", "--model", args.model,
            "--data", sources.get(name, source), "--split", "test", "--samples", str(samples),
            "--temperature", "0.6", "--top-p", "0.95", "--max-new-tokens", "8192",
            "--tensor-parallel-size", str(args.tensor_parallel_size),
            *(["--pass-k-samples", str(args.pass_k_samples)] if args.pass_k_samples else []),
            "--out", os.path.join(args.out, f"{name}.json"))
    if args.heldout_data:
        yield "heldout", common.python_module(
            "examples.sftrl_tiny.evaluate", "--model", args.model, "--data", args.heldout_data,
            "--split", args.heldout_split, "--samples", "0", "--heldout-loss",
            "--heldout-batch-size", str(args.heldout_batch_size),
            *(["--max-samples", str(args.heldout_max_samples)] if args.heldout_max_samples else []),
            "--out", os.path.join(args.out, "heldout.json"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--model", required=True, help="checkpoint folder or hub name")
    parser.add_argument("--out", default="eval", help="folder for one json per benchmark")
    parser.add_argument("--only", nargs="+", choices=list(BENCHMARKS), help="a subset of the benchmarks")
    parser.add_argument("--benchmark", action="append", default=[], metavar="NAME=SOURCE",
                        help="another copy of a benchmark: a hub name or jsonl file")
    parser.add_argument("--tensor-parallel-size", type=int, default=1)
    parser.add_argument("--pass-k-samples", type=int, default=0, metavar="N",
                        help="also report pass@1..min(64, N) from N answers per problem (0: off)")
    parser.add_argument("--heldout-data", metavar="SOURCE",
                        help="rows with expert solutions (jsonl, folder or hub): adds the held-out loss command")
    parser.add_argument("--heldout-split", default="train", help="split of --heldout-data (a folder or hub set)")
    parser.add_argument("--heldout-max-samples", type=int, default=None, help="use only the first N held-out rows")
    parser.add_argument("--heldout-batch-size", type=int, default=1, help="sequences per forward (8k-token rows)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = parser.parse_args(argv)
    if args.pass_k_samples < 0:
        parser.error("--pass-k-samples must be >= 0")
    sources = {}
    for item in args.benchmark:
        name, _, source = item.partition("=")
        if name not in BENCHMARKS or not source:
            parser.error(f"--benchmark wants NAME=SOURCE with NAME in {', '.join(BENCHMARKS)}; got {item!r}")
        sources[name] = source
    os.makedirs(args.out, exist_ok=True)
    status = 0
    for name, command in commands(args, sources):
        print(f"# {name}")
        status = status or common.finish(command, {}, args.dry_run)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
