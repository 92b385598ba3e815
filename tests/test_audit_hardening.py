"""sftrl-doctor audit on hostile input: credentials never echoed, huge or deep files refused with exit 2,
long values cut in messages, and the numeric options checked by argparse.

Everything runs in-process through the CLIs' main(); tests/test_audit.py covers the verdicts themselves.
"""
import json

import pytest

from sftrl_patches.audit import cli
from sftrl_patches.audit.inputs import MAX_DEPTH, MAX_FILE_BYTES
from sftrl_patches.audit.redact import redact_command, redact_report, redact_text, shorten
from sftrl_patches.doctor import cli as doctor_cli

VERSIONS = ["--versions", "deepspeed==0.18.9,openrlhf==0.9.10"]
SFT = ["deepspeed", "--num_gpus", "8", "--module", "openrlhf.cli.train_sft", "--zero_stage", "2", "--adam_offload",
       "--train_batch_size", "64", "--micro_train_batch_size", "1", "--pretrain", "Qwen/Qwen2.5-Math-7B",
       "--save_path", "./ckpt"]
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"
HF = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
# Only flags OpenRLHF 0.9.10 itself accepts (the audit may refuse others); more shapes in the unit tests below.
SECRETS = {
    "env": ["WANDB_API_KEY=abc123", f"HF_TOKEN={HF}", "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY",
            "OPENAI_API_KEY=sk-proj-abcdefghijklmnopqrstuvwxyz012345", "DB_PASSWORD=hunter2hunter2",
            "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE", "GITHUB_TOKEN=ghp_abcdefghijklmnopqrstuvwxyz0123456789"],
    "flags": ["--use_wandb", WANDB_KEY, "--dataset", "https://alice:s3cr3tpw@data.example.com/set"],
}
LEAKS = ["abc123", WANDB_KEY, HF, "wJalrXUtnFEMIbPxRfiCYEXAMPLEKEY", "sk-proj-abcdefghijklmnopqrstuvwxyz012345",
         "hunter2hunter2", "AKIAIOSFODNN7EXAMPLE", "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "s3cr3tpw", "alice:"]


def run(argv, capsys):
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(argv, capsys, main=cli.main):
    """exit 2 from argparse (SystemExit) or from main's own check; returns stderr."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    assert code == 2, captured.out + captured.err
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


def assert_no_leak(*texts):
    for text in texts:
        for secret in LEAKS:
            assert secret not in text, (secret, text[:2000])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


# ---- credentials -----------------------------------------------------------------------------------

def test_secrets_in_the_command_are_never_printed_and_the_audit_is_unchanged(capsys):
    dirty = SECRETS["env"] + SFT + SECRETS["flags"]
    code, out, err = run(["--json", *VERSIONS, "--", *dirty], capsys)
    assert_no_leak(out, err)
    report = json.loads(out)
    clean_code, clean_out, _ = run(["--json", *VERSIONS, "--", *SFT], capsys)
    clean = json.loads(clean_out)
    assert code == clean_code == 1
    for field in ("versions", "run", "sources", "findings"):
        assert report[field] == clean[field], field
    env = len(SECRETS["env"])
    assert report["command"][:env] == [word.split("=")[0] + "=***" for word in SECRETS["env"]]
    assert report["command"][env:env + len(SFT)] == SFT  # what is no secret stays as given
    assert report["command"][env + len(SFT):] == ["--use_wandb", "***", "--dataset", "https://***@data.example.com/set"]

    code, out, err = run([*VERSIONS, "--", *dirty], capsys)
    assert_no_leak(out, err)
    _, clean_text, _ = run([*VERSIONS, "--", *SFT], capsys)
    assert code == 1 and out == clean_text


def test_secrets_in_error_messages_are_redacted(tmp_path, capsys):
    err = refused([*VERSIONS, "--", "WANDB_API_KEY=abc123", "deepspeed", "--num_gpus", HF, "train.py"], capsys)
    assert "expected a whole number" in err
    assert_no_leak(err)
    err = refused(["--frobnicate=sk-proj-abcdefghijklmnopqrstuvwxyz012345", "--token", "abc123"], capsys)
    assert "unrecognized arguments" in err and "--token ***" in err
    assert_no_leak(err)
    config = write(tmp_path, "ds.json", json.dumps({"zero_optimization": {"stage": WANDB_KEY}}))
    err = refused([*VERSIONS, "--config", config], capsys)
    assert "zero_optimization.stage" in err and config in err
    assert_no_leak(err)


@pytest.mark.parametrize("tokens,expected", [
    (["--use_wandb", WANDB_KEY], ["--use_wandb", "***"]),
    (["--use_wandb", "abc123"], ["--use_wandb", "***"]),  # OpenRLHF's --use_wandb takes the key
    (["--use_wandb=abc123"], ["--use_wandb=***"]),
    (["--logger.wandb.key", "abc123"], ["--logger.wandb.key", "***"]),  # OpenRLHF >= 0.10.2
    (["--hub_token", "abc123", "--token=abc"], ["--hub_token", "***", "--token=***"]),
    (["OPENAI_API_KEY=abc", "GITHUB_TOKEN=x", "DB_PASSWORD=y"], ["OPENAI_API_KEY=***", "GITHUB_TOKEN=***",
                                                                  "DB_PASSWORD=***"]),
    (["hf_hub_token=abc"], ["hf_hub_token=***"]),  # a Llama-Factory override
    (["--x", HF, "--y", "sk-ant-api03-abcdefghijklmnopqrstuvwx"], ["--x", "***", "--y", "***"]),
    (["--x", "github_pat_11ABCDEFG0123456789_abcdefghijkl", "ASIAABCDEFGHIJKLMNOP"], ["--x", "***", "***"]),
    (["--data", "git+https://bob:pw@host/x.git"], ["--data", "git+https://***@host/x.git"]),
    (["--runtime-env-json", '{"env_vars": {"WANDB_API_KEY": "abc", "TOKENIZERS_PARALLELISM": "false"}}'],
     ["--runtime-env-json", '{"env_vars": {"WANDB_API_KEY": "***", "TOKENIZERS_PARALLELISM": "false"}}']),
])
def test_redact_command_hides_credential_values_and_keeps_names(tokens, expected):
    assert redact_command(tokens) == expected


@pytest.mark.parametrize("tokens", [
    ["--use_wandb", "True"], ["--use_wandb", "true"], ["--use_wandb", "1"], ["--use_wandb", "$WANDB_API_KEY"],
    ["--zero_stage", "2"], ["--pretrain", "Qwen/Qwen2.5-Math-7B"], ["--save_path", "./ckpt"],
    ["--input_key", "question", "--output_key", "response", "--data.chosen_key", "chosen"],  # dataset columns
    ["--pad_token", "<pad>", "--token_level_loss", "--max_new_tokens", "1024", "--api_base", "http://h:8000/v1"],
    ["TOKENIZERS_PARALLELISM=false", "CUDA_VISIBLE_DEVICES=0,1", "NPROC_PER_NODE=4", "deepspeed==0.18.9"],
    ["report_to=wandb", "https://huggingface.co/Qwen/Qwen2.5-Math-7B", "--wandb_project", "sft"],
    ["--pretrain", f"/hub/models--Qwen--Qwen2.5-Math-7B/snapshots/{WANDB_KEY}"],  # a commit in a path is no key
])
def test_redact_command_keeps_what_is_no_secret(tokens):
    assert redact_command(tokens) == tokens


def test_redact_text_and_report():
    assert redact_text("launch command: WANDB_API_KEY=abc123 deepspeed --use_wandb abc123 --zero_stage 2") == \
        "launch command: WANDB_API_KEY=*** deepspeed --use_wandb *** --zero_stage 2"
    assert redact_text("--hf_token 'abc 123' and --use_wandb True") == "--hf_token '***' and --use_wandb True"
    assert redact_text(f"got '{HF}'") == "got '***'"
    assert redact_text("--train_batch_size 60 is not divisible by --micro_train_batch_size 1 x 8") == \
        "--train_batch_size 60 is not divisible by --micro_train_batch_size 1 x 8"
    report = {"command": ["--use_wandb", "abc123"], "sources": {"zero_stage": f"x {WANDB_KEY}"},
              "findings": [{"because": ["--use_wandb", "True"]}], "n": 3}
    assert redact_report(report) == {"command": ["--use_wandb", "***"], "sources": {"zero_stage": "x ***"},
                                     "findings": [{"because": ["--use_wandb", "True"]}], "n": 3}


# ---- limits ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,text", [
    ("deep.json", '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000 + "\n"),
    ("deep.yml", "".join(" " * i + "k:\n" for i in range(3_000)) + " " * 3_000 + "k: 1\n"),  # block style
    ("deeper-than-the-limit.json", '{"a": ' + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "}"),  # loads
    ("self.yaml", "zero_optimization: &z\n  stage: 2\n  again: *z\n"),  # an anchor inside itself
])
def test_deep_files_exit_2_naming_the_file(tmp_path, capsys, name, text):
    config = write(tmp_path, name, text)
    err = refused([*VERSIONS, "--config", config], capsys)
    assert f"{config}: nested deeper than {MAX_DEPTH} levels" in err
    assert err.count("\n") == 1 and "RecursionError" not in err


def test_shared_yaml_aliases_are_measured_once(tmp_path, capsys):
    """A 'billion laughs' YAML: 10**20 paths through 21 shared lists, measured in no time."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 21)]
    config = write(tmp_path, "laughs.yaml", "\n".join(lines) + "\n")
    err = refused([*VERSIONS, "--config", config], capsys)
    assert "not a DeepSpeed JSON" in err


def test_files_over_the_size_limit_exit_2(tmp_path, capsys):
    path = tmp_path / "ds.json"
    with open(path, "w") as handle:
        handle.write('{"train_micro_batch_size_per_gpu": "')
        handle.write("x" * (50 * 1024 * 1024))
        handle.write('"}')
    err = refused([*VERSIONS, "--config", str(path)], capsys)
    assert f"{path}: too large" in err and f"{path.stat().st_size:,} bytes" in err
    assert len(err) < 2000
    requirements = tmp_path / "freeze.txt"
    with open(requirements, "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    assert f"{requirements}: too large" in refused(["--requirements", str(requirements)], capsys)


def test_a_long_value_is_cut_in_the_message(tmp_path, capsys):
    config = write(tmp_path, "ds.json", json.dumps({"train_micro_batch_size_per_gpu": "x" * 5_000_000}))
    err = refused([*VERSIONS, "--config", config, "--world-size", "1"], capsys)
    assert f"{config}: train_micro_batch_size_per_gpu: expected a whole number" in err
    assert "... (5000000 characters)" in err and len(err) < 2000
    # on the command line nothing limits the size: 50 MB in one flag
    err = refused([*VERSIONS, "--", *SFT[:9], "x" * (50 * 1024 * 1024)], capsys)
    assert "--train_batch_size: expected a whole number" in err and len(err) < 2000


def test_shorten_keeps_short_messages_and_cuts_long_values():
    assert shorten("ds.json: expected a whole number, got 'x'") == "ds.json: expected a whole number, got 'x'"
    cut = shorten("got '" + "a" * 1000 + "' and " + "b" * 1000)
    assert cut == "got '" + "a" * 200 + "'... (1000 characters) and " + "b" * 200 + "... (1000 characters)"
    assert len(shorten(" ".join(["word"] * 100_000))) < 2000


# ---- numeric options ---------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["-5", "0", "x", "1.5", "10" * 20])
def test_probe_timeout_must_be_a_positive_whole_number(capsys, value):
    err = refused(["--probe-timeout", value], capsys, doctor_cli.main)
    assert "sftrl-doctor: error: argument --probe-timeout: expected" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1


def test_probe_timeout_accepts_seconds():
    assert doctor_cli.build_parser().parse_args(["--probe-timeout", "5"]).probe_timeout == 5
    assert doctor_cli.build_parser().parse_args([]).probe_timeout == 300


@pytest.mark.parametrize("value", ["0", "-3", "x"])
def test_world_size_must_be_a_positive_whole_number(capsys, value):
    err = refused(["--world-size", value, *VERSIONS], capsys)
    assert "sftrl-doctor audit: error: argument --world-size: expected a positive whole number" in err
    assert len([line for line in err.splitlines() if "error" in line]) == 1
    assert cli.build_parser().parse_args(["--world-size", "4"]).world_size == 4
