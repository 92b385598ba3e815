"""Table (accuracy mean ± std over seeds, training FLOPs) and the accuracy-against-FLOPs plot of
the tiny comparison."""
import os
import statistics

from examples.sftrl_tiny.report import mean_std, save

LABELS = {"sft_rl_buggy": "SFT→RL, buggy SFT", "sft_rl_fixed": "SFT→RL, corrected", "luffy": "LUFFY",
          "srft": "SRFT", "relift": "ReLIFT", "hpt": "HPT", "prefix_rft": "Prefix-RFT"}


def by_config(records):
    grouped = {}
    for record in records:
        grouped.setdefault(record["config"], []).append(record)
    return grouped


def table(records, eval_samples):
    metric = "pass@1" if eval_samples == 1 else f"avg@{eval_samples}"
    lines = [f"| method | {metric} (%) | training FLOPs | seeds | train time (s) |", "|---|---|---|---|---|"]
    for config, rows in by_config(records).items():
        flops = statistics.fmean(r["flops"] for r in rows)
        seconds = statistics.fmean(r["seconds"] for r in rows)
        lines.append(f"| {LABELS.get(config, config)} | {mean_std([r['accuracy'] for r in rows], 100)} | "
                     f"{flops:.3g} | {len(rows)} | {seconds:.0f} |")
    return "\n".join(lines)


def plot(out, records):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(6.5, 4.2))
    for config, rows in by_config(records).items():
        accuracy = [100 * r["accuracy"] for r in rows]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        axis.errorbar(statistics.fmean(r["flops"] for r in rows), statistics.fmean(accuracy), yerr=spread,
                      fmt="o", capsize=4, label=LABELS.get(config, config))
    axis.set_xscale("log")
    axis.set_xlabel("training FLOPs (6ND SFT, 8ND rollout, 6ND expert trace)")
    axis.set_ylabel("held-out accuracy (%)")
    axis.set_title("Tiny task: accuracy against training compute (mean ± std over seeds)")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(os.path.join(out, "accuracy_vs_flops.png"), dpi=110)
    plt.close(figure)


def write(out, records, meta):
    s = meta["settings"]
    text = ["# Tiny task: corrected SFT-then-RL against mixed-policy methods", "",
            f"Command: `{meta['command']}` — wall time {meta['wall_s'] / 60:.1f} min on this machine.", "",
            table(records, s["eval_samples"]), "",
            f"Every run starts from the same pretrained base ({meta['parameters']} parameters) and is evaluated on "
            f"the same {s['test']} held-out problems at temperature 0.6, {s['eval_samples']} answer(s) each. "
            f"SFT→RL: 1 SFT epoch over {s['train']} expert solutions ({meta['sft_tokens_per_epoch']} tokens; "
            f"DeepSpeed ZeRO-2 offload, GA 8, lr {s['sft_lr']}), then GRPO {s['grpo_steps']} steps at lr "
            f"{s['grpo_lr']}. Mixed-policy methods: {s['method_steps']} steps at lr {s['method_lr']}, "
            f"{s['grpo_prompts']} prompts × 8 rows per round, 2 optimizer steps per round.", "",
            "![accuracy against FLOPs](accuracy_vs_flops.png)", ""]
    save(out, records, meta, text)
    plot(out, records)
