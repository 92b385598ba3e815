"""The per-token pieces the mixed-policy methods are made of, as plain tensor functions.

Shapes: (B, T) per-token tensors over completion tokens, (B,) per-row tensors. Every function
returns per-token losses; `step_mean` turns them into the one token-weighted loss of an optimizer
step (the corrected aggregation: sum over every loss token of the step / their count).
"""
import torch


def step_mean(per_token_loss, mask, tokens_in_step):
    """Sum of this micro-batch's masked token losses over the token count of the whole optimizer
    step (all micro-batches, all ranks), so accumulated gradients equal one global token mean."""
    return (per_token_loss * mask).sum() / tokens_in_step.clamp(min=1)


def clipped_policy_loss(logps, old_logps, advantages, epsilon_low, epsilon_high):
    """PPO/GRPO clipped surrogate per token (DAPO's asymmetric clip); advantages (B,) or (B, T)."""
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    return -torch.min(ratio * advantages, clipped * advantages)


def unclipped_policy_loss(logps, old_logps, advantages):
    """-A * ratio per token, no clip (LUFFY's, HPT's and ReLIFT's loss_remove_clip)."""
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    return -advantages * torch.exp(logps - old_logps)


def shaping_weight(logps, gamma):
    """LUFFY's regularised importance weight f(pi) = pi / (pi + gamma) of the token probability."""
    probs = torch.exp(logps)
    return probs / (probs + gamma)


def shaped_off_policy_loss(logps, advantages, gamma):
    """LUFFY's off-policy term: -A * f(pi), no clip and no behaviour-policy ratio (the expert's
    probabilities are unknown). d f / d log pi = gamma * pi / (pi + gamma)^2, which keeps
    the gradient of low-probability expert tokens from vanishing as it would under pi alone."""
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    return -advantages * shaping_weight(logps, gamma)


def sft_loss(logps):
    """Negative log-likelihood per token."""
    return -logps


def group_advantages(rewards, group_size, counted=None):
    """reward - mean reward of its group (no std scaling, as the paper's RL); `counted` (B,) bool
    picks the rows that form the baseline (LUFFY: on-policy rollouts only)."""
    grouped = rewards.view(-1, group_size)
    if counted is None:
        baseline = grouped.mean(dim=1, keepdim=True)
    else:
        weights = counted.view(-1, group_size).to(rewards.dtype)
        baseline = (grouped * weights).sum(1, keepdim=True) / weights.sum(1, keepdim=True).clamp(min=1)
    return (grouped - baseline).view(-1)


def pass_counts(rewards, rollout, group_size, threshold=0.5):
    """Per group: how many rollouts (rows where `rollout` is true) have a reward above threshold."""
    passed = (rewards > threshold).view(-1, group_size) & rollout.view(-1, group_size)
    return passed.sum(1)


def pass_rates(rewards, rollout, group_size, threshold=0.5):
    """Per group: the share of rollouts (rows where `rollout` is true) with reward above threshold."""
    counts = pass_counts(rewards, rollout, group_size, threshold)
    return counts.float() / rollout.view(-1, group_size).sum(1).clamp(min=1).float()


def entropy_weights(policy_entropy, sft_scale=0.5, rl_scale=0.1):
    """SRFT's entropy-aware weights from the policy's mean token entropy H (no gradient):
    w_sft = sft_scale * exp(-H) on demonstrations, w_rl = rl_scale * exp(H) on positive rollouts."""
    entropy = policy_entropy.detach()
    return sft_scale * torch.exp(-entropy), rl_scale * torch.exp(entropy)


def masked_mean(values, mask):
    return (values * mask).sum() / mask.sum().clamp(min=1)
