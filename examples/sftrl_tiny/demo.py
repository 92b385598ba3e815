"""The paper's bug table in miniature, on a CPU: SFT with TRL through accelerate + DeepSpeed
ZeRO-2 (GA 8, micro-batch 1), then GRPO from each SFT checkpoint, then evaluation on a held-out
split, for three configurations x 3 seeds:

    buggy      optimizer offloaded to CPU, patches off (SFTRL_PATCHES_DISABLE=1)
    fixed      optimizer offloaded to CPU, patches on (autoload; nothing imports them here)
    reference  no offload: DeepSpeed's other code path, untouched by the bug

Everything is made here: generated arithmetic data, a locally trained tokenizer, a tiny Qwen2
pretrained briefly on one-operation sums. It needs an affected DeepSpeed (0.15.2 to 0.18.9) for
`buggy` to be buggy; the table says which DeepSpeed ran and what state the patch was in, as seen
inside each training process. Results go to --out: results.md, results.json, plots.

    python -m examples.sftrl_tiny.demo --out results/tiny
"""
import argparse
import functools
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from . import data, report

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = {  # name: (DeepSpeed config, patches on)
    "buggy": ("zero2_offload.json", False),
    "fixed": ("zero2_offload.json", True),
    "reference": ("zero2.json", True),
}
DEFAULTS = dict(train=4000, test=200, operands=3, max_operands=0, digits=1, pretrain_documents=96000, sft_lr=1e-3,
                grpo_steps=100, grpo_prompts=8, grpo_lr=5e-5, eval_samples=4, max_new_tokens=64)
SMOKE = dict(train=64, test=16, pretrain_documents=640, grpo_steps=4, grpo_prompts=2, eval_samples=1)


def parse_comparison_args(argv, doc, out, configs, defaults, smoke, add_arguments=None):
    """The flags every tiny comparison takes: --out, --configs, --seeds, --parallel, --smoke, and one
    flag per setting in `defaults` (with --smoke, `smoke`'s value where it has one); add_arguments(parser)
    adds a comparison's own. The settings are checked before anything is written. Returns (parser, args)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    parser.add_argument("--out", default=out, help="results folder (created)")
    parser.add_argument("--configs", nargs="+", choices=configs, default=configs)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2, help="runs at once (one CPU thread each)")
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything (CI)")
    for name, value in defaults.items():
        parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=None,
                            help=f"default {value}")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, smoke.get(name, value) if args.smoke else value)
    check_settings(parser, args)
    return parser, args


def parse_args(argv=None):
    return parse_comparison_args(argv, __doc__, "results/tiny", list(CONFIGS), DEFAULTS, SMOKE)[1]


def check_settings(parser, args):
    """Errors in the settings every comparison shares, before anything is written."""
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    if args.max_operands and args.max_operands < args.operands:
        parser.error(f"--max-operands ({args.max_operands}) must be 0 or >= --operands ({args.operands})")


class Progress:
    def __init__(self, total):
        self.total, self.done, self.started, self.lock = total, 0, time.time(), threading.Lock()

    def say(self, text, finished=False):
        with self.lock:
            self.done += finished
            print(f"[{time.time() - self.started:6.0f} s] [{self.done}/{self.total}] {text}", flush=True)


def run(command, log_path, env=None):
    """Run one step, its output to a log file; a failure names the log."""
    with open(log_path, "w", encoding="utf-8") as log:
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    if result.returncode:
        with open(log_path, encoding="utf-8") as log:
            tail = "".join(log.readlines()[-20:])
        raise RuntimeError(f"{' '.join(command[:4])} ... failed (exit {result.returncode}); log {log_path}:\n{tail}")


def child_env(threads, disable=None):
    """The environment of one training or evaluation step; `disable` is SFTRL_PATCHES_DISABLE's value."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu"), "MASTER_ADDR": "127.0.0.1",
           "PYTHONPATH": os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH")] if p)}
    env.pop("SFTRL_PATCHES_DISABLE", None)
    if disable:
        env["SFTRL_PATCHES_DISABLE"] = disable
    return env


def module(name):
    return [sys.executable, "-m", f"examples.sftrl_tiny.{name}"]


def evaluation_command(args, seed, model, out, split="test"):
    """Held-out evaluation of a checkpoint (or of a list of them, each to its out), the same for every
    run of a comparison."""
    models, outs = ([model], [out]) if isinstance(model, str) else (list(model), list(out))
    return module("evaluate") + ["--data", os.path.join(args.out, "data"), "--split", split, "--temperature", "0.6",
                                 "--samples", str(args.eval_samples), "--max-new-tokens", str(args.max_new_tokens),
                                 "--seed", str(seed), "--model", *models, "--out", *outs]


def sft_and_evaluate(args, config, seed, command, train_env, eval_env, load_run, framework, progress, last=True):
    """One run of an SFT-only comparison: command(sft_folder) trains, the held-out split is evaluated,
    load_run(folder, config, seed) reads the record back; the SFT wall time goes with it. last=False
    when the run goes on after SFT (progress counts it finished later)."""
    folder = os.path.join(args.out, "runs", f"{config}-seed{seed}")
    os.makedirs(folder, exist_ok=True)
    sft = os.path.join(folder, "sft")
    started = time.time()
    run(command(sft), os.path.join(folder, "sft.log"), train_env)
    seconds = time.time() - started
    run(evaluation_command(args, seed, sft, os.path.join(folder, "eval_sft.json")),
        os.path.join(folder, "eval_sft.log"), eval_env)
    record = load_run(folder, config, seed)
    record["sft_s"] = seconds
    progress.say(f"{config} seed {seed}: accuracy {record['acc_sft']:.3f} after {framework} SFT ({seconds:.0f} s)",
                 finished=last)
    return record


def rl_round_flags(args, steps, lr, seed, generations=8):
    """The RL flags every run shares: P prompts x 8 rollouts per round (or `generations` rows per
    prompt), 2 mini-batches, the demo's lengths."""
    return ["--steps", str(steps), "--prompts-per-step", str(args.grpo_prompts), "--num-generations", str(generations),
            "--mini-batches", "2", "--lr", str(lr), "--max-completion-length", str(args.max_new_tokens),
            "--seed", str(seed)]


def config_env(config, threads):
    """A configuration's environment: its patches off (SFTRL_PATCHES_DISABLE=1) or left to autoload."""
    return child_env(threads, disable=None if CONFIGS[config][1] else "1")


def sft_command(args, config, seed, port, out):
    """One SFT epoch from the shared base with TRL through accelerate + the configuration's DeepSpeed ZeRO-2."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
            os.path.join(HERE, "configs", "accelerate_deepspeed.yaml"), "--deepspeed_config_file",
            os.path.join(HERE, "configs", CONFIGS[config][0]), "--main_process_port", str(port),
            "-m", "examples.sftrl_tiny.sft", "--model", os.path.join(args.out, "base"),
            "--data", os.path.join(args.out, "data"), "--out", out, "--epochs", "1", "--micro-batch", "1",
            "--grad-accum", "8", "--lr", str(args.sft_lr), "--seed", str(seed)]


def grpo_command(args, sft, out, lr, seed, extra=()):
    """GRPO from an SFT checkpoint for --grpo-steps, the flags every RL run shares."""
    return (module("grpo") + ["--model", sft, "--data", os.path.join(args.out, "data"), "--out", out]
            + rl_round_flags(args, args.grpo_steps, lr, seed) + list(extra))


def pipeline(args, config, seed, port, threads, progress):
    """SFT -> evaluate -> GRPO -> evaluate for one configuration and seed; returns its record."""
    folder = os.path.join(args.out, "runs", f"{config}-seed{seed}")
    os.makedirs(folder, exist_ok=True)
    env = config_env(config, threads)
    sft, rl = os.path.join(folder, "sft"), os.path.join(folder, "rl")
    steps = {}
    started = time.time()
    run(sft_command(args, config, seed, port, sft), os.path.join(folder, "sft.log"), env)
    steps["sft_s"] = time.time() - started
    progress.say(f"{config} seed {seed}: SFT done in {steps['sft_s']:.0f} s")
    run(evaluation_command(args, seed, sft, os.path.join(folder, "eval_sft.json")),
        os.path.join(folder, "eval_sft.log"), env)
    started = time.time()
    run(grpo_command(args, sft, rl, args.grpo_lr, seed), os.path.join(folder, "grpo.log"), env)
    steps["grpo_s"] = time.time() - started
    run(evaluation_command(args, seed, rl, os.path.join(folder, "eval_rl.json")),
        os.path.join(folder, "eval_rl.log"), env)
    record = report.load_run(folder, config, seed)
    record.update(steps)
    progress.say(f"{config} seed {seed}: accuracy {record['acc_sft']:.3f} after SFT, {record['acc_rl']:.3f} "
                 f"after RL (GRPO {steps['grpo_s']:.0f} s)", finished=True)
    return record


def prepare(args, progress):
    """Data, tokenizer and the shared base model, made once for every run."""
    from transformers import AutoTokenizer
    from . import model, pretrain, tokenizer as tokenizer_module
    # --max-operands 0: every problem has --operands operands; a comparison that tunes adds a validation split
    validation, worked_share = getattr(args, "validation", 0), getattr(args, "worked_share", 0.0)
    splits = data.generate(args.train, args.test, args.operands, args.digits, seed=1234,
                           max_operands=args.max_operands or None, validation=validation)
    for name, rows in zip(data.SPLITS, splits):
        data.write_jsonl(rows, os.path.join(args.out, "data", f"{name}.jsonl"))
    train, test = splits[:2]
    tokenizer = tokenizer_module.train(train)
    tokenizer_module.save(tokenizer, os.path.join(args.out, "tokenizer"))
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(args.out, "tokenizer"))
    progress.say(f"data ({', '.join(f'{len(rows)} {name}' for name, rows in zip(data.SPLITS, splits))}) and a "
                 f"{len(tokenizer)}-token tokenizer; pretraining the base model on {args.pretrain_documents} documents "
                 f"({worked_share:.0%} worked problems, the rest one-operation sums)")
    base = model.build(tokenizer, seed=0)
    held_out = {data.question(row) for rows in splits[1:] for row in rows}
    documents = pretrain.corpus(args.pretrain_documents, seed=0, operands=max(args.operands, args.max_operands),
                                digits=args.digits, worked_share=worked_share, held_out=held_out,
                                chat=pretrain.chat_writer(tokenizer))
    pretrain.pretrain(base, tokenizer, documents, log=lambda line: progress.say(line))
    base.save_pretrained(os.path.join(args.out, "base"))
    tokenizer_module.save(tokenizer, os.path.join(args.out, "base"))


def run_comparison(args, argv, module_name, make_runner, write, first_port, reuse_base=False):
    """One tiny comparison from start to end: the data and base model made once in --out (kept when
    `reuse_base` and --out holds them), then `make_runner()` -> (run_one, extra meta); run_one(config, seed,
    port, threads, progress) for every configuration x seed, --parallel at a time; write(out, records, meta);
    results.md printed."""
    os.makedirs(args.out, exist_ok=True)
    jobs = [(config, seed) for seed in args.seeds for config in args.configs]
    progress = Progress(len(jobs))
    started = time.time()
    if not (reuse_base and os.path.isdir(os.path.join(args.out, "base"))):
        prepare(args, progress)
    run_one, extra_meta = make_runner()
    lanes = min(args.parallel, len(jobs))
    threads = max(1, (os.cpu_count() or 1) // lanes)
    with ThreadPoolExecutor(lanes) as pool:
        futures = [pool.submit(run_one, config, seed, first_port + index, threads, progress)
                   for index, (config, seed) in enumerate(jobs)]
        records = [future.result() for future in futures]
    return finish_comparison(args, argv, module_name, started, records, extra_meta, write)


def finish_comparison(args, argv, module_name, started, records, extra_meta, write):
    """A comparison's end: write(out, records, meta) with the command, wall time and settings; results.md printed."""
    wall = time.time() - started
    command = f"python -m {module_name} " + " ".join(argv if argv is not None else sys.argv[1:])
    write(args.out, records, {"command": command.strip(), "wall_s": wall, "settings": vars(args), **extra_meta})
    print(f"done in {wall / 60:.1f} min: {os.path.join(args.out, 'results.md')}")
    print(open(os.path.join(args.out, "results.md"), encoding="utf-8").read())
    return 0


def main(argv=None):
    args = parse_args(argv)
    return run_comparison(args, argv, "examples.sftrl_tiny.demo", lambda: (functools.partial(pipeline, args), {}),
                          report.write, first_port=29600)


if __name__ == "__main__":
    raise SystemExit(main())
