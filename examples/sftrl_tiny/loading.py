"""One loading path for generated and real data: a jsonl file, a folder holding <split>.jsonl,
or a hub data set name (e.g. Elliott/Openr1-Math-46k-8192) read with `datasets`."""
import json
import os


def load_rows(source, split="train", limit=None):
    """Rows in the OpenR1-Math-46k-8192 schema (prompt, target, reward_model)."""
    if os.path.isdir(source):
        source = os.path.join(source, f"{split}.jsonl")
    if os.path.isfile(source):
        with open(source, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    else:
        from datasets import load_dataset
        rows = list(load_dataset(source, split=split))
    rows = rows[:limit] if limit else rows
    return [normalise(row) for row in rows]


def normalise(row, system_prompt="Please reason step by step, and put your final answer within \\boxed{}."):
    """Benchmark sets on the hub (MATH-500, AIME, AMC, ...) carry `problem` / `question` and
    `answer`: give them the same prompt and ground-truth fields as the training rows."""
    if "prompt" in row and "reward_model" in row:
        return row
    question = row.get("problem", row.get("question"))
    answer = row.get("answer", row.get("solution"))
    if question is None or answer is None:
        raise ValueError(f"a row needs prompt + reward_model, or problem/question + answer; got {sorted(row)}")
    return {**row, "prompt": [{"role": "system", "content": system_prompt}, {"role": "user", "content": str(question)}],
            "reward_model": {"style": "rule", "ground_truth": str(answer)}}


def to_prompt_completion(row):
    """TRL's conversational prompt-completion form: the loss falls on the expert solution only."""
    return {"prompt": row["prompt"], "completion": row["target"]}


def to_prompt_only(row):
    """For GRPO: the prompt plus the ground truth the reward function reads."""
    return {"prompt": row["prompt"], "reward_model": row["reward_model"]}
