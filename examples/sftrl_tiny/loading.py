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
    return rows[:limit] if limit else rows


def to_prompt_completion(row):
    """TRL's conversational prompt-completion form: the loss falls on the expert solution only."""
    return {"prompt": row["prompt"], "completion": row["target"]}


def to_prompt_only(row):
    """For GRPO: the prompt plus the ground truth the reward function reads."""
    return {"prompt": row["prompt"], "reward_model": row["reward_model"]}
