"""Table (test accuracy mean ± std over seeds at equal FLOPs and at the budget, the picked learning
rate, the change over the base model) and the accuracy-against-FLOPs curves of the tiny comparison."""
import os
import statistics

from examples.sftrl_tiny.report import by_config, mean_std, save

LABELS = {"sft_rl_buggy": "SFT→RL, buggy SFT", "sft_rl_fixed": "SFT→RL, corrected", "luffy": "LUFFY",
          "srft": "SRFT", "relift": "ReLIFT", "hpt": "HPT", "prefix_rft": "Prefix-RFT", "bridge": "BRIDGE"}


def improves(rows, base_accuracy):
    """'yes' when every seed ends above the base model, 'no' when none does, else 'mixed'."""
    above = [r["accuracy"] > base_accuracy for r in rows]
    return "yes" if all(above) else "no" if not any(above) else "mixed"


def table(records, meta):
    s = meta["settings"]
    metric = "pass@1" if s["eval_samples"] == 1 else f"avg@{s['eval_samples']}"
    ratio = s["budget_ratio"]
    lines = [f"| method | lr (picked) | validation (%) | test {metric} at F (%) | test {metric} at {ratio:g} F (%) "
             f"| FLOPs at the end | above base at the end | seeds | train time, SFT + RL (s) |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| base model | – | – | {100 * meta['base_accuracy']:.1f} | – | 0 | – | – | – |"]
    for config, rows in by_config(records):
        lr = meta["picked"][config]
        tried = [float(value) for value in meta["tuning"][config]]
        validation = meta["tuning"][config][f"{lr:g}"]
        edge = " (edge)" if len(tried) > 1 and lr in (min(tried), max(tried)) else ""
        mixed = not config.startswith("sft_rl")
        end = mean_std([r["accuracy"] for r in rows], 100) if mixed else "–"
        lines.append(f"| {LABELS.get(config, config)} | {lr:g}{edge} | {100 * validation:.1f} | "
                     f"{mean_std([r['accuracy_at_equal_flops'] for r in rows], 100)} | {end} | "
                     f"{statistics.fmean(r['flops'] for r in rows):.3g} | {improves(rows, meta['base_accuracy'])} | "
                     f"{len(rows)} | {statistics.fmean(r['seconds'] + r.get('sft_s', 0) for r in rows):.0f} |")
    return "\n".join(lines)


def mean_curve(rows):
    """The seeds' curves averaged point by point (runs of one row share their checkpoint marks)."""
    length = min(len(r["curve"]) for r in rows)
    points = [[r["curve"][i] for r in rows] for i in range(length)]
    return ([statistics.fmean(p[0] for p in column) for column in points],
            [100 * statistics.fmean(p[1] for p in column) for column in points],
            [100 * statistics.stdev([p[1] for p in column]) if len(column) > 1 else 0.0 for column in points])


def plot(out, records, meta):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axis = plt.subplots(figsize=(7.5, 4.6))
    for config, rows in by_config(records):
        flops, accuracy, spread = mean_curve(rows)
        line, = axis.plot(flops, accuracy, marker="o", markersize=3, label=LABELS.get(config, config))
        axis.fill_between(flops, [a - s for a, s in zip(accuracy, spread)], [a + s for a, s in zip(accuracy, spread)],
                          color=line.get_color(), alpha=0.15)
    axis.axhline(100 * meta["base_accuracy"], color="grey", linestyle=":", label="base model")
    if meta.get("equal_flops"):
        for ratio, text in ((1.0, "F"), (meta["settings"]["budget_ratio"], f"{meta['settings']['budget_ratio']:g} F")):
            axis.axvline(ratio * meta["equal_flops"], color="black", linewidth=0.6, linestyle="--")
            axis.text(ratio * meta["equal_flops"], axis.get_ylim()[1], text, ha="center", va="bottom", fontsize=8)
    axis.set_xlabel("training FLOPs (6ND SFT, 8ND rollout, 6ND expert trace)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title("Tiny task: test accuracy along each run (mean ± std over seeds)", pad=14)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(os.path.join(out, "accuracy_vs_flops.png"), dpi=110)
    plt.close(figure)


def generous_lines(meta):
    """The generous-budget check: each mixed method at its pick, seed 0, to --generous-ratio x F."""
    runs = meta.get("generous")
    if not runs:
        return []
    ratio, base = meta["settings"]["generous_ratio"], meta["base_accuracy"]
    lines = [f"Generous budget ({ratio:g} F, seed 0, at the picked learning rate; base model {100 * base:.1f}%):", "",
             "| method | lr | test (%) | over the base (points) | FLOPs at the end | steps |", "|---|---|---|---|---|---|"]
    for config, run in runs.items():
        lines.append(f"| {LABELS.get(config, config)} | {run['lr']:g} | {100 * run['accuracy']:.1f} | "
                     f"{100 * (run['accuracy'] - base):+.1f} | {run['flops']:.3g} | {run['steps']} |")
    return lines + [""]


def kept_note(meta):
    """Sentences naming the rows taken from earlier comparisons (--keep) and where they were measured."""
    lines, kept = [], meta.get("kept") or []
    for source in kept:
        names = ", ".join(LABELS.get(c, c) for c in source["configs"])
        lines += [f"Rows kept from an earlier comparison in the same folder (same settings and base model): {names}, "
                  f"measured by `{source['command']}` (wall time {source['wall_s'] / 60:.1f} min).", ""]
    for source in meta.get("generous_kept") or []:
        names = ", ".join(LABELS.get(c, c) for c in source["configs"])
        lines += [f"Generous-budget runs kept from an earlier comparison in the same folder (same ratio): {names}, "
                  f"measured by `{source['command']}` (wall time {source['wall_s'] / 60:.1f} min).", ""]
    if lines:
        lines += ["The wall time above is this run's alone.", ""]
    if meta.get("base_remade"):
        lines += [f"The base model is not committed: this run made it again from the same seeds and checked it against "
                  f"the earlier comparison's (the same parameter count, SFT token count and base test accuracy, "
                  f"{100 * meta['base_accuracy']:.1f}%) before training anything from it.", ""]
    return lines


def write(out, records, meta):
    s = meta["settings"]
    lrs = lambda values: ", ".join(f"{v:g}" for v in values)  # noqa: E731
    text = ["# Tiny task: corrected SFT-then-RL against mixed-policy methods", "",
            f"Command: `{meta['command']}` — wall time {meta['wall_s'] / 60:.1f} min on this machine.", "",
            *kept_note(meta),
            table(records, meta), "",
            *generous_lines(meta),
            f"F = {meta['equal_flops']:.3g} FLOPs, the corrected SFT→RL's (seed {s['seeds'][0]}, picked lr). "
            f"Every row starts from one base model ({meta['parameters']} parameters; pretrained with "
            f"{s['worked_share']:.0%} worked problems among {s['pretrain_documents']} documents) and is evaluated on the "
            f"same {s['test']} test problems at temperature 0.6, {s['eval_samples']} answer(s) each. Learning rates: "
            f"picked on {s['validation']} validation problems (disjoint from train and test) at the end of a seed-"
            f"{s['seeds'][0]} run, from {lrs(s['rl_lrs'])} for SFT→RL's RL stage and {lrs(s['method_lrs'])} for each "
            f"mixed-policy method, a sweep whose pick is at an end extended by one value beyond it (x2 or /2) up to "
            f"{s['extensions']} times (tuning.json has every value tried; \"edge\": still at an end after that). SFT→RL: 1 SFT epoch over {s['train']} expert solutions "
            f"({meta['sft_tokens_per_epoch']} tokens; DeepSpeed ZeRO-2 offload, GA 8, lr {s['sft_lr']}), then GRPO "
            f"{s['grpo_steps']} steps. Mixed-policy methods: from the base model to {s['budget_ratio']:g} F, "
            f"{s['grpo_prompts']} prompts × 8 rows per round (HPT 9: 8 rollouts beside its expert row, as its authors), "
            f"2 optimizer steps per round; \"at F\" is the first "
            f"checkpoint at or past F.", "",
            "![accuracy against FLOPs](accuracy_vs_flops.png)", ""]
    save(out, records, meta, text)
    plot(out, records, meta)


def main(argv=None):
    """Re-render results.md and the plot from a comparison's results.json (after a change to this report)."""
    import argparse
    import json
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out", help="the comparison's --out folder")
    args = parser.parse_args(argv)
    with open(os.path.join(args.out, "results.json"), encoding="utf-8") as handle:
        meta = json.load(handle)
    write(args.out, meta.pop("records"), meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
