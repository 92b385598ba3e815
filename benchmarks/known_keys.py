"""Write sftrl_patches/known_keys.py: every config key and flag the frameworks accept, read from the releases.

    python benchmarks/known_keys.py            # needs .ds-releases/, .orl-releases/, .lf-venv/ (bash .ci/run makes them)
    python benchmarks/known_keys.py --check    # exit 1 when the committed table differs from what the releases say

The audit (sftrl_patches/run.py) tells a misspelling from a setting it has never seen with these
tables: DeepSpeed's pydantic sections, Llama-Factory and HfArgumentParser refuse unknown keys,
OpenRLHF's argparse refuses unknown flags. Each table is the union over the releases read, and
names them, so the audit can say which releases it checked.
"""
import argparse
import ast
import glob
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "sftrl_patches", "known_keys.py")

_DEEPSPEED_READER = r"""
import json
from deepspeed.runtime.zero.config import DeepSpeedZeroConfig
from deepspeed.runtime.zero.offload_config import DeepSpeedZeroOffloadOptimizerConfig, DeepSpeedZeroOffloadParamConfig
def names(model):
    found = set()
    for name, field in model.model_fields.items():
        found.add(name)
        if field.alias:
            found.add(field.alias)
    return sorted(found)
print(json.dumps({"zero_optimization": names(DeepSpeedZeroConfig),
                  "offload_optimizer": names(DeepSpeedZeroOffloadOptimizerConfig),
                  "offload_param": names(DeepSpeedZeroOffloadParamConfig)}))
"""

_HF_READER = r"""
import dataclasses, json, importlib
found, read = set(), []
for module, names in (("transformers", ["TrainingArguments", "Seq2SeqTrainingArguments"]),
                      ("trl", ["SFTConfig", "GRPOConfig", "DPOConfig", "RewardConfig", "ModelConfig", "ScriptArguments"])):
    mod = importlib.import_module(module)
    read.append(f"{module} {mod.__version__}")
    for name in names:
        found.update(f.name for f in dataclasses.fields(getattr(mod, name)))
print(json.dumps({"keys": sorted(found), "read": read}))
"""

_LLAMAFACTORY_READER = r"""
import dataclasses, json
import llamafactory
from llamafactory.hparams import (DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments,
                                  TrainingArguments)
found = set()
for klass in (DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments, TrainingArguments):
    found.update(f.name for f in dataclasses.fields(klass))
print(json.dumps({"keys": sorted(found), "read": [f"llamafactory {llamafactory.__version__}"]}))
"""


def _run(python, code, env=None):
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode:
        raise SystemExit(f"reading keys failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# The releases read: the ones .ci/run installs, so that --check gives the same answer here and in CI.
DEEPSPEED_RELEASES = ("0.17.6", "0.18.4", "0.18.6", "0.18.9", "0.19.6", "0.19.8")
OPENRLHF_RELEASES = ("0.6.4", "0.9.10", "0.10.3", "0.10.4", "0.11.2")


def deepspeed_keys():
    tables, read = {}, []
    for version in DEEPSPEED_RELEASES:
        folder = os.path.join(ROOT, ".ds-releases", version)
        if not glob.glob(os.path.join(folder, "deepspeed-*.dist-info")):
            raise SystemExit(f"DeepSpeed {version} is not under .ds-releases/ (bash .ci/run installs it)")
        env = dict(os.environ, PYTHONPATH=folder, DS_ACCELERATOR="cpu", SFTRL_PATCHES_DISABLE="1")
        for section, names in _run(sys.executable, _DEEPSPEED_READER, env).items():
            tables.setdefault(section, set()).update(names)
        read.append(version)
    return {k: sorted(v) for k, v in tables.items()}, sorted(read, key=_version_key)


def openrlhf_flags():
    """--flags every OpenRLHF release defines with add_argument (any of its CLIs: argparse refuses the rest)."""
    flags = {}
    for version in OPENRLHF_RELEASES:
        folder = os.path.join(ROOT, ".orl-releases", version)
        if not glob.glob(os.path.join(folder, "openrlhf-*.dist-info")):
            raise SystemExit(f"OpenRLHF {version} is not under .orl-releases/ (bash .ci/run installs it)")
        found = set()
        for path in glob.glob(os.path.join(folder, "openrlhf", "**", "*.py"), recursive=True):
            with open(path, encoding="utf-8") as handle:
                tree = ast.parse(handle.read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument":
                    found.update(a.value[2:] for a in node.args
                                 if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("--"))
        flags[version] = sorted(found)
    return dict(sorted(flags.items(), key=lambda item: _version_key(item[0])))


def _version_key(text):
    return tuple(int(p) if p.isdigit() else 0 for p in text.split("."))


def render():
    deepspeed, deepspeed_read = deepspeed_keys()
    hf = _run(sys.executable, _HF_READER)
    lf_python = os.path.join(ROOT, ".lf-venv", "bin", "python")
    llamafactory = _run(lf_python, _LLAMAFACTORY_READER)
    orl = openrlhf_flags()
    lines = ['"""Every key and flag the frameworks accept, read from their releases by benchmarks/known_keys.py.',
             "",
             "Generated: do not edit. The audit (sftrl_patches/run.py) tells a misspelling from a setting it has",
             'never seen with these tables."""',
             "",
             f"DEEPSPEED_READ = {tuple(deepspeed_read)!r}",
             "DEEPSPEED = {"]
    lines += [f"    {section!r}: frozenset({names!r})," for section, names in deepspeed.items()]
    lines += ["}", "",
              f"HF_TRAINING_READ = {tuple(hf['read'])!r}",
              f"HF_TRAINING = frozenset({hf['keys']!r})", "",
              f"LLAMAFACTORY_READ = {tuple(llamafactory['read'])!r}",
              f"LLAMAFACTORY = frozenset({llamafactory['keys']!r})", "",
              "OPENRLHF = {"]
    lines += [f"    {version!r}: frozenset({names!r})," for version, names in orl.items()]
    lines += ["}", ""]
    return _wrap("\n".join(lines))


def _wrap(text):
    """Long literal lines broken at commas, so the file reads in a 120-column editor."""
    out = []
    for line in text.splitlines():
        while len(line) > 120:
            cut = line.rfind(", ", 0, 118) + 1
            if cut <= 0:
                break
            out.append(line[:cut])
            line = "        " + line[cut:].lstrip()
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed table instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        with open(OUT, encoding="utf-8") as handle:
            same = handle.read() == text
        print("known_keys.py is current" if same else "known_keys.py differs from the releases: rerun without --check")
        return 0 if same else 1
    with open(OUT, "w", encoding="utf-8") as handle:
        handle.write(text)
    print(f"wrote {os.path.relpath(OUT, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
