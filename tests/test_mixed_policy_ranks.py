"""A mixed-policy trainer on two ranks (torchrun, gloo, CPU): LUFFY's expert slot, the FLOPs that
both ranks count, the FLOPs budget that stops the run and the checkpoint saved on the way.

Every expert solution here has the same token count L (one-digit sums below 10), so each round's
expert tokens are known without seeing the rows: 2 groups of 8 (one per rank) hold 2 traces, 2 L.
A rank that counted only its own tokens, or put an expert row in the wrong slot, would be off by a
whole trace."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("trl")


def sum_rows():
    from examples.sftrl_tiny import data
    return [data.make_row([a, b], ["+"]) for a in range(10) for b in range(10) if a + b < 10]


def test_luffy_on_two_ranks_counts_both_ranks_and_stops_at_its_flops_budget(tmp_path):
    from transformers import AutoTokenizer
    from examples.sftrl_tiny import data, model, tokenizer as tokenizer_module
    rows = sum_rows()
    data.write_jsonl(rows, str(tmp_path / "data" / "train.jsonl"))
    tokenizer_module.save(tokenizer_module.train(rows), str(tmp_path / "tok"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "tok"))
    model.build(tokenizer, seed=0).save_pretrained(str(tmp_path / "base"))
    tokenizer_module.save(tokenizer, str(tmp_path / "base"))
    lengths = {len(tokenizer(data.expert_solution(row), add_special_tokens=False)["input_ids"]) + 1 for row in rows}
    assert len(lengths) == 1 and max(lengths) < 48, "the test needs expert solutions of one length, never cut"
    trace = lengths.pop()
    parameters = sum(p.numel() for p in model.build(tokenizer, seed=0).parameters())
    # One round costs at least 2 traces' FLOPs; a budget of 1.5 rounds' worth of traces stops it after round 2
    # at the latest, far below the 20-step ceiling; the checkpoint mark falls inside round 1.
    budget = parameters * 6 * trace * 3
    out = tmp_path / "luffy"
    # Without ACCELERATE_USE_CPU, transformers on a CUDA-less machine leaves each torchrun process training
    # alone (world size 1, with only a warning): the counts below then come out per process, which they catch.
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "SFTRL_PATCHES_DISABLE": "1", "ACCELERATE_USE_CPU": "true"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29581",
               "-m", "examples.mixed_policy.train", "--method", "luffy", "--model", str(tmp_path / "base"),
               "--data", str(tmp_path / "data"), "--out", str(out), "--steps", "20", "--prompts-per-step", "2",
               "--num-generations", "8", "--mini-batches", "2", "--max-completion-length", "48", "--lr", "1e-3",
               "--flops-budget", repr(float(budget)), "--checkpoint-flops", "1.0"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run = json.loads((out / "run.json").read_text())
    rounds = run["steps"] // 2
    assert 1 <= rounds < 10, run["steps"]  # stopped by the budget, at a round end
    assert run["flops"]["flops"] >= budget
    tokens = run["flops"]["tokens"]
    assert tokens["off_policy"] == rounds * 2 * trace  # one trace per group, both ranks counted
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    completions = sum(row["completions/mean_length"] * 16 for row in metrics if "completions/mean_length" in row)
    # TRL's length metric (gathered over both ranks) also counts what the policy wrote into the 2 expert slots
    # before the traces replaced it (1 to 48 tokens each); counting one rank only would miss about half.
    assert 2 <= completions - tokens["on_policy"] <= 2 * 48
    saved = [json.loads(line) for line in (out / "checkpoints.jsonl").read_text().splitlines()]
    assert len(saved) == 1 and saved[0]["step"] == 2  # listed once (main rank), at the end of round 1
    assert (out / "checkpoint-0" / "config.json").exists()
