"""Every paper-scale recipe dry-runs on a CPU, and what it generates is checked by the framework
that will read it: OpenRLHF's own argument parsers (0.9.10 for flat flags, 0.10.4 for dotted
ones), TRL's SFTConfig / GRPOConfig through our scripts' parsers, Llama-Factory 0.9.5's own
HfArgumentParser over its dataclasses, and our evaluation script's parser."""
import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from conftest import AFFECTED, FIXED, ORL_FIXED, ROOT, require_openrlhf, require_release

sys.path.insert(0, ROOT)  # the examples package lives at the repository root
LF_RELEASE = os.path.join(ROOT, ".lf-release")


def dry_run(module, *args, env=None):
    proc = subprocess.run([sys.executable, "-m", f"examples.recipes.{module}", *args, "--dry-run"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def argv_of(printed):
    """The printed command back as argv (environment prefix dropped)."""
    tokens = shlex.split(printed.replace("\\\n", " "))
    while tokens and re.match(r"^[A-Z_]+=", tokens[0]):
        tokens.pop(0)
    return tokens


def openrlhf_help(version, deepspeed, module):
    env = require_openrlhf(version, deepspeed=deepspeed)
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.launch", module, "--help"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(re.findall(r"(--[a-z_.]+)", proc.stdout))


@pytest.mark.parametrize("style, version, deepspeed", [("flat", "0.9.10", AFFECTED), ("dotted", ORL_FIXED, FIXED)])
@pytest.mark.parametrize("stage, module", [("sft", "openrlhf.cli.train_sft"), ("grpo", "openrlhf.cli.train_ppo_ray")])
def test_openrlhf_recipe_flags_are_accepted_by_that_releases_parser(tmp_path, style, version, deepspeed, stage, module):
    extra = ["--sft-checkpoint", "ckpt/sft"] if stage == "grpo" else []
    argv = argv_of(dry_run("openrlhf", stage, "--flag-style", style, "--out", str(tmp_path), *extra))
    assert module in argv and "sftrl_patches.launch" in argv
    flags = {token for token in argv[argv.index(module) + 1:] if token.startswith("--")}
    accepted = openrlhf_help(version, deepspeed, module)
    assert len(flags) >= 15 and not flags - accepted, sorted(flags - accepted)


@pytest.mark.parametrize("style, version, deepspeed", [("flat", "0.9.10", AFFECTED), ("dotted", ORL_FIXED, FIXED)])
def test_the_cpu_grpo_flags_are_accepted_by_that_releases_parser(tmp_path, style, version, deepspeed):
    from examples.sftrl_tiny import openrlhf_grpo
    args = openrlhf_grpo.parse_args(["--model", "m", "--data", "d", "--out", str(tmp_path)])
    args.dynamic_batch = True  # refused on a CPU, written for a GPU box: its flags must parse too
    argv = openrlhf_grpo.cli_argv(args, style, "prompts.jsonl")
    flags = {token for token in argv if token.startswith("--")}
    accepted = openrlhf_help(version, deepspeed, "openrlhf.cli.train_ppo_ray")
    assert len(flags) >= 30 and not flags - accepted, sorted(flags - accepted)


def test_openrlhf_sft_is_luffys_baseline_and_as_published_switches_the_patches_off(tmp_path):
    corrected = dry_run("openrlhf", "sft", "--flag-style", "flat", "--out", str(tmp_path))
    published = dry_run("openrlhf", "sft", "--flag-style", "flat", "--out", str(tmp_path), "--as-published")
    assert published.startswith("SFTRL_PATCHES_DISABLE=1 ") and "SFTRL_PATCHES_DISABLE" not in corrected
    argv = argv_of(corrected)
    value = {flag: argv[i + 1] for i, flag in enumerate(argv[:-1]) if flag.startswith("--")}
    assert "--adam_offload" in argv and value["--zero_stage"] == "2" and value["--train_batch_size"] == "64"
    assert value["--micro_train_batch_size"] == "1" and value["--max_epochs"] == "3"
    assert float(value["--learning_rate"]) == 5e-5 and value["--pretrain"] == "Qwen/Qwen2.5-Math-7B"


def test_openrlhf_reward_file_scores_boxed_answers():
    from examples.recipes.openrlhf_reward import reward_func
    out = reward_func(["Q: 2+2? A: \\boxed{4}", "Q: 2+2? A: 4", "Q: 2+2? A: \\boxed{5}"],
                      ["Q: 2+2?"] * 3, ["4", "4", "4"])
    assert out["rewards"].tolist() == [1.0, 0.0, 0.0]


def test_openrlhf_reward_file_scores_from_a_worker_thread_as_openrlhf_calls_it():
    # OpenRLHF runs reward_func through asyncio.to_thread; Math-Verify's signal-based timeout raises
    # there, and before the fix every answer silently scored 0.
    import asyncio
    from examples.recipes.openrlhf_reward import reward_func
    out = asyncio.run(asyncio.to_thread(reward_func, ["Q: 7-9? A: \\boxed{-2}", "Q: 7-9? A: \\boxed{2}"],
                                        ["Q: 7-9?"] * 2, ["-2", "-2"]))
    assert out["rewards"].tolist() == [1.0, 0.0]


def trl_args(argv, script):
    """The arguments of our TRL script as the printed command gives them, parsed by its own parser."""
    return script.parse_args(argv[argv.index(f"examples.sftrl_tiny.{script.__name__.rsplit('.', 1)[1]}") + 1:])


def test_trl_sft_recipe_builds_a_valid_sftconfig_with_the_paper_settings(tmp_path):
    pytest.importorskip("trl")
    from examples.sftrl_tiny import sft
    argv = argv_of(dry_run("trl", "sft", "--out", str(tmp_path), "--gpus", "8"))
    assert argv[:2] == ["accelerate", "launch"] and "sftrl_patches.launch" in argv
    args = trl_args(argv, sft)
    args.bf16 = False  # CPU: transformers refuses bf16 without a GPU; everything else is as printed
    config = sft.sft_config(args)
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps * 8 == 64
    assert config.learning_rate == 5e-5 and config.num_train_epochs == 3 and config.weight_decay == 0.01
    accelerate_file = argv[argv.index("--config_file") + 1]
    text = open(accelerate_file, encoding="utf-8").read()
    deepspeed_file = re.search(r"deepspeed_config_file: (\S+)", text).group(1)
    with open(deepspeed_file, encoding="utf-8") as handle:
        deepspeed = json.load(handle)
    zero = deepspeed["zero_optimization"]
    assert "num_processes: 8" in text and zero["stage"] == 2 and zero["offload_optimizer"]["device"] == "cpu"
    # stated, not "auto": transformers refuses a value that differs from its own arguments
    assert deepspeed["gradient_accumulation_steps"] == config.gradient_accumulation_steps
    assert deepspeed["train_micro_batch_size_per_gpu"] == config.per_device_train_batch_size


def test_trl_grpo_recipe_builds_a_valid_grpoconfig(tmp_path, monkeypatch):
    pytest.importorskip("trl")
    from examples.sftrl_tiny import grpo
    argv = argv_of(dry_run("trl", "grpo", "--sft-checkpoint", "ckpt/sft", "--out", str(tmp_path)))
    args = trl_args(argv, grpo)
    args.bf16, args.use_vllm = False, False  # CPU: no bf16, no vLLM here; the rest is as printed
    monkeypatch.setenv("WORLD_SIZE", "8")
    config = grpo.grpo_config(args)
    assert config.per_device_train_batch_size * 8 * config.steps_per_generation == 128 * 8
    assert (config.epsilon, config.epsilon_high, config.beta, config.loss_type) == (0.2, 0.28, 0.0, "dapo")
    assert config.temperature == 1.0 and config.learning_rate == 1e-6 and config.scale_rewards == "none"


def test_llamafactory_recipe_parses_with_llamafactorys_own_parser(tmp_path):
    if not os.path.isdir(os.path.join(LF_RELEASE, "llamafactory")):
        message = "Llama-Factory is not installed in .lf-release/ (pip install --no-deps --target .lf-release llamafactory==0.9.5)"
        if os.environ.get("SFTRL_REQUIRE_DEEPSPEED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    printed = dry_run("llamafactory", "--out", str(tmp_path), "--dataset-file", str(tmp_path / "d.jsonl"))
    argv = argv_of(printed)
    assert argv[:3] == ["torchrun", "--nproc_per_node", "8"] and argv[-3:-1] == ["llamafactory.launcher", "train"]
    env = require_release(AFFECTED)
    # Llama-Factory 0.9.5 pins transformers <= 5.6.0; its parser works on the 5.7 used here.
    env.update(DISABLE_VERSION_CHECK="1", PYTHONPATH=os.pathsep.join([LF_RELEASE, env.get("PYTHONPATH", "")]))
    code = f"""
import json, yaml
from transformers import HfArgumentParser
from llamafactory.hparams.parser import _TRAIN_ARGS
config = yaml.safe_load(open({argv[-1]!r}))
config["bf16"] = False   # CPU: transformers refuses bf16 without a GPU
model, data, training, finetuning, _ = HfArgumentParser(_TRAIN_ARGS).parse_dict(config, allow_extra_keys=False)
info = json.load(open(data.dataset_dir + "/dataset_info.json"))[data.dataset[0] if isinstance(data.dataset, list) else data.dataset]
print(json.dumps({{"accumulation": training.gradient_accumulation_steps, "offload":
    training.hf_deepspeed_config.config["zero_optimization"]["offload_optimizer"]["device"],
    "stage": finetuning.stage, "lr": training.learning_rate, "format": info["formatting"]}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    parsed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert parsed == {"accumulation": 8, "offload": "cpu", "stage": "sft", "lr": 5e-5, "format": "sharegpt"}


def test_evaluate_recipe_commands_parse_with_the_evaluation_script(tmp_path):
    from examples.sftrl_tiny import evaluate
    printed = dry_run("evaluate", "--model", "ckpt/grpo", "--out", str(tmp_path))
    blocks = [b for b in printed.split("# ")[1:]]
    assert [b.split("\n", 1)[0] for b in blocks] == ["aime24", "aime25", "amc", "math500", "minerva", "olympiadbench"]
    for block in blocks:
        argv = argv_of(block.split("\n", 1)[1])
        args = evaluate.parse_args(argv[argv.index("examples.sftrl_tiny.evaluate") + 1:])
        assert args.backend == "vllm" and args.temperature == 0.6 and args.max_new_tokens == 8192
        assert args.samples == (32 if block.startswith(("aime", "amc")) else 1)


def test_bad_recipe_input_is_refused_with_a_clear_message():
    proc = subprocess.run([sys.executable, "-m", "examples.recipes.openrlhf", "sft", "--gpus", "3", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not a multiple" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "examples.recipes.evaluate", "--model", "m", "--benchmark", "x=y",
                           "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "NAME=SOURCE" in proc.stderr


@pytest.mark.parametrize("method", ["luffy", "srft", "relift", "hpt", "prefix_rft"])
def test_mixed_policy_recipe_builds_the_methods_config(tmp_path, monkeypatch, method):
    pytest.importorskip("trl")
    from examples.mixed_policy import methods, train
    from examples.recipes.mixed_policy import LEARNING_RATES, OPTIONS, UNDER_DEEPSPEED
    from examples.sftrl_tiny import grpo
    argv = argv_of(dry_run("mixed_policy", method, "--out", str(tmp_path)))
    assert argv[:2] == ["accelerate", "launch"] and "sftrl_patches.launch" in argv
    args = train.parse_args(argv[argv.index("examples.mixed_policy.train") + 1:])
    options = {**OPTIONS[method], **UNDER_DEEPSPEED.get(method, {})}
    assert args.method == method and args.method_options == options
    assert UNDER_DEEPSPEED == {"relift": {"sft_mode": "round"}} and OPTIONS["relift"]["sft_mode"] == "add"
    args.bf16, args.use_vllm = False, False  # CPU: no bf16, no vLLM here; the rest is as printed
    monkeypatch.setenv("WORLD_SIZE", "8")
    _, config_class = methods.load(method)
    config = grpo.grpo_config(args, config_class, **args.method_options)
    assert isinstance(config, config_class)
    rows = 9 if method == "hpt" else 8  # HPT's authors sample 8 rollouts beside the expert slot
    assert config.per_device_train_batch_size * 8 * config.steps_per_generation == 128 * rows
    assert config.max_steps == 1000 and config.num_generations == rows
    assert config.learning_rate == LEARNING_RATES.get(method, 1e-6) and LEARNING_RATES.get("hpt") == 5e-6
    for name, value in options.items():
        assert getattr(config, name) == value
