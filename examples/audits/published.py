"""Audits of published SFT baselines and of this repository's recipes as published.

    python -m examples.audits.published           # rerun every audit, rewrite results/ and the README table
    python -m examples.audits.published --check   # exit 1 if a committed result is out of date

Each setup is what a public source states (flags, configs, versions); where a source leaves the
versions open, the setup says which it assumes. Run from the repository root.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile

HERE = os.path.relpath(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SETUPS_DIR = os.path.join(HERE, "setups")
RESULTS_DIR = os.path.join(HERE, "results")
README = os.path.join(HERE, "README.md")
LUFFY_FLAGS = ["--zero_stage", "2", "--adam_offload", "--train_batch_size", "64", "--micro_train_batch_size", "1",
               "--max_epochs", "3", "--learning_rate", "5e-5"]

SETUPS = [
    {"name": "luffy_sft_baseline", "title": "LUFFY's SFT baseline (OpenRLHF, 8 GPUs)",
     "source": "LUFFY's published SFT flags (FACTS.md); versions of the paper's reproduction (its Table 2)",
     "versions": "openrlhf==0.9.10,deepspeed==0.18.9",
     "command": ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", *LUFFY_FLAGS]},
    {"name": "paper_corrected_sft", "title": "The paper's corrected SFT: the same flags on the fixed releases",
     "source": "arXiv 2604.23747: DeepSpeed fix #7967 (0.19.0), OpenRLHF fix #1249 (0.10.4, which pins "
               "DeepSpeed 0.19.1); 0.10.4 spells the flags dotted",
     "versions": "openrlhf==0.10.4,deepspeed==0.19.1",
     "command": ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--ds.zero_stage", "2",
                 "--ds.adam_offload", "--train.batch_size", "64", "--train.micro_batch_size", "1",
                 "--train.max_epochs", "3"]},
    {"name": "llamafactory_offload_example", "title": "Llama-Factory's full-SFT example with its ZeRO-2 offload config",
     "source": "Llama-Factory examples (qwen3_full_sft.yaml, ds_z2_offload_config.json); DeepSpeed 0.18.4, the "
               "newest its 0.9.5 release allows",
     "versions": "llamafactory==0.9.5,deepspeed==0.18.4",
     "command": ["FORCE_TORCHRUN=1", "NPROC_PER_NODE=8", "llamafactory-cli", "train",
                 f"{SETUPS_DIR}/llamafactory_offload_example/qwen3_full_sft.yaml"]},
    {"name": "llamafactory_offload_ga8", "title": "The same with the paper's GA 8 (global batch 64 on 8 GPUs)",
     "source": "as above, with the key=value override a user types",
     "versions": "llamafactory==0.9.5,deepspeed==0.18.4",
     "command": ["FORCE_TORCHRUN=1", "NPROC_PER_NODE=8", "llamafactory-cli", "train",
                 f"{SETUPS_DIR}/llamafactory_offload_example/qwen3_full_sft.yaml", "gradient_accumulation_steps=8"]},
    {"name": "llamafactory_z0_example", "title": "Llama-Factory's full-SFT example with its stock ZeRO-0 config",
     "source": "Llama-Factory examples (qwen3_full_sft.yaml, ds_z0_config.json: bf16 auto, stage 0); DeepSpeed 0.18.4, "
               "the newest its 0.9.5 release allows (the configuration the sweep found wrong, DeepSpeed #7837)",
     "versions": "llamafactory==0.9.5,deepspeed==0.18.4",
     "command": ["FORCE_TORCHRUN=1", "NPROC_PER_NODE=8", "llamafactory-cli", "train",
                 f"{SETUPS_DIR}/llamafactory_z0_example/qwen3_full_sft.yaml"]},
    {"name": "trl_zero2_offload", "title": "TRL SFT under an accelerate ZeRO-2 config with CPU offload, GA 8",
     "source": "TRL's accelerate ZeRO-2 example config plus accelerate's offload field (TRL #4540 reports this "
               "family); TRL does not pin DeepSpeed: 0.18.9 assumed",
     "versions": "trl==1.16.0,deepspeed==0.18.9",
     "command": ["accelerate", "launch", "--config_file", f"{SETUPS_DIR}/trl_zero2_offload/deepspeed_zero2_offload.yaml",
                 "trl/scripts/sft.py", "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "8",
                 "--bf16"]},
    {"name": "recipe_openrlhf_sft", "title": "examples/recipes/openrlhf.py sft --as-published",
     "source": "this repository", "versions": "openrlhf==0.9.10,deepspeed==0.18.9",
     "recipe": ["examples.recipes.openrlhf", "sft"]},
    {"name": "recipe_openrlhf_grpo", "title": "examples/recipes/openrlhf.py grpo --as-published",
     "source": "this repository", "versions": "openrlhf==0.9.10,deepspeed==0.18.9",
     "recipe": ["examples.recipes.openrlhf", "grpo", "--sft-checkpoint", "ckpt/sft"]},
    {"name": "recipe_trl_sft", "title": "examples/recipes/trl.py sft --as-published",
     "source": "this repository; its script (examples/sftrl_tiny/sft.py) runs TRL's SFTTrainer, which the audit "
               "cannot tell from the command: --trainer trl says so",
     "versions": "trl==1.16.0,deepspeed==0.18.9", "options": ["--trainer", "trl"],
     "recipe": ["examples.recipes.trl", "sft"]},
    {"name": "recipe_llamafactory_sft", "title": "examples/recipes/llamafactory.py --as-published",
     "source": "this repository", "versions": "llamafactory==0.9.5,deepspeed==0.18.4",
     "recipe": ["examples.recipes.llamafactory", "--dataset-file", "data/openr1.jsonl"]},
]


def recipe_files(setup, out_dir):
    """Run the recipe's dry run into out_dir: (its printed command, {file name: text}), with every path
    made relative to the repository and out_dir named as the setup's committed folder."""
    argv = [sys.executable, "-m", *setup["recipe"], "--as-published", "--dry-run", "--out", out_dir]
    printed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    committed = os.path.join(SETUPS_DIR, setup["name"])

    def relative(text):  # the recipes write absolute paths
        text = text.replace(sys.executable, "python").replace(os.path.abspath(out_dir), committed)
        return text.replace(out_dir, committed).replace(ROOT + os.sep, "")
    files = {}
    for name in sorted(os.listdir(out_dir)):
        if os.path.isfile(os.path.join(out_dir, name)):
            with open(os.path.join(out_dir, name), encoding="utf-8") as handle:
                files[name] = relative(handle.read())
    return shlex.split(relative(printed).replace("\\\n", " ")), files


def audit_argv(setup, command):
    return ["--versions", setup["versions"], *setup.get("options", []), "--", *command]


def run(setup, command):
    """(exit code, text output, JSON report) of `sftrl-doctor audit` for a setup, in this process: one audit,
    rendered both ways."""
    from sftrl_patches.audit import cli
    argv = audit_argv(setup, command)
    report, code = cli.run_audit(cli.build_parser().parse_args(argv[:argv.index("--")]), command)
    return code, cli.to_text(report) + "\n", report


def command_of(setup, check, stale):
    """The setup's command; a recipe's configs are (re)written to its folder, or only compared with --check."""
    if "recipe" not in setup:
        return setup["command"]
    with tempfile.TemporaryDirectory(prefix="sftrl-audit-recipe-") as scratch:
        command, files = recipe_files(setup, scratch)
    committed = os.path.join(SETUPS_DIR, setup["name"])
    for name, text in files.items():
        _compare_or_write(os.path.join(committed, name), text, check, stale)
    return command


def _compare_or_write(path, content, check, stale):
    current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
    if current != content:
        stale.append(path)
        if not check:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(content)


def table(results):
    rows = ["| setup | versions | hit | unknown | exit |", "|---|---|---|---|---|"]
    for setup, (code, _, report) in results:
        hits = [f["check"] for f in report["findings"] if f["verdict"] == "hit"]
        unknown = [f["check"] for f in report["findings"] if f["verdict"] == "unknown"]
        rows.append(f"| [{setup['title']}](results/{setup['name']}.txt) | {setup['versions'].replace(',', ', ')} | "
                    f"{', '.join(f'`{h}`' for h in hits) or 'nothing'} | {', '.join(f'`{u}`' for u in unknown) or '-'} "
                    f"| {code} |")
    return "\n".join(rows)


def render_text(setup, command, text):
    shown = "sftrl-doctor audit " + " ".join(shlex.quote(a) for a in audit_argv(setup, command))
    return f"# {setup['title']}\n# source: {setup['source']}\n$ {shown}\n{text}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed results, write nothing")
    args = parser.parse_args(argv)
    os.makedirs(RESULTS_DIR, exist_ok=True)
    stale, results = [], []
    for setup in SETUPS:
        command = command_of(setup, args.check, stale)
        code, text, report = run(setup, command)
        results.append((setup, (code, text, report)))
        _compare_or_write(os.path.join(RESULTS_DIR, f"{setup['name']}.txt"), render_text(setup, command, text),
                          args.check, stale)
        _compare_or_write(os.path.join(RESULTS_DIR, f"{setup['name']}.json"), json.dumps(report, indent=2) + "\n",
                          args.check, stale)
    with open(README, encoding="utf-8") as handle:
        readme = handle.read()
    start, end = readme.index("<!-- table -->") + len("<!-- table -->\n"), readme.index("<!-- /table -->")
    new = readme[:start] + table(results) + "\n" + readme[end:]
    if new != readme:
        stale.append(README)
        if not args.check:
            with open(README, "w", encoding="utf-8") as handle:
                handle.write(new)
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + path)
    return 1 if (stale and args.check) else 0


if __name__ == "__main__":
    sys.exit(main())
