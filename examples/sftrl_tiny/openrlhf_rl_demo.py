"""The paper's SFT-then-RL in miniature, both stages on OpenRLHF's own trainers: OpenRLHF 0.9.10's
train_sft (ZeRO-2, Adam offload, GA 8, micro-batch 1; examples.sftrl_tiny.openrlhf_sft), then GRPO
from that checkpoint with its train_ppo_ray on a local Ray cluster (one actor rank, one rollout
engine from the vLLM stand-in; examples.sftrl_tiny.openrlhf_grpo), evaluated on the held-out split
after each stage, for two configurations x 3 seeds:

    both-bugs   every patch off in both stages, by name: as published baselines ran (autoload stays
                on, so the run-time report still says what each process ran with)
    both-fixes  every patch on in both stages (autoload, in the SFT process and in every Ray actor)

Needs OpenRLHF 0.9.10 and DeepSpeed 0.18.9 importable (see examples/sftrl_tiny/openrlhf_demo.py)
and Ray. OpenRLHF's dynamic batching cannot run on a CPU (it forces packed samples and FlashAttention,
see openrlhf_grpo.py), so both configurations run without it. Results go to --out: results.md,
results.json, sft_curves.png, rl_reward.png.

    python -m examples.sftrl_tiny.openrlhf_rl_demo --out results/tiny-openrlhf-rl
"""
import functools
import os
import threading
import time

import sftrl_patches

from . import demo, openrlhf_demo, report

CONFIGS = {"both-bugs": ",".join(sftrl_patches.PATCHES), "both-fixes": None}  # name: SFTRL_PATCHES_DISABLE
ACTOR_PATCHES = ("deepspeed-offload-ga-drop", "openrlhf-actor-loss-aggregation")
SETTINGS = openrlhf_demo.SETTINGS + ("grpo_steps", "grpo_prompts", "grpo_lr")
MINI_BATCHES = 2   # optimizer steps per generation round, as the paper's 128 prompts in mini-batches of 64
RL_MICRO_BATCH = 4  # sequences per backward: GA 8 at the default 8 prompts x 8 rollouts / 2
# One Ray cluster at a time: the other lane's SFT and evaluation run beside it.
RAY_JOBS = threading.Lock()


def parse_args(argv=None):
    parser, args = demo.parse_comparison_args(argv, __doc__, "results/tiny-openrlhf-rl", list(CONFIGS),
                                              {name: demo.DEFAULTS[name] for name in SETTINGS}, demo.SMOKE)
    openrlhf_demo.require_openrlhf(parser)
    if args.grpo_steps % MINI_BATCHES:  # rollouts per step, 4 x prompts, split into micro-batches of 4
        parser.error(f"--grpo-steps must be a multiple of {MINI_BATCHES} (optimizer steps per generation round)")
    return args


def rl_batching(settings):
    """(generation rounds, micro-batch, GA) of the RL stage: --grpo-steps counts optimizer steps."""
    rollouts_per_step = settings["grpo_prompts"] * 8 // MINI_BATCHES
    micro_batch = min(RL_MICRO_BATCH, rollouts_per_step)
    return settings["grpo_steps"] // MINI_BATCHES, micro_batch, rollouts_per_step // micro_batch


def grpo_command(args, seed, sft, rl):
    rounds, micro_batch, _ = rl_batching(vars(args))
    return demo.module("openrlhf_grpo") + [
        "--model", sft, "--data", os.path.join(args.out, "data"), "--out", rl,
        "--steps", str(rounds), "--prompts-per-step", str(args.grpo_prompts),
        "--num-generations", "8", "--mini-batches", str(MINI_BATCHES),
        "--micro-batch", str(micro_batch), "--lr", str(args.grpo_lr),
        "--max-new-tokens", str(args.max_new_tokens), "--seed", str(seed)]


def load_rl(folder):
    steps = [row for row in report.read_jsonl(os.path.join(folder, "rl", "metrics.jsonl")) if not row.get("eval")]
    facts = report.read_json(os.path.join(folder, "rl", "run.json"))
    return {"acc_rl": report.read_json(os.path.join(folder, "eval_rl.json"))["summary"]["accuracy"],
            "rl_deepspeed": facts.get("deepspeed"),
            "rl_patches": {name: facts["patches"].get(name, "not reported") for name in ACTOR_PATCHES},
            "rl_reward": [row["rollout/reward_mean"] for row in steps],
            "rl_grad_norm": [row["actor_grad_norm"] for row in steps if "actor_grad_norm" in row]}


def pipeline(args, config, seed, port, threads, progress):
    """OpenRLHF SFT -> evaluate -> OpenRLHF GRPO -> evaluate for one configuration and seed."""
    env = demo.child_env(threads, disable=CONFIGS[config])
    env["MASTER_PORT"] = str(port)
    record = demo.sft_and_evaluate(args, config, seed, functools.partial(openrlhf_demo.sft_command, args, seed),
                                   env, env, openrlhf_demo.load_run, "OpenRLHF", progress, last=False)
    folder = os.path.join(args.out, "runs", f"{config}-seed{seed}")
    rl = os.path.join(folder, "rl")
    with RAY_JOBS:
        started = time.time()
        demo.run(grpo_command(args, seed, os.path.join(folder, "sft"), rl), os.path.join(folder, "grpo.log"), env)
        record["grpo_s"] = time.time() - started
    demo.run(demo.evaluation_command(args, seed, rl, os.path.join(folder, "eval_rl.json")),
             os.path.join(folder, "eval_rl.log"), env)
    record.update(load_rl(folder))
    progress.say(f"{config} seed {seed}: accuracy {record['acc_sft']:.3f} after SFT, {record['acc_rl']:.3f} after "
                 f"OpenRLHF GRPO ({record['grpo_s']:.0f} s)", finished=True)
    return record


def table(records):
    metric = report.metric_name(records)
    lines = [f"| configuration | OpenRLHF | DeepSpeed | SFT: offload / loss patch | RL actor: offload / loss patch "
             f"| seeds | SFT {metric} (%) | SFT→RL {metric} (%) | RL reward, first 10% of rounds "
             "| RL reward, last 10% |", "|---|---|---|---|---|---|---|---|---|---|"]
    for config, rows in report.by_config(records):
        actor = " / ".join(report.joined([{"state": r["rl_patches"][name]} for r in rows], "state")
                           for name in ACTOR_PATCHES)
        lines.append(f"| {config} | {report.joined(rows, 'openrlhf')} | {report.joined(rows, 'deepspeed')} "
                     f"| {report.joined(rows, 'optimizer_patch')} / {report.joined(rows, 'loss_patch')} | {actor} "
                     f"| {len(rows)} | {report.mean_std([r['acc_sft'] for r in rows], 100)} "
                     f"| {report.mean_std([r['acc_rl'] for r in rows], 100)} "
                     f"| {report.mean_std([report.head_mean(r['rl_reward']) for r in rows], digits=3)} "
                     f"| {report.mean_std([report.tail_mean(r['rl_reward']) for r in rows], digits=3)} |")
    return "\n".join(lines)


def write(out, records, meta):
    settings = meta["settings"]
    rounds, micro_batch, accumulation = rl_batching(settings)
    text = report.heading("Tiny SFT-then-RL on OpenRLHF: both bugs against both fixes, in both stages", meta) + [
            table(records), "",
            f"SFT: OpenRLHF's own `openrlhf.cli.train_sft` (ZeRO-2, Adam offload, bf16, batch 8 = GA 8 × micro-batch "
            f"1, lr {settings['sft_lr']}), 1 epoch of {settings['train']} problems. GRPO: OpenRLHF's own "
            f"`openrlhf.cli.train_ppo_ray` (group-normalised advantages without std normalisation, no KL, clip "
            f"0.2/0.28, ZeRO-2 with Adam offload, bf16), {rounds} generation rounds of {settings['grpo_prompts']} "
            f"prompts × 8 rollouts, {MINI_BATCHES} optimizer steps per round (GA {accumulation} × micro-batch "
            f"{micro_batch}), lr {settings['grpo_lr']}, one actor rank and one rollout engine (the vLLM stand-in) "
            f"on a local Ray cluster. Evaluation: {settings['test']} held-out problems, temperature 0.6, "
            f"{settings['eval_samples']} answer(s) per problem. Patch states are those reported inside the SFT "
            "process and inside the Ray actor that trains.", "",
            "![SFT gradient norm and loss](sft_curves.png)", "", "![GRPO reward](rl_reward.png)", ""]
    report.save(out, records, meta, text)
    colours = {"both-bugs": "tab:red", "both-fixes": "tab:blue"}
    report.sft_curves(os.path.join(out, "sft_curves.png"), records, colours)
    report.reward_curve(os.path.join(out, "rl_reward.png"), records, colours)


def main(argv=None):
    args = parse_args(argv)
    return demo.run_comparison(args, argv, "examples.sftrl_tiny.openrlhf_rl_demo",
                               lambda: (functools.partial(pipeline, args), {}), write, first_port=29800)


if __name__ == "__main__":
    raise SystemExit(main())
