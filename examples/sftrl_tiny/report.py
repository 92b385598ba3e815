"""Results of the tiny demo: one record per (configuration, seed) read back from its run folder,
a markdown table (mean ± std over seeds) and the plots (SFT gradient norm and loss per step, like
the paper's Figure 2; reward during GRPO)."""
import json
import os
import statistics

PATCH = "deepspeed-offload-ga-drop"
SMOOTH = 10  # steps per moving-average window in the plots


def read_jsonl(path):
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def patch_state(facts, name=PATCH):
    """A patch's state as the training process saw it."""
    if name in facts.get("patches", {}):
        return facts["patches"][name]
    if facts.get("SFTRL_PATCHES_DISABLE"):
        return f"off (SFTRL_PATCHES_DISABLE={facts['SFTRL_PATCHES_DISABLE']})"
    return "not imported"


def load_run(folder, config, seed):
    sft_steps = [row for row in read_jsonl(os.path.join(folder, "sft", "metrics.jsonl")) if "loss" in row]
    rl_steps = [row for row in read_jsonl(os.path.join(folder, "rl", "metrics.jsonl")) if "reward" in row]
    facts = read_json(os.path.join(folder, "sft", "run.json"))
    after_sft = read_json(os.path.join(folder, "eval_sft.json"))["summary"]
    return {"config": config, "seed": seed, "deepspeed": facts.get("deepspeed"),
            "patch": patch_state(facts),
            "acc_sft": after_sft["accuracy"],
            "acc_rl": read_json(os.path.join(folder, "eval_rl.json"))["summary"]["accuracy"],
            "eval_samples": after_sft["samples"],
            "sft_loss": [row["loss"] for row in sft_steps], "sft_grad_norm": [row["grad_norm"] for row in sft_steps],
            "rl_reward": [row["reward"] for row in rl_steps]}


def mean_std(values, scale=1.0, digits=1):
    values = [v * scale for v in values]
    if len(values) < 2:
        return f"{values[0]:.{digits}f}" if values else "–"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def head_mean(series, fraction=0.1):
    head = series[:max(1, int(len(series) * fraction))]
    return statistics.fmean(head) if head else float("nan")


def tail_mean(series, fraction=0.1):
    tail = series[-max(1, int(len(series) * fraction)):]
    return statistics.fmean(tail) if tail else float("nan")


def metric_name(records):
    """pass@1, or avg@k when every held-out problem got k answers."""
    k = records[0]["eval_samples"] if records else 1
    return "pass@1" if k == 1 else f"avg@{k}"


def by_config(records):
    """[(configuration, its records over seeds)], configurations in the order they first appear."""
    return [(config, [r for r in records if r["config"] == config])
            for config in dict.fromkeys(r["config"] for r in records)]


def joined(rows, key):
    """The distinct values of `key` over a configuration's runs (a version, a patch state)."""
    return ", ".join(sorted({str(r[key]) for r in rows}))


def sft_cells(rows):
    """The columns every SFT-only table ends with: accuracy, late loss, mean gradient norm (mean ± std over seeds)."""
    return (f"{mean_std([r['acc_sft'] for r in rows], 100)} "
            f"| {mean_std([tail_mean(r['sft_loss']) for r in rows], digits=3)} "
            f"| {mean_std([statistics.fmean(r['sft_grad_norm']) for r in rows], digits=3)}")


def table(records):
    metric = metric_name(records)
    lines = [f"| configuration | DeepSpeed | patch in the run | seeds | SFT {metric} (%) | SFT→RL {metric} (%) "
             "| SFT loss, last 10% of steps | SFT grad norm, mean |",
             "|---|---|---|---|---|---|---|---|"]
    for config, rows in by_config(records):
        lines.append(f"| {config} | {joined(rows, 'deepspeed')} | {joined(rows, 'patch')} | {len(rows)} "
                     f"| {mean_std([r['acc_sft'] for r in rows], 100)} "
                     f"| {mean_std([r['acc_rl'] for r in rows], 100)} "
                     f"| {mean_std([tail_mean(r['sft_loss']) for r in rows], digits=3)} "
                     f"| {statistics.fmean(statistics.fmean(r['sft_grad_norm']) for r in rows):.3f} |")
    return "\n".join(lines)


def smooth(series, window=SMOOTH):
    out, total = [], 0.0
    for index, value in enumerate(series):
        total += value
        if index >= window:
            total -= series[index - window]
        out.append(total / min(index + 1, window))
    return out


def mean_curve(rows, key):
    length = min(len(r[key]) for r in rows)
    return [statistics.fmean(r[key][i] for r in rows) for i in range(length)]


def pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sft_curves(path, records, colours, dashed=()):
    """Gradient norm and loss per SFT optimizer step, mean over seeds, one line per configuration."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for config, rows in by_config(records):
        for axis, key, title in ((axes[0], "sft_grad_norm", "gradient norm"), (axes[1], "sft_loss", "training loss")):
            axis.plot(smooth(mean_curve(rows, key)), label=config, color=colours.get(config),
                      linestyle="--" if config in dashed else "-")
            axis.set_title(f"SFT {title} per optimizer step")
            axis.set_xlabel("optimizer step")
    axes[1].set_yscale("log")
    axes[0].legend()
    figure.suptitle(f"mean over seeds, moving average of {SMOOTH} steps")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot(out, records):
    colours = {"buggy": "tab:red", "fixed": "tab:blue", "reference": "tab:green"}
    sft_curves(os.path.join(out, "sft_curves.png"), records, colours, dashed=("reference",))
    reward_curve(os.path.join(out, "rl_reward.png"), records, colours, dashed=("reference",))


def reward_curve(path, records, colours, dashed=()):
    """Mean reward per generation round, mean over seeds, one line per configuration."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 4))
    for config, rows in by_config(records):
        axis.plot(smooth(mean_curve(rows, "rl_reward")), label=config, color=colours.get(config),
                  linestyle="--" if config in dashed else "-")
    axis.set_title(f"GRPO reward per generation round\n(mean over seeds, moving average of {SMOOTH})")
    axis.set_xlabel("generation round")
    axis.set_ylabel("mean reward")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def heading(title, meta):
    """The first lines of every results.md: its title, and the command with its wall time."""
    return [f"# {title}", "",
            f"Command: `{meta['command']}` — wall time {meta['wall_s'] / 60:.1f} min on this machine.", ""]


def save(out, records, meta, markdown_lines):
    """results.json (the run's settings and every record) and results.md."""
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump({**meta, "records": records}, handle, indent=1)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(markdown_lines))


def write(out, records, meta):
    settings = meta["settings"]
    text = heading("Tiny SFT-then-RL: DeepSpeed offload bug, on and off", meta) + [
            table(records), "",
            f"SFT: TRL SFTTrainer, accelerate + DeepSpeed ZeRO-2, GA 8, micro-batch 1, lr {settings['sft_lr']}, "
            f"1 epoch of {settings['train']} problems. GRPO: {settings['grpo_steps']} steps, "
            f"{settings['grpo_prompts']} prompts × 8 rollouts, lr {settings['grpo_lr']}. Evaluation: "
            f"{settings['test']} held-out problems, temperature 0.6, {settings['eval_samples']} answer(s) per problem.", "",
            "![SFT gradient norm and loss](sft_curves.png)", "", "![GRPO reward](rl_reward.png)", ""]
    save(out, records, meta, text)
    plot(out, records)
