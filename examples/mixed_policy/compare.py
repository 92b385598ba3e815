"""Corrected SFT-then-RL against the mixed-policy methods on the tiny CPU task, like the paper's
Table 1 in miniature, under one protocol for every row:

    sft_rl_buggy   SFT (DeepSpeed ZeRO-2 offload, patches off) then GRPO   (examples.sftrl_tiny)
    sft_rl_fixed   the same with the patches on
    luffy, srft, relift, hpt, prefix_rft   one RL-stage run each from the base model

- Base: every row starts from one base model, pretrained with a share of whole worked problems
  (--worked-share) so that it earns some reward before any fine-tuning, as a math base model does.
- Tuning: a validation split disjoint from train and test; for every row a learning-rate sweep
  (--rl-lrs for SFT-then-RL's RL stage, --method-lrs for each mixed-policy method), seed 0, the
  pick made on validation accuracy at the end of the run. A pick at either end of its sweep
  extends the sweep by one value beyond it (x2 or /2), up to --extensions times, so that no row
  is left at the edge of its grid. tuning.json holds method -> learning rate -> validation
  accuracy. The other seeds run at the pick.
- Settings: each method's options are its authors' (examples.recipes.mixed_policy.OPTIONS, the
  paper-scale recipe's: the entropy bonus, LUFFY's baseline over the whole group, ...).
- Generous budget: each mixed method again at its pick (seed 0) to --generous-ratio x F (4), to check
  that it improves over the base model when compute is not what holds it back.
- Reuse: --keep CONFIG... takes those rows from the comparison already in --out (its data, base model
  and F too, all settings equal) and runs the others anew; results.md names the kept rows. Their
  generous-budget runs are kept too when the ratio is the same. The base model is not committed: in
  a fresh clone it is made again from the same seeds, and the run stops unless its size, the SFT
  token count and its test accuracy equal the earlier comparison's.
- Budgets: F is the corrected SFT-then-RL's training FLOPs (seed 0, at its pick). Every mixed
  method runs to --budget-ratio x F (1.8: LUFFY's compute over the truncated SFT-then-RL's in the
  paper), checkpointed on the way; the table reads each at F (equal FLOPs) and at the end, and the
  curves plot every checkpoint's test accuracy against its FLOPs.

FLOPs follow the paper's accounting (6ND per SFT token, 8ND per generated token, 6ND per expert
token in an RL batch). Writes results.md, results.json, tuning.json and accuracy_vs_flops.png.

    python -m examples.mixed_policy.compare --out examples/mixed_policy/results
"""
import hashlib
import itertools
import json
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from examples.recipes import mixed_policy as mixed_policy_recipe
from examples.sftrl_tiny import checkpoints, data, demo
from examples.sftrl_tiny.loading import load_rows
from examples.sftrl_tiny.report import read_json, read_jsonl

from . import flops as flops_module
from .methods import METHODS

BASELINES = {"sft_rl_buggy": "buggy", "sft_rl_fixed": "fixed"}
MIXED = [name for name in METHODS if name != "grpo"]
EQUAL_MARKS = (0.25, 0.5, 0.75, 1.0)  # checkpoints of a mixed run, as fractions of F (then every 0.4 F to the end)
DEFAULTS = dict(validation=200, worked_share=0.03, grpo_steps=50, rl_lrs="5e-6,1e-5,2e-5",
                method_lrs="5e-5,1e-4,2.5e-4", extensions=2, budget_ratio=1.8, method_steps=5000, rl_checkpoints=4,
                generous_ratio=4.0)
SMOKE = dict(validation=16, grpo_steps=4, rl_lrs="5e-5,1e-4", method_lrs="5e-4,1e-3", extensions=0, method_steps=24,
             rl_checkpoints=2, generous_ratio=2.5)


def add_keep(parser):
    parser.add_argument("--keep", nargs="+", default=[], choices=list(BASELINES) + MIXED, metavar="CONFIG",
                        help="rows to take from the comparison already in --out (its results.json) instead of running "
                             "them again, with its data, base model, base accuracy and F; the other rows run anew "
                             "(after a change to some methods only)")


def parse_args(argv=None):
    parser, args = demo.parse_comparison_args(argv, __doc__, "results/mixed_policy", list(BASELINES) + MIXED,
                                              {**demo.DEFAULTS, **DEFAULTS}, demo.SMOKE | SMOKE, add_keep)
    try:
        args.rl_lrs, args.method_lrs = learning_rates(args.rl_lrs), learning_rates(args.method_lrs)
    except ValueError as exc:
        parser.error(str(exc))
    if set(args.configs) & set(MIXED) and "sft_rl_fixed" not in args.configs:
        parser.error("the mixed-policy methods' budget is the corrected SFT-then-RL's FLOPs: keep sft_rl_fixed "
                     "in --configs")
    if args.budget_ratio < 1:
        parser.error("--budget-ratio must be >= 1 (the runs are read at 1 x F on their way)")
    if args.generous_ratio and args.generous_ratio <= args.budget_ratio:
        parser.error("--generous-ratio must be above --budget-ratio (or 0: no generous-budget check)")
    if args.extensions < 0:
        parser.error("--extensions must be >= 0")
    if args.validation < 1:
        parser.error("--validation must be >= 1: the learning rates are picked on it")
    if set(args.keep) - set(args.configs):
        parser.error("--keep names rows that are not in --configs")
    try:
        args.previous = kept_comparison(args) if args.keep else None
    except ValueError as exc:
        parser.error(str(exc))
    return args


# what a --keep run may change: a kept method's generous-budget run is reused only at the same ratio
FREE_SETTINGS = ("configs", "keep", "parallel", "out", "previous", "generous_ratio")


def kept_comparison(args):
    """The earlier comparison in --out whose --keep rows are reused: it must hold them, and share the settings
    that make its rows comparable with new ones."""
    path = os.path.join(args.out, "results.json")
    if not os.path.exists(path):
        raise ValueError(f"--keep needs an earlier comparison in {args.out} (its results.json)")
    previous = read_json(path)
    missing = [c for c in args.keep if c not in {r["config"] for r in previous["records"]}]
    if missing:
        raise ValueError(f"--keep: {', '.join(missing)} not in {path}")
    if set(args.keep) & set(MIXED) and "sft_rl_fixed" not in args.keep:
        raise ValueError("--keep: kept mixed-policy rows ran to the earlier F; keep sft_rl_fixed too")
    changed = [name for name, value in vars(args).items()
               if name not in FREE_SETTINGS and previous["settings"].get(name) != value]
    if changed:
        raise ValueError(f"--keep: these settings differ from the earlier comparison: {', '.join(changed)}")
    return previous


def base_digest(folder):
    """sha256 of the base model's weights: the proof that a base made again is the earlier one, bit for bit."""
    digest = hashlib.sha256()
    with open(os.path.join(folder, "model.safetensors"), "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_remade_base(study, previous, accuracy):
    """A base model made again (not committed, so absent from a fresh clone) must be the earlier one: kept rows
    were trained from it. Its size, the SFT token count it implies and its test accuracy must be equal, and its
    weights' digest where the earlier run recorded one (runs before 2026-12-06 did not: their numbers are the
    evidence then, not a proof)."""
    now = {"parameters": study.parameters, "sft_tokens_per_epoch": study.sft_tokens, "base_accuracy": accuracy}
    if previous.get("base_digest"):
        now["base_digest"] = base_digest(study.base)
    differ = [f"{name} {previous[name]} then, {value} now" for name, value in now.items() if previous[name] != value]
    if differ:
        raise SystemExit(f"--keep: the base model made again in {study.base} is not the earlier comparison's "
                         f"({'; '.join(differ)}); its kept rows cannot stand beside new ones. Run the whole "
                         f"comparison without --keep.")
    study.progress.say("base model made again: parameters, SFT tokens and test accuracy equal the earlier ones"
                       + ("; so do its weights (sha256)" if "base_digest" in now else
                          "; the earlier run recorded no digest of its weights, so they were not compared"))


def kept_generous(previous, args, kept):
    """The earlier generous-budget runs of kept methods, when they ran to the same ratio."""
    if previous is None or previous["settings"].get("generous_ratio") != args.generous_ratio:
        return {}
    return {m: run for m, run in (previous.get("generous") or {}).items() if m in kept}


def kept_sources(previous, kept, field="kept"):
    """Where each kept row (field "kept") or reused generous-budget run ("generous_kept") was measured:
    [{configs, command, wall_s}], one kept twice traced to its first run."""
    sources, traced = [], set()
    for source in previous.get(field) or []:
        mine = [c for c in source["configs"] if c in kept]
        if mine:
            sources.append({**source, "configs": mine})
            traced.update(mine)
    rest = [c for c in kept if c not in traced]
    if rest:
        sources.append({"configs": rest, "command": previous["command"], "wall_s": previous["wall_s"]})
    return sources


def learning_rates(text):
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(value <= 0 for value in values):
        raise ValueError(f"a learning-rate sweep is a comma-separated list of positive numbers, got {text!r}")
    return values


def response_tokens(data_folder, tokenizer_folder):
    """Expert-solution tokens of the training split (content + EOS), what one SFT epoch trains on."""
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_folder)
    rows = load_rows(data_folder, "train")
    return sum(len(tokenizer(data.expert_solution(row), add_special_tokens=False)["input_ids"]) + 1
               for row in rows)


def rl_generated_tokens(rows, rollouts_per_round, last_step=None):
    """Generated tokens of a TRL GRPO run (its metrics.jsonl rows) up to `last_step` (all of it by default):
    mean completion length x rollouts, per generation round (logged on a round's first optimizer step only)."""
    return sum(row["completions/mean_length"] * rollouts_per_round for row in rows
               if "completions/mean_length" in row and (last_step is None or row["step"] <= last_step))


class Study:
    """The runs of one comparison, in --out/runs/<config>-seed<seed>/..., --parallel at a time."""

    def __init__(self, args, progress):
        self.args, self.progress = args, progress
        self.lanes = max(1, args.parallel)
        self.threads = max(1, (os.cpu_count() or 1) // self.lanes)
        self._ports, self._lock = itertools.count(29700), threading.Lock()
        self.base = os.path.join(args.out, "base")
        from transformers import AutoModelForCausalLM
        self.parameters = flops_module.parameter_count(AutoModelForCausalLM.from_pretrained(self.base))
        self.sft_tokens = response_tokens(os.path.join(args.out, "data"), self.base)
        self.budget_flops_equal = None  # F, known once the corrected SFT-then-RL's sweep is done

    def parallel(self, function, jobs):
        with ThreadPoolExecutor(min(self.lanes, max(1, len(jobs)))) as pool:
            return [future.result() for future in [pool.submit(function, *job) for job in jobs]]

    def port(self):
        with self._lock:
            return next(self._ports)

    def folder(self, config, seed, *parts):
        path = os.path.join(self.args.out, "runs", f"{config}-seed{seed}", *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def evaluate(self, seed, models, split, env, log):
        """Accuracy of each model on a split, in one evaluation process."""
        outs = [os.path.join(model, f"eval_{split}.json") for model in models]
        demo.run(demo.evaluation_command(self.args, seed, models, outs, split), log, env)
        return [read_json(out)["summary"]["accuracy"] for out in outs]

    # ---- the base model --------------------------------------------------------------------
    def base_accuracy(self):
        folder = self.folder("base", 0)
        accuracy, = self.evaluate(0, [self.base], "test", demo.child_env(self.threads),
                                  os.path.join(folder, "eval.log"))
        self.progress.say(f"base model: test accuracy {accuracy:.3f}")
        return accuracy

    # ---- SFT-then-RL -----------------------------------------------------------------------
    def sft(self, config, seed):
        folder = self.folder(config, seed)
        sft = os.path.join(folder, "sft")
        env = demo.config_env(BASELINES[config], self.threads)
        started = time.time()
        demo.run(demo.sft_command(self.args, BASELINES[config], seed, self.port(), sft),
                 os.path.join(folder, "sft.log"), env)
        seconds = time.time() - started
        accuracy, = self.evaluate(seed, [sft], "test", env, os.path.join(folder, "eval_sft.log"))
        facts = read_json(os.path.join(sft, "run.json"))
        self.progress.say(f"{config} seed {seed}: test accuracy {accuracy:.3f} after SFT ({seconds:.0f} s)")
        return {"accuracy_sft": accuracy, "sft_s": seconds, "deepspeed": facts.get("deepspeed"),
                "patch": facts.get("patches", {})}

    def rl(self, config, seed, lr, validate):
        """GRPO from the seed's SFT checkpoint at `lr`, checkpointed --rl-checkpoints times."""
        folder = self.folder(config, seed)
        out = os.path.join(folder, f"rl-lr{lr:g}")
        env = demo.config_env(BASELINES[config], self.threads)
        every = max(1, self.args.grpo_steps // self.args.rl_checkpoints)
        started = time.time()
        demo.run(demo.grpo_command(self.args, os.path.join(folder, "sft"), out, lr, seed,
                                   ["--checkpoint-every", str(every)]),
                 os.path.join(out + ".log"), env)
        run = {"out": out, "seconds": time.time() - started,
               "flops": self.rl_flops(read_jsonl(os.path.join(out, "metrics.jsonl"))).as_dict()}
        if validate:
            run["validation"], = self.evaluate(seed, [out], "val", env, out + ".val.log")
            self.progress.say(f"{config} lr {lr:g}: validation accuracy {run['validation']:.3f}", finished=True)
        return run

    def rl_flops(self, metrics, last_step=None):
        """SFT-then-RL's FLOPs up to an RL step: one SFT epoch, then the rollouts its metrics rows count."""
        counter = flops_module.FlopsCounter(self.parameters)
        counter.add("sft", self.sft_tokens)
        counter.add("on_policy", rl_generated_tokens(metrics, self.args.grpo_prompts * 8, last_step))
        return counter

    def rl_curve(self, config, seed, run):
        """(FLOPs, test accuracy) after SFT, at every RL checkpoint and at the end."""
        folder = self.folder(config, seed)
        env = demo.config_env(BASELINES[config], self.threads)
        saved = checkpoints.read(run["out"])
        accuracies = self.evaluate(seed, [c["path"] for c in saved] + [run["out"]], "test", env,
                                   run["out"] + ".test.log")
        metrics = read_jsonl(os.path.join(run["out"], "metrics.jsonl"))
        points = [[self.rl_flops(metrics, last_step=0).total,  # SFT alone
                   read_json(os.path.join(folder, "sft", "eval_test.json"))["summary"]["accuracy"]]]
        points += [[self.rl_flops(metrics, c["step"]).total, a] for c, a in zip(saved, accuracies)]
        points.append([run["flops"]["flops"], accuracies[-1]])
        return points

    # ---- mixed-policy methods ----------------------------------------------------------------
    def marks(self, budget_flops):
        equal = self.budget_flops_equal
        late = [equal * ratio for ratio in frange(1.4, self.args.budget_ratio, 0.4)]
        return [equal * ratio for ratio in EQUAL_MARKS] + [mark for mark in late if mark < budget_flops]

    def scaled_options(self, method):
        """The authors' options that count questions, scaled to the tiny rounds: ReLIFT's SFT step takes
        one round's questions (128 of 128 at paper scale)."""
        return {"sft_questions": self.args.grpo_prompts} if method == "relift" else {}

    def mixed(self, method, seed, lr, validate, ratio=None):
        """One method from the base model at `lr` to the budget, checkpointed at the marks; with `ratio`, to
        ratio x F instead, without checkpoints (the generous-budget check)."""
        out = os.path.join(self.folder(method, seed), f"lr{lr:g}" + (f"-x{ratio:g}" if ratio else ""))
        env = demo.child_env(self.threads)
        budget = (ratio or self.args.budget_ratio) * self.budget_flops_equal
        marks = [] if ratio else ["--checkpoint-flops", *[repr(mark) for mark in self.marks(budget)]]
        started = time.time()
        demo.run([sys.executable, "-m", "examples.mixed_policy.train", "--method", method, "--model", self.base,
                  "--data", os.path.join(self.args.out, "data"), "--out", out, "--flops-budget", repr(budget), *marks]
                 + mixed_policy_recipe.option_flags(method, **self.scaled_options(method))
                 + demo.rl_round_flags(self.args, self.args.method_steps, lr, seed,
                                       mixed_policy_recipe.group_size(method)), out + ".log", env)
        facts = read_json(os.path.join(out, "run.json"))
        run = {"out": out, "seconds": time.time() - started, "flops": facts["flops"], "steps": facts["steps"]}
        if validate:
            run["validation"], = self.evaluate(seed, [out], "val", env, out + ".val.log")
            self.progress.say(f"{method} lr {lr:g}: validation accuracy {run['validation']:.3f} "
                              f"({run['steps']} steps, {run['seconds']:.0f} s)", finished=True)
        return run

    def generous(self, method, seed, lr):
        """The method at its pick to --generous-ratio x F: test accuracy and FLOPs at the end."""
        run = self.mixed(method, seed, lr, False, ratio=self.args.generous_ratio)
        accuracy, = self.evaluate(seed, [run["out"]], "test", demo.child_env(self.threads), run["out"] + ".test.log")
        self.progress.say(f"{method} at {self.args.generous_ratio:g} F: test accuracy {accuracy:.3f}", finished=True)
        return {"lr": lr, "seed": seed, "accuracy": accuracy, "flops": run["flops"]["flops"], "steps": run["steps"],
                "seconds": run["seconds"]}

    def mixed_curve(self, method, seed, run):
        saved = checkpoints.read(run["out"])
        accuracies = self.evaluate(seed, [c["path"] for c in saved] + [run["out"]], "test",
                                   demo.child_env(self.threads), run["out"] + ".test.log")
        return [[c["position"], a] for c, a in zip(saved, accuracies[:-1])] + [[run["flops"]["flops"], accuracies[-1]]]


def frange(start, stop, step):
    value = start
    while value < stop - 1e-9:
        yield value
        value += step


def at_flops(curve, flops):
    """The accuracy of the first checkpoint at or past `flops` (the run's end when none is)."""
    for position, accuracy in curve:
        if position >= flops * (1 - 1e-9):
            return accuracy
    return curve[-1][1]


def pick(sweep):
    """The learning rate with the best validation accuracy (the smaller one on a tie)."""
    return min(sweep, key=lambda lr: (-sweep[lr]["validation"], lr))


def beyond_edge(sweep):
    """The next learning rate to try when the pick is at an end of the sweep (half the smallest, twice
    the largest), else None."""
    best = pick(sweep)
    if len(sweep) > 1 and best == min(sweep):
        return best / 2
    if len(sweep) > 1 and best == max(sweep):
        return best * 2
    return None


def tune(study, configs, grid, run, seed, extensions):
    """{config: {lr: run}}: every config at every lr of the grid, then one more lr beyond the edge for
    each config whose pick is at an end, up to `extensions` rounds; configs run side by side."""
    sweeps = {c: {} for c in configs}
    pending = [(c, lr) for c in configs for lr in grid]
    for round_ in range(extensions + 1):
        if not pending:
            break
        for (config, lr), result in zip(pending, study.parallel(run, [(c, seed, lr, True) for c, lr in pending])):
            sweeps[config][lr] = result
        if round_ == extensions:
            break
        pending = [(c, lr) for c, lr in ((c, beyond_edge(sweeps[c])) for c in configs) if lr is not None]
        study.progress.total += len(pending)
    return sweeps


def main(argv=None):
    from . import report
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    previous, kept = vars(args).pop("previous"), set(args.keep)
    baselines = [c for c in args.configs if c in BASELINES and c not in kept]
    mixed = [c for c in args.configs if c in MIXED and c not in kept]
    first, others = args.seeds[0], args.seeds[1:]
    tuning_runs = len(baselines) * len(args.rl_lrs) + len(mixed) * len(args.method_lrs)  # before any extension
    generous_kept = kept_generous(previous, args, kept)
    generous = [c for c in args.configs if c in MIXED and c not in generous_kept] if args.generous_ratio else []
    progress = demo.Progress(tuning_runs + (len(baselines) + len(mixed)) * len(args.seeds) + len(generous))
    started = time.time()
    remade = previous is None or not os.path.isdir(os.path.join(args.out, "base"))
    if remade:
        demo.prepare(args, progress)
    study = Study(args, progress)

    # 1. The base model's accuracy and every SFT run (each seed has its own).
    if previous and remade:  # before anything trains from it
        check_remade_base(study, previous, study.base_accuracy())
    base_jobs = [(study.base_accuracy,)] if previous is None else []
    base_and_sft = study.parallel(lambda job, *rest: job(*rest),
                                  base_jobs + [(study.sft, c, s) for s in args.seeds for c in baselines])
    base_accuracy = base_and_sft[0] if previous is None else previous["base_accuracy"]
    sft = dict(zip([(c, s) for s in args.seeds for c in baselines], base_and_sft[len(base_jobs):]))

    # 2. The RL stage's learning rate, per SFT-then-RL row, on seed 0 and the validation split.
    sweeps = tune(study, baselines, args.rl_lrs, study.rl, first, args.extensions)
    picked = {c: pick(sweeps[c]) for c in baselines}

    # 3. Each mixed method's learning rate at the budget (1.8 F), seed 0, validation split.
    if "sft_rl_fixed" in sweeps:
        study.budget_flops_equal = sweeps["sft_rl_fixed"][picked["sft_rl_fixed"]]["flops"]["flops"]
    elif previous:
        study.budget_flops_equal = previous["equal_flops"]
    sweeps.update(tune(study, mixed, args.method_lrs, study.mixed, first, args.extensions))
    picked.update({m: pick(sweeps[m]) for m in mixed})

    # 4. The other seeds at the picks; every reported run's test accuracy along its FLOPs.
    def reported(config, seed):
        if config in BASELINES:
            run = sweeps[config][picked[config]] if seed == first else study.rl(config, seed, picked[config], False)
            curve = study.rl_curve(config, seed, run)
            record = {**sft[(config, seed)], "accuracy_at_equal_flops": curve[-1][1]}
        else:
            run = sweeps[config][picked[config]] if seed == first else study.mixed(config, seed, picked[config], False)
            curve = study.mixed_curve(config, seed, run)
            record = {"accuracy_at_equal_flops": at_flops(curve, study.budget_flops_equal)}
        record.update(config=config, seed=seed, lr=picked[config], accuracy=curve[-1][1], curve=curve,
                      flops=run["flops"]["flops"], tokens=run["flops"]["tokens"], seconds=run["seconds"])
        progress.say(f"{config} seed {seed}: test accuracy {record['accuracy']:.3f} at {record['flops']:.3g} FLOPs",
                     finished=True)
        return record
    records = study.parallel(reported, [(c, s) for s in [first] + others for c in baselines + mixed])

    tuning = {c: {f"{lr:g}": run["validation"] for lr, run in sorted(sweeps[c].items())} for c in sweeps}
    meta = {"parameters": study.parameters, "sft_tokens_per_epoch": study.sft_tokens, "base_accuracy": base_accuracy,
            "base_digest": base_digest(study.base), "picked": picked, "equal_flops": study.budget_flops_equal}
    if previous:
        records += [r for r in previous["records"] if r["config"] in kept and r["seed"] in args.seeds]
        tuning.update({c: previous["tuning"][c] for c in kept})
        picked.update({c: previous["picked"][c] for c in kept})
        meta["kept"] = kept_sources(previous, [c for c in args.configs if c in kept])
        meta["base_remade"] = remade

    # 5. The generous-budget check: each mixed method at its pick, seed 0, to --generous-ratio x F.
    if generous or generous_kept:
        ran = dict(zip(generous, study.parallel(study.generous, [(m, first, picked[m]) for m in generous])))
        meta["generous"] = {m: generous_kept.get(m) or ran[m] for m in args.configs if m in MIXED}
        if generous_kept:
            meta["generous_kept"] = kept_sources(previous, list(generous_kept), field="generous_kept")
    order = {c: i for i, c in enumerate(args.configs)}
    records.sort(key=lambda r: (r["seed"], order[r["config"]]))
    tuning = {c: tuning[c] for c in args.configs}
    with open(os.path.join(args.out, "tuning.json"), "w", encoding="utf-8") as handle:
        json.dump(tuning, handle, indent=1)
    meta["tuning"] = tuning
    return demo.finish_comparison(args, argv, "examples.mixed_policy.compare", started, records, meta, report.write)


if __name__ == "__main__":
    raise SystemExit(main())
