"""Verifiable arithmetic problems with worked solutions, in the row schema of
OpenR1-Math-46k-8192 as LUFFY's preprocessing reads it (read from public preprocessing
scripts; not checked against the hub from here):

    {"data_source": ..., "prompt": [{"role": "system", ...}, {"role": "user", "content": problem}],
     "target": [{"role": "assistant", "content": expert solution ending in \\boxed{answer}}],
     "reward_model": {"style": "rule", "ground_truth": answer}}

so the loading code is the same for generated and real data. Difficulty: `operands` numbers of
`digits` digits joined by +, - and × (or a range of operand counts, for varied lengths); the
solution does × first, then left to right, one step a line.

    python -m examples.sftrl_tiny.data --out data/tiny --train 4000 --test 200 [--validation 200]
"""
import argparse
import json
import os
import random

SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."
DATA_SOURCE = "sftrl-tiny-arithmetic"
OPERATORS = ("+", "-", "×")
SPLITS = ("train", "test", "val")  # file names, in the order generate() returns them


def random_problem(rng, operands, digits, operators):
    low, high = 10 ** (digits - 1) if digits > 1 else 0, 10 ** digits - 1
    numbers = [rng.randint(low, high) for _ in range(operands)]
    ops = [rng.choice(operators) for _ in range(operands - 1)]
    return numbers, ops


def solve(numbers, ops):
    """(worked steps, value): every × first, then + and - from left to right."""
    numbers, ops, steps = list(numbers), list(ops), []
    while "×" in ops:
        i = ops.index("×")
        value = numbers[i] * numbers[i + 1]
        steps.append(f"{numbers[i]} × {numbers[i + 1]} = {value}")
        numbers[i:i + 2], ops[i:i + 1] = [value], []
    while ops:
        a, op, b = numbers[0], ops[0], numbers[1]
        value = a + b if op == "+" else a - b
        steps.append(f"{a} {op} {b} = {value}")
        numbers[0:2], ops[0:1] = [value], []
    return steps, numbers[0]


def make_row(numbers, ops):
    expression = " ".join(str(n) + (f" {op}" if op else "") for n, op in zip(numbers, list(ops) + [""]))
    steps, value = solve(numbers, ops)
    lines = ["Multiplication comes first, then addition and subtraction from left to right."]
    lines += [f"Step {k}: {step}." for k, step in enumerate(steps, 1)] or [f"There is nothing to compute: {value}."]
    lines.append(f"The answer is \\boxed{{{value}}}.")
    return {"data_source": DATA_SOURCE,
            "prompt": [{"role": "system", "content": SYSTEM_PROMPT},
                       {"role": "user", "content": f"Compute {expression}."}],
            "target": [{"role": "assistant", "content": "\n".join(lines)}],
            "reward_model": {"style": "rule", "ground_truth": str(value)}}


def generate(train, test, operands=3, digits=2, seed=0, operators=OPERATORS, max_operands=None, validation=0):
    """(train rows, test rows), or (train, test, validation) with `validation` > 0: distinct problems, no
    problem in two splits. The validation rows are drawn after the test rows, so asking for them leaves
    train and test as they were. With `max_operands`, each problem draws its operand count from
    operands..max_operands, so solution lengths vary."""
    if train < 0 or test < 0 or validation < 0 or operands < 1 or digits < 1:
        raise ValueError("train, test and validation must be >= 0, operands and digits >= 1")
    if max_operands is not None and max_operands < operands:
        raise ValueError(f"max_operands ({max_operands}) must be >= operands ({operands})")
    operators = tuple(operators)
    if not operators or set(operators) - set(OPERATORS):
        raise ValueError(f"operators must be drawn from {''.join(OPERATORS)}, got {''.join(operators)!r}")
    capacity = sum((10 ** digits) ** count * len(operators) ** (count - 1)
                   for count in range(operands, (max_operands or operands) + 1))
    if train + test + validation > capacity // 2:
        raise ValueError(f"{train + test + validation} distinct problems asked, but operands={operands}, digits={digits} "
                         f"allow about {capacity}; raise --digits or --operands")
    rng, seen, rows = random.Random(seed), set(), []
    while len(rows) < train + test + validation:
        count = rng.randint(operands, max_operands) if max_operands is not None else operands
        numbers, ops = random_problem(rng, count, digits, operators)
        key = (tuple(numbers), tuple(ops))
        if key not in seen:
            seen.add(key)
            rows.append(make_row(numbers, ops))
    if validation:
        return rows[:train], rows[train:train + test], rows[train + test:]
    return rows[:train], rows[train:]


def question(row):
    return row["prompt"][-1]["content"]


def expert_solution(row):
    return row["target"][-1]["content"]


def ground_truth(row):
    return row["reward_model"]["ground_truth"]


def write_jsonl(rows, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--validation", type=int, default=0, help="rows of a validation split (val.jsonl)")
    parser.add_argument("--operands", type=int, default=3)
    parser.add_argument("--max-operands", type=int, default=None,
                        help="draw each problem's operand count from --operands..this (varied lengths)")
    parser.add_argument("--digits", type=int, default=2)
    parser.add_argument("--operators", default="".join(OPERATORS), help="any of +, - and × (or x)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        splits = generate(args.train, args.test, args.operands, args.digits, args.seed,
                          args.operators.replace("x", "×"), args.max_operands, args.validation)
    except ValueError as exc:
        parser.error(str(exc))
    for name, rows in zip(SPLITS, splits):
        write_jsonl(rows, os.path.join(args.out, f"{name}.jsonl"))
    print(f"wrote {', '.join(f'{len(rows)} {name}' for name, rows in zip(SPLITS, splits))} rows to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
