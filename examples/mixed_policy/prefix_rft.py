"""Prefix-RFT: Huang et al., "Blending Supervised and Reinforcement Fine-Tuning with Prefix
Sampling", arXiv 2507.01679.

In each group, `prefixed_rollouts` of the num_generations rows start from one prefix of the
expert solution (a share of its tokens drawn uniformly from [prefix_ratio_min, prefix_ratio_max]
once per question, so they share it, as in the authors' code) and the policy writes the rest. The
whole (prefix + continuation) is rewarded; the rows continuing the prefix form their own baseline,
the plain rollouts theirs (the authors' code groups by prefix). The prefix tokens carry no loss,
the continuation takes the clipped GRPO loss.
"""
import random
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import PREFIXED, ROLLOUT, MixedPolicyTrainer


@dataclass
class PrefixRftConfig(GRPOConfig):
    prefixed_rollouts: int = field(default=2, metadata={"help": "rows per group that continue an expert prefix"})
    prefix_ratio_min: float = field(default=0.1, metadata={"help": "smallest share of the expert solution given"})
    prefix_ratio_max: float = field(default=0.9, metadata={"help": "largest share of the expert solution given"})


class PrefixRftTrainer(MixedPolicyTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0 <= self.args.prefix_ratio_min <= self.args.prefix_ratio_max <= 1:
            raise ValueError("need 0 <= prefix_ratio_min <= prefix_ratio_max <= 1")
        self._prefix_rng = random.Random(self.args.seed + self.accelerator.process_index)
        self._group_ratios = {}

    def row_kinds(self, inputs, slots):
        first_prefixed = self.num_generations - self.args.prefixed_rollouts
        return [PREFIXED if slot >= first_prefixed else ROLLOUT for slot in slots]

    def prefix_length(self, expert_length, group):
        """One share per question and generation batch: its prefixed rows continue the same prefix."""
        if group not in self._group_ratios:
            self._group_ratios[group] = self._prefix_rng.uniform(self.args.prefix_ratio_min,
                                                                 self.args.prefix_ratio_max)
        return int(self._group_ratios[group] * expert_length)

    def _generate_and_score_completions(self, inputs):
        self._group_ratios = {}
        return super()._generate_and_score_completions(inputs)

    def annotate(self, batch, rewards, kinds, rows):
        prefixed = kinds == PREFIXED
        plain = losses.group_advantages(rewards, self.num_generations, counted=~prefixed)
        from_prefix = losses.group_advantages(rewards, self.num_generations, counted=prefixed)
        batch["advantages"] = torch.where(prefixed, from_prefix, plain)[rows]
        batch["loss_mask"] = losses.prefix_token_mask(batch["loss_mask"], batch["prefix_length"])
