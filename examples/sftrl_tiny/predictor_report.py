"""The predictor study's report: per variant, the pre-RL measures and the post-RL accuracy (mean ± std over
seeds); per measure, how well it predicts the post-RL accuracy over every run; the paper's two data claims
checked; a scatter plot per measure."""
import os
import statistics

from .correlation import bootstrap_interval, r_squared, spearman
from .report import heading, mean_std, save


def predictor_rows(records, predictors):
    """[(name, label, rho, rho interval, R², R² interval)] over every run."""
    outcome = [r["rl_accuracy"] for r in records]
    rows = []
    for name, label, _ in predictors:
        values = [r[name] for r in records]
        rows.append((name, label, spearman(values, outcome), bootstrap_interval(spearman, values, outcome),
                     r_squared(values, outcome), bootstrap_interval(r_squared, values, outcome)))
    return rows


def by_variant(records):
    groups = {}
    for record in records:
        groups.setdefault(record["config"], []).append(record)
    return groups


def claim_lines(groups):
    """The paper's data claims, as the tiny runs answer them (means over seeds, in points)."""
    def mean(config, key):
        return 100 * statistics.fmean(r[key] for r in groups[config])
    lines = []
    if {"fixed", "half_2ep"} <= set(groups):
        gap = mean("half_2ep", "rl_accuracy") - mean("fixed", "rl_accuracy")
        lines.append(f"- 2 epochs over half the problems against 1 epoch over all of them, after RL: "
                     f"{gap:+.1f} points (Quagmires: better). "
                     + ("Agrees." if gap > 0 else "Does not agree at this scale."))
    if {"fixed", "short_only"} <= set(groups):
        sft_gap = mean("short_only", "sft_accuracy") - mean("fixed", "sft_accuracy")
        rl_gap = mean("short_only", "rl_accuracy") - mean("fixed", "rl_accuracy")
        agrees = sft_gap > 0 > rl_gap
        lines.append(f"- short problems only against all of them: {sft_gap:+.1f} points after SFT, {rl_gap:+.1f} after "
                     f"RL (Quagmires: higher after SFT, lower after RL). "
                     + ("Agrees." if agrees else "Does not agree at this scale."))
    pear = [c for c in ("pear_token", "pear_block", "pear_seq") if c in groups]
    if "fixed" in groups and pear:
        gaps = ", ".join(f"{c} {mean(c, 'rl_accuracy') - mean('fixed', 'rl_accuracy'):+.1f}" for c in pear)
        lines.append(f"- PEAR against plain SFT, after RL (points): {gaps} (PEAR: higher).")
    return lines


def write(out, records, meta):
    from .predictor_study import PREDICTORS, VARIANTS
    settings = meta["settings"]
    groups = by_variant(records)
    n = settings["pass_k_samples"]
    lines = heading("What predicts the score after RL, and PEAR, on the tiny pipeline", meta)
    for session in meta.get("earlier_sessions", []):
        lines += [f"Resumed (`--resume`): {session['finished_runs']} runs were finished by an earlier `{session['command']}` "
                  f"({session['wall_s'] / 60:.1f} min); the wall time above is this session's alone.", ""]
    if meta.get("finished_runs", 0) < meta.get("asked_runs", 0):
        lines += [f"Stopped early: {meta['finished_runs']} of the {meta['asked_runs']} runs asked for finished; the "
                  "report (`--report-only`) reads those. The wall time runs from the base model to the last of them.", ""]
    lines += [
        "| variant | what | seeds | SFT avg@N (%) | pass@N (%) | held-out loss | after RL (%) | RL gain (points) |",
        "|---|---|---|---|---|---|---|---|"]
    for config in [c for c in VARIANTS if c in groups]:
        rows = groups[config]
        gains = [r["rl_accuracy"] - r["sft_accuracy"] for r in rows]
        lines.append(f"| {config} | {VARIANTS[config][0]} | {len(rows)} | "
                     f"{mean_std([r['sft_accuracy'] for r in rows], 100)} | "
                     f"{mean_std([r['pass_at_max'] for r in rows], 100)} | "
                     f"{mean_std([r['heldout_loss'] for r in rows], 1, 3)} | "
                     f"{mean_std([r['rl_accuracy'] for r in rows], 100)} | {mean_std(gains, 100)} |")
    lines += ["", f"N = {n}. Before RL on {settings['validation']} validation problems (temperature 0.6); after RL "
              f"on {settings['test']} test problems, {settings['eval_samples']} answers each. The RL gain subtracts "
              "two different splits' accuracies: read it as a rough guide.", "",
              f"How well each pre-RL measure predicts the post-RL accuracy over all {len(records)} runs (90% bootstrap "
              "intervals over runs; the held-out loss should correlate negatively):", "",
              "| measure | Spearman rho | interval | R² | interval |", "|---|---|---|---|---|"]
    for _, label, rho, rho_ci, r2, r2_ci in predictor_rows(records, PREDICTORS):
        lines.append(f"| {label.replace('N', str(n)) if label.endswith('@N') else label} | {rho:+.2f} | "
                     f"[{rho_ci[0]:+.2f}, {rho_ci[1]:+.2f}] | {r2:.2f} | [{r2_ci[0]:.2f}, {r2_ci[1]:.2f}] |")
    lines += ["", "The paper's claims, at this scale:", ""] + claim_lines(groups) + [
        "", f"SFT: TRL SFTTrainer, accelerate + DeepSpeed ZeRO-2 offload, GA 8, micro-batch 1, lr {settings['sft_lr']}, "
        f"{settings['train']} problems of {settings['operands']}-{settings['max_operands']} operands "
        f"({meta.get('short_problems', '?')} with the fewest). GRPO: {settings['grpo_steps']} steps, "
        f"{settings['grpo_prompts']} prompts x 8 rollouts, lr {settings['grpo_lr']}.", "",
        "![pre-RL measures against the post-RL accuracy](predictors.png)", ""]
    save(out, records, meta, lines)
    plot(out, records, PREDICTORS)


def plot(out, records, predictors):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    figure, axes = plt.subplots(1, len(predictors), figsize=(4 * len(predictors), 3.6), squeeze=False)
    groups = by_variant(records)
    for axis, (name, label, _) in zip(axes[0], predictors):
        for config, rows in groups.items():
            axis.scatter([r[name] for r in rows], [100 * r["rl_accuracy"] for r in rows], label=config, s=18)
        axis.set_xlabel(label)
        axis.set_ylabel("after RL (%)")
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    figure.savefig(os.path.join(out, "predictors.png"), dpi=110)
    plt.close(figure)
