"""The predictors of the score after RL (examples/sftrl_tiny/predictors.py) and their place in the
evaluations: pass@k against every k-subset counted out, its edge cases, the held-out loss against a
manual NLL on a tiny model (tokenised as TRL's SFTTrainer tokenises the same rows), evaluate.py's
options and json, and the paper-scale evaluation recipe's commands."""
import itertools
import json
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, ROOT)
from examples.sftrl_tiny import predictors  # noqa: E402


# ---- pass@k ------------------------------------------------------------------------------------------

def counted(n, c, k):
    """The share of k-subsets of n answers (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n, c", [(6, 2), (6, 1), (7, 3), (5, 4), (8, 5)])
def test_pass_at_k_is_the_share_of_k_subsets_with_a_correct_answer(n, c):
    for k in range(1, n + 1):
        assert predictors.pass_at_k(n, c, k) == pytest.approx(counted(n, c, k), abs=1e-12), k


def test_pass_at_k_edge_cases():
    assert [predictors.pass_at_k(6, 0, k) for k in range(1, 7)] == [0.0] * 6      # nothing correct
    assert [predictors.pass_at_k(6, 6, k) for k in range(1, 7)] == [1.0] * 6      # everything correct
    assert predictors.pass_at_k(6, 1, 6) == 1.0 and predictors.pass_at_k(6, 0, 6) == 0.0   # k = n
    assert predictors.pass_at_k(10, 3, 1) == pytest.approx(0.3)                    # pass@1 = c / n
    assert predictors.pass_at_k(1, 1, 1) == 1.0 and predictors.pass_at_k(1, 0, 1) == 0.0
    # large n: stable (no huge binomials), and equal to the binomial ratio
    value = predictors.pass_at_k(1024, 3, 64)
    assert value == pytest.approx(1 - math.comb(1021, 64) / math.comb(1024, 64), rel=1e-12)
    for n, c, k in [(5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)]:
        with pytest.raises(ValueError):
            predictors.pass_at_k(n, c, k)


def test_pass_at_k_summary_is_the_mean_over_problems_up_to_64():
    summary = predictors.pass_at_k_summary([(6, 2), (6, 0), (6, 6)])
    assert list(summary) == ["1", "2", "3", "4", "5", "6"]
    for k in range(1, 7):
        assert summary[str(k)] == pytest.approx((counted(6, 2, k) + 0 + 1) / 3)
    assert list(predictors.pass_at_k_summary([(100, 7), (80, 0)])) == [str(k) for k in range(1, 65)]
    assert predictors.pass_at_k_summary([]) == {}
    curve = list(predictors.pass_at_k_summary([(64, 5)]).values())
    assert curve == sorted(curve) and curve[-1] == 1.0


# ---- the held-out loss -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from examples.sftrl_tiny import data, model, tokenizer
    train, test = data.generate(12, 5, operands=2, digits=1, seed=7)
    tok = tokenizer.train(train, vocab_size=300)
    built = model.build(tok, seed=0, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)
    folder = tmp_path_factory.mktemp("predictors")
    built.save_pretrained(folder / "model")
    tokenizer.save(tok, str(folder / "model"))
    data.write_jsonl(train, str(folder / "data" / "train.jsonl"))
    data.write_jsonl(test, str(folder / "data" / "test.jsonl"))
    return tok, built, train, test, folder


def manual_nll(model, tok, rows):
    """Token-mean NLL of each row's solution, one unpadded sequence at a time, from the full logits."""
    import torch
    total, tokens = 0.0, 0
    for row in rows:
        prompt = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
        text = tok.apply_chat_template(row["prompt"] + row["target"], tokenize=False)
        assert text.startswith(prompt)
        start = len(tok(prompt, add_special_tokens=False)["input_ids"])
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        log_probs = torch.log_softmax(logits, dim=-1)
        for position in range(start, len(ids)):  # token `position` predicted from the positions before it
            total -= log_probs[position - 1, ids[position]].item()
            tokens += 1
    return total / tokens, tokens


def test_heldout_loss_is_the_manual_token_mean_nll(tiny):
    tok, model, _, test, _ = tiny
    expected, tokens = manual_nll(model, tok, test)
    for batch_size in (1, 2, 8):  # padding changes nothing
        got = predictors.heldout_loss(model, tok, test, batch_size=batch_size)
        assert got["heldout_tokens"] == tokens and got["heldout_problems"] == len(test)
        assert got["heldout_loss"] == pytest.approx(expected, rel=1e-5)
    assert math.log(len(tok)) * 0.5 < expected < math.log(len(tok)) * 2   # an untrained model: about ln V


def test_heldout_tokens_are_what_trls_sfttrainer_trains_on(tiny, tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from examples.sftrl_tiny import sft
    from examples.sftrl_tiny.loading import to_prompt_completion
    tok, model, train, _, _ = tiny
    args = sft.parse_args(["--model", "m", "--data", "d", "--out", str(tmp_path), "--max-length", "512"])
    trainer = sft.build_trainer(args, model, tok, Dataset.from_list([to_prompt_completion(r) for r in train]))
    for row, prepared in zip(train, trainer.train_dataset):
        ids, labels = predictors.sft_example(tok, row)
        assert ids == prepared["input_ids"] and labels == prepared["labels"]
    with pytest.raises(ValueError, match="worked solutions"):
        predictors.sft_example(tok, {"prompt": train[0]["prompt"]})


# ---- evaluate.py ----------------------------------------------------------------------------------------------

def evaluate_argv(folder, *flags):
    return ["--model", str(folder / "model"), "--data", str(folder / "data"), "--split", "test",
            "--max-new-tokens", "6", *flags]


def test_evaluate_writes_pass_at_k_and_the_heldout_loss_beside_avg_at_k(tiny, capsys):
    from examples.sftrl_tiny import evaluate
    tok, model, _, test, folder = tiny
    out = folder / "eval.json"
    evaluate.main(evaluate_argv(folder, "--samples", "2", "--temperature", "1.0", "--pass-k-samples", "3",
                                "--heldout-loss", "--out", str(out)))
    written = json.loads(out.read_text())
    summary = written["summary"]
    assert summary["samples"] == 2 and 0.0 <= summary["accuracy"] <= 1.0
    assert summary["pass_k_samples"] == 3 and list(summary["pass_at_k"]) == ["1", "2", "3"]
    counts = [(3, d["pass_k_correct"]) for d in written["details"]]
    assert summary["pass_at_k"] == predictors.pass_at_k_summary(counts)
    assert all(len(d["pass_k_scores"]) == 3 and len(d["answers"]) == 2 for d in written["details"])
    assert summary["heldout_loss"] == pytest.approx(predictors.heldout_loss(model, tok, test)["heldout_loss"], rel=1e-5)
    printed = capsys.readouterr().out
    assert "avg@2 = " in printed and "pass@1 = " in printed and "held-out loss = " in printed

    # N = --samples: the avg@k answers serve pass@k too; --samples 0: the loss alone, nothing generated
    evaluate.main(evaluate_argv(folder, "--samples", "2", "--temperature", "1.0", "--pass-k-samples", "2",
                                "--out", str(out)))
    written = json.loads(out.read_text())
    assert [d["pass_k_correct"] for d in written["details"]] == [int(sum(d["scores"])) for d in written["details"]]
    evaluate.main(evaluate_argv(folder, "--samples", "0", "--heldout-loss", "--out", str(out)))
    summary = json.loads(out.read_text())["summary"]
    assert "accuracy" not in summary and summary["heldout_problems"] == len(test)


def test_evaluate_defaults_write_what_they_always_wrote(tiny):
    from examples.sftrl_tiny import evaluate
    _, _, _, _, folder = tiny
    args = evaluate.parse_args(evaluate_argv(folder, "--max-samples", "2"))
    assert args.pass_k_samples == 0 and not args.heldout_loss
    (summary,) = evaluate.evaluate(args)
    assert set(summary) == {"accuracy", "problems", "samples", "model", "data", "split", "temperature"}


@pytest.mark.parametrize("flags, message", [
    (["--samples", "0"], "0 only with"),
    (["--pass-k-samples", "64"], "--temperature > 0"),
    (["--pass-k-samples", "-1"], ">= 0"),
])
def test_evaluate_refuses_settings_that_cannot_work(flags, message, capsys):
    from examples.sftrl_tiny import evaluate
    with pytest.raises(SystemExit):
        evaluate.parse_args(["--model", "m", "--data", "d", *flags])
    assert message in capsys.readouterr().err


def test_evaluation_recipe_passes_the_predictors_through(tmp_path):
    from examples.sftrl_tiny import evaluate
    proc = subprocess.run([sys.executable, "-m", "examples.recipes.evaluate", "--model", "ckpt/sft", "--out",
                           str(tmp_path), "--pass-k-samples", "64", "--heldout-data", "heldout.jsonl",
                           "--heldout-max-samples", "500", "--dry-run"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr[-2000:]
    blocks = proc.stdout.split("# ")[1:]
    assert [b.split("\n", 1)[0] for b in blocks][-1] == "heldout" and len(blocks) == 7
    for block in blocks:
        argv = block.split("\n", 1)[1].replace("\\\n", " ").split()
        args = evaluate.parse_args(argv[argv.index("examples.sftrl_tiny.evaluate") + 1:])
        if block.startswith("heldout"):
            assert args.heldout_loss and args.samples == 0 and args.max_samples == 500 and args.data == "heldout.jsonl"
        else:
            assert args.pass_k_samples == 64 and args.temperature == 0.6 and not args.heldout_loss
