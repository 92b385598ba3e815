"""The tiny pipeline's data and reward: every generated answer is checked by Math-Verify and by
Python's own arithmetic; the reward pays only a correct, well-formed final box."""
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("math_verify")
from math_verify import parse, verify  # noqa: E402

sys.path.insert(0, ROOT)
from examples.sftrl_tiny import data, reward  # noqa: E402


def _python_value(row):
    expression = data.question(row)[len("Compute "):-1].replace("×", "*")
    return eval(expression, {"__builtins__": {}})  # digits and + - * only, made by the generator


@pytest.mark.parametrize("operands,digits", [(1, 3), (2, 2), (3, 2), (4, 3)])
def test_every_generated_answer_is_verified(operands, digits):
    train, test = data.generate(150, 50, operands=operands, digits=digits, seed=operands)
    for row in train + test:
        truth = data.ground_truth(row)
        assert int(truth) == _python_value(row), row
        assert verify(parse(f"${truth}$"), parse(data.expert_solution(row))), row  # Math-Verify on the full text
        assert reward.score(data.expert_solution(row), truth) == 1.0


def test_splits_are_disjoint_and_seeded():
    train, test = data.generate(300, 100, seed=3)
    assert len(train) == 300 and len(test) == 100
    assert not {data.question(r) for r in train} & {data.question(r) for r in test}
    assert data.generate(300, 100, seed=3) == (train, test)
    assert data.generate(300, 100, seed=4)[0] != train


def test_rows_have_the_openr1_schema():
    (row,), _ = data.generate(1, 0)
    assert [m["role"] for m in row["prompt"]] == ["system", "user"] and "\\boxed{}" in row["prompt"][0]["content"]
    assert row["target"][0]["role"] == "assistant" and row["reward_model"]["style"] == "rule"


def test_a_range_of_operand_counts_varies_the_solution_length():
    train, test = data.generate(400, 50, operands=2, digits=1, seed=5, max_operands=6)
    counts = [len(data.question(row).split()) // 2 for row in train + test]   # "Compute 7 + 1 × 0." -> 3
    assert set(counts) == {2, 3, 4, 5, 6}
    lengths = {count: len(data.expert_solution(row)) for count, row in zip(counts, train)}
    assert lengths[6] > 1.5 * lengths[2]
    for row in train + test:
        assert int(data.ground_truth(row)) == _python_value(row), row
    # without the range, the stream of problems is what it was (committed results depend on it)
    assert data.generate(50, 0, operands=3, digits=1, seed=5) == data.generate(50, 0, operands=3, digits=1, seed=5,
                                                                              max_operands=None)
    # 2..6 operands hold far more distinct problems than 2 alone
    assert len(data.generate(1000, 0, operands=2, digits=1, max_operands=6)[0]) == 1000
    with pytest.raises(ValueError, match="max_operands"):
        data.generate(10, 0, operands=3, max_operands=2)


def test_accuracy_is_split_by_operand_count():
    from examples.sftrl_tiny.openrlhf_demo import accuracy_by_operands
    details = [{"question": "Compute 7 + 1.", "scores": [1.0, 0.0]},
               {"question": "Compute 7 + 1 × 10.", "scores": [0.0, 0.0]},
               {"question": "Compute 3 - 4.", "scores": [1.0, 1.0]}]
    assert accuracy_by_operands(details) == {"2": 0.75, "3": 0.0}


def test_bad_sizes_are_refused_with_a_clear_message(tmp_path):
    with pytest.raises(ValueError, match="distinct problems"):
        data.generate(100, 0, operands=1, digits=1)
    with pytest.raises(ValueError):
        data.generate(-1, 0)
    proc = subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.data", "--out", str(tmp_path), "--train", "999",
                           "--operands", "1", "--digits", "1"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "raise --digits" in proc.stderr


def test_cli_writes_jsonl_that_loads_back(tmp_path):
    subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.data", "--out", str(tmp_path), "--train", "20",
                    "--test", "5"], cwd=ROOT, check=True, capture_output=True)
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "train.jsonl"))]
    assert len(rows) == 20 and rows == data.generate(20, 5)[0]


@pytest.mark.parametrize("completion,truth,expected", [
    ("Step 1: 2 + 3 = 5.\nThe answer is \\boxed{5}.", "5", 1.0),
    ("so \\boxed{0.5}", "1/2", 1.0),                                   # equal, written differently
    ("so \\boxed{\\frac{1}{2}}", "0.5", 1.0),                          # nested braces
    ("first \\boxed{4}, no wait, \\boxed{5}", "5", 1.0),               # the last box counts
    ("first \\boxed{5}, no wait, \\boxed{4}", "5", 0.0),
    ("The answer is \\boxed{6}.", "5", 0.0),                           # wrong
    ("The answer is 5.", "5", 0.0),                                    # missing box, though 5 is in the text
    ("The answer is \\boxed{5.", "5", 0.0),                            # unclosed
    ("The answer is \\boxed{}.", "5", 0.0),                            # empty
    ("The answer is \\boxed{-886}.", "-886", 1.0),
    ("The answer is \\boxed{886}.", "-886", 0.0),
    ("", "5", 0.0),
])
def test_reward(completion, truth, expected):
    assert reward.score(completion, truth) == expected


def test_trl_reward_function_reads_conversational_completions_and_the_reward_model_column():
    completions = [[{"role": "assistant", "content": "\\boxed{7}"}], [{"role": "assistant", "content": "7"}], []]
    columns = [{"style": "rule", "ground_truth": "7"}] * 3
    assert reward.accuracy_reward(completions, reward_model=columns, prompts=None) == [1.0, 0.0, 0.0]


def test_operators_can_be_restricted_and_unknown_ones_are_refused():
    train, test = data.generate(50, 10, operands=3, digits=1, seed=3, operators="+")
    assert all("-" not in data.question(row) and "×" not in data.question(row) for row in train + test)
    with pytest.raises(ValueError, match="operators"):
        data.generate(5, 1, operators="+/")


def test_benchmark_rows_with_problem_and_answer_load_like_training_rows(tmp_path):
    from examples.sftrl_tiny.loading import load_rows
    path = tmp_path / "bench.jsonl"
    path.write_text(json.dumps({"problem": "What is 1+1?", "answer": "2"}) + "\n" + json.dumps({"x": 1}) + "\n")
    with pytest.raises(ValueError, match="problem/question"):
        load_rows(str(path), "test")
    row = load_rows(str(path), "test", limit=1)[0]
    assert row["prompt"][-1] == {"role": "user", "content": "What is 1+1?"}
    assert reward.score("so \\boxed{2}", row["reward_model"]["ground_truth"]) == 1.0


def test_demo_refuses_an_operand_range_that_ends_below_its_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.demo", "--operands", "3", "--max-operands", "2",
                           "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--max-operands (2) must be 0 or >= --operands (3)" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_validation_split_is_disjoint_and_leaves_train_and_test_as_they_were(tmp_path):
    train, test, validation = data.generate(300, 40, seed=3, validation=40)
    assert (train, test) == data.generate(300, 40, seed=3)
    questions = [{data.question(row) for row in split} for split in (train, test, validation)]
    assert len(validation) == 40 and not (questions[2] & (questions[0] | questions[1]))
    subprocess.run([sys.executable, "-m", "examples.sftrl_tiny.data", "--out", str(tmp_path), "--train", "20",
                    "--test", "5", "--validation", "5"], cwd=ROOT, check=True, capture_output=True)
    rows = [json.loads(line) for line in open(os.path.join(tmp_path, "val.jsonl"))]
    assert rows == data.generate(20, 5, validation=5)[2]


def test_pretraining_corpus_holds_the_worked_share_in_chat_form_and_never_a_held_out_problem():
    from examples.sftrl_tiny import pretrain
    train, test = data.generate(50, 100, operands=2, digits=1, seed=1)
    held_out = {data.question(row) for row in test}
    plain = pretrain.corpus(400, seed=0, operands=2)
    assert plain == pretrain.corpus(400, seed=0, operands=2, worked_share=0.0)  # the other demos' corpus, unchanged
    mixed = pretrain.corpus(400, seed=0, operands=2, worked_share=0.25, held_out=held_out,
                            chat=lambda row: "<chat>" + data.question(row))
    worked = [d for d in mixed if d.startswith("<chat>")]
    assert len(mixed) == 400 and len(worked) == 100
    assert not {d[len("<chat>"):] for d in worked} & held_out
    assert min(i for i, d in enumerate(mixed) if d.startswith("<chat>")) < 300  # shuffled in, not appended
    with pytest.raises(ValueError, match="worked_share"):
        pretrain.corpus(10, seed=0, worked_share=1.5)
