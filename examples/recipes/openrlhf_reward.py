"""OpenRLHF's remote reward as a local file (--remote_rm_url / --reward.remote_url this.py):
1 when the response's last \\boxed{} equals the label under Math-Verify, else 0."""
import torch

from examples.sftrl_tiny.reward import score


def reward_func(queries, prompts, labels, **_):
    responses = [query[len(prompt):] for query, prompt in zip(queries, prompts)]
    rewards = torch.tensor([score(response, label) for response, label in zip(responses, labels)])
    return {"rewards": rewards, "scores": rewards, "extra_logs": {"accuracy": rewards}}
