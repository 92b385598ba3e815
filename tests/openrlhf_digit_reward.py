"""A reward file for the GRPO smoke test (tests/test_openrlhf_grpo.py): the share of digits in the
response. An untrained model never earns the Math-Verify reward, so its advantages would all be 0
and no weight would move; this reward differs between any two samples of a prompt."""
import torch


def reward_func(queries, prompts, labels, **_):
    responses = [query[len(prompt):] for query, prompt in zip(queries, prompts)]
    rewards = torch.tensor([sum(ch.isdigit() for ch in r) / max(1, len(r)) for r in responses])
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
