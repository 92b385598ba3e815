"""LUFFY: Yan et al., "Learning to Reason under Off-Policy Guidance", arXiv 2504.14945
(github.com/ElliottYan/LUFFY).

Each group holds num_generations - off_policy_traces rollouts and the expert trace(s) in the
remaining slots (7 + 1 at 8 rollouts). The baseline of the group advantage is the mean over the
rollouts only (--baseline rollouts), or over every row, expert included, as LUFFY's published
script runs (--baseline group). Rollout tokens take the on-policy policy-gradient loss (unclipped
by default, as LUFFY's published script sets loss_remove_clip); expert tokens take -A * f(pi) with
the policy shaping f(pi) = pi / (pi + gamma), gamma = 0.1.
"""
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer


@dataclass
class LuffyConfig(GRPOConfig):
    shaping_gamma: float = field(default=0.1, metadata={"help": "gamma of f(pi) = pi / (pi + gamma)"})
    off_policy_traces: int = field(default=1, metadata={"help": "expert traces per group"})
    clip_on_policy: bool = field(default=False, metadata={"help": "clip the rollouts' ratio (LUFFY's script: off)"})
    baseline: str = field(default="rollouts", metadata={
        "help": "the rows the group mean is over: rollouts, or group (every row; LUFFY's published script)"})

    def __post_init__(self):
        super().__post_init__()
        if self.baseline not in ("rollouts", "group"):
            raise ValueError(f"baseline must be 'rollouts' or 'group', not {self.baseline!r}")


class LuffyTrainer(MixedPolicyTrainer):
    def row_kinds(self, inputs, slots):
        first_expert = self.num_generations - self.args.off_policy_traces
        return [EXPERT if slot >= first_expert else ROLLOUT for slot in slots]

    def annotate(self, batch, rewards, kinds, rows):
        counted = kinds == ROLLOUT if self.args.baseline == "rollouts" else None
        batch["advantages"] = losses.group_advantages(rewards, self.num_generations, counted=counted)[rows]

    def per_token_loss(self, batch, logps, old_logps, entropies):
        on_policy = self.policy_loss(batch, logps, old_logps)
        off_policy = losses.shaped_off_policy_loss(logps, batch["advantages"], self.args.shaping_gamma)
        expert = batch["expert_mask"].bool()
        return torch.where(expert, off_policy, on_policy), batch["loss_mask"]
