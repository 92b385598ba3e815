"""Prefix-RFT: Huang et al., "Blending Supervised and Reinforcement Fine-Tuning with Prefix
Sampling", arXiv 2507.01679 (github.com/ZeroYuHuang/prefix_rft).

In each group, `prefixed_rollouts` of the num_generations rows start from one prefix of the
expert solution (a share of its tokens drawn uniformly between the bounds once per question, so
they share it, as in the authors' code) and the policy writes the rest. The whole (prefix +
continuation) is rewarded; the rows continuing the prefix form their own baseline, the plain
rollouts theirs (the authors' code groups by prefix).

As in the authors' code, the prefix tokens take the same policy-gradient loss as the continuation,
with the row's advantage; `prefix_entropy_share` keeps that advantage only on the highest-entropy
share of a micro-batch's prefix tokens (the rest weigh 0 but still count in the step's token
mean). The upper bound of the prefix share can decay over the run (`prefix_schedule`: linear or
cosine, from prefix_ratio_max to prefix_ratio_max_end; the lower bound follows it down when they
meet), the run's progress being its FLOPs over its budget when it has one, else its steps.
"""
import math
import random
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import PREFIXED, ROLLOUT, MixedPolicyTrainer

SCHEDULES = ("constant", "linear", "cosine")


@dataclass
class PrefixRftConfig(GRPOConfig):
    prefixed_rollouts: int = field(default=2, metadata={"help": "rows per group that continue an expert prefix"})
    prefix_ratio_min: float = field(default=0.1, metadata={"help": "smallest share of the expert solution given"})
    prefix_ratio_max: float = field(default=0.9, metadata={"help": "largest share of the expert solution given "
                                                                  "(at the start of the schedule)"})
    prefix_schedule: str = field(default="constant", metadata={
        "help": "how the largest share moves over the run: constant, linear or cosine (decay to prefix_ratio_max_end)"})
    prefix_ratio_max_end: float = field(default=0.05, metadata={"help": "largest share at the end of the schedule"})
    prefix_entropy_share: float = field(default=1.0, metadata={
        "help": "share of a micro-batch's prefix tokens, highest entropy first, that keep their advantage"})

    def __post_init__(self):
        super().__post_init__()
        if not 0 <= self.prefix_ratio_min <= self.prefix_ratio_max <= 1:
            raise ValueError("need 0 <= prefix_ratio_min <= prefix_ratio_max <= 1")
        if not 0 <= self.prefix_ratio_max_end <= 1:
            raise ValueError("prefix_ratio_max_end must lie in [0, 1]")
        if self.prefix_schedule not in SCHEDULES:
            raise ValueError(f"prefix_schedule must be one of {', '.join(SCHEDULES)}, not {self.prefix_schedule!r}")
        if not 0 <= self.prefix_entropy_share <= 1:
            raise ValueError("prefix_entropy_share must lie in [0, 1]")


def decayed(start, end, progress, schedule):
    """A value going from `start` (progress 0) to `end` (progress 1) along the schedule."""
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return start
    if schedule == "linear":
        return start + (end - start) * progress
    return end + 0.5 * (1 + math.cos(math.pi * progress)) * (start - end)


def ratio_bounds(args, progress):
    """(low, high) share of the expert solution a prefix may take at this point of the run."""
    high = decayed(args.prefix_ratio_max, args.prefix_ratio_max_end, progress, args.prefix_schedule)
    return min(args.prefix_ratio_min, high), high


def high_entropy_tokens(entropies, prefix_mask, share):
    """(B, T) bool: the `share` of the prefix tokens (prefix_mask) with the highest entropy."""
    chosen = torch.zeros_like(prefix_mask, dtype=torch.bool)
    candidates = prefix_mask.bool()
    count = int(candidates.sum())
    keep = math.ceil(share * count)
    if keep:
        values = entropies.detach()[candidates]
        picked = torch.zeros(count, dtype=torch.bool, device=values.device)
        picked[values.topk(keep).indices] = True
        chosen[candidates] = picked
    return chosen


class PrefixRftTrainer(MixedPolicyTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._prefix_rng = random.Random(self.args.seed + self.accelerator.process_index)
        self._group_ratios = {}

    def row_kinds(self, inputs, slots):
        first_prefixed = self.num_generations - self.args.prefixed_rollouts
        return [PREFIXED if slot >= first_prefixed else ROLLOUT for slot in slots]

    def prefix_length(self, expert_length, group):
        """One share per question and generation batch: its prefixed rows continue the same prefix."""
        if group not in self._group_ratios:
            self._group_ratios[group] = self._prefix_rng.uniform(*ratio_bounds(self.args, self.progress()))
        return int(self._group_ratios[group] * expert_length)

    def _generate_and_score_completions(self, inputs):
        self._group_ratios = {}
        return super()._generate_and_score_completions(inputs)

    def annotate(self, batch, rewards, kinds, rows):
        prefixed = kinds == PREFIXED
        plain = losses.group_advantages(rewards, self.num_generations, counted=~prefixed)
        from_prefix = losses.group_advantages(rewards, self.num_generations, counted=prefixed)
        batch["advantages"] = torch.where(prefixed, from_prefix, plain)[rows]
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["prefix_rft/ratio_max"].append(ratio_bounds(self.args, self.progress())[1])

    def per_token_loss(self, batch, logps, old_logps, entropies):
        advantages = batch["advantages"].unsqueeze(1).expand_as(logps)
        prefix = batch["expert_mask"] * batch["loss_mask"]
        if self.args.prefix_entropy_share < 1:
            dropped = prefix.bool() & ~high_entropy_tokens(entropies, prefix, self.args.prefix_entropy_share)
            advantages = advantages.masked_fill(dropped, 0.0)
        return self.policy_loss({**batch, "advantages": advantages}, logps, old_logps), batch["loss_mask"]
