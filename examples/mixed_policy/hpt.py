"""HPT (Hybrid Post-Training): Lv et al., "Towards a Unified View of Large Language Model
Post-Training", arXiv 2509.04419 (github.com/TsinghuaC3I/Unify-Post-Training).

Per question: when at most `gate` of its rollouts pass, the group trains on the expert trace with
the SFT loss (its rollouts carry no loss); otherwise it takes a policy-gradient step on its
rollouts (the expert trace carries no loss), unclipped as the authors' scripts run it. Each group
has num_generations - 1 rollouts and one expert slot, so the switch can happen inside one
generation batch; the authors' 8 rollouts per question are num_generations 9 here.
"""
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer


@dataclass
class HptConfig(GRPOConfig):
    gate: int = field(default=0, metadata={
        "help": "SFT on a question when at most this many of its rollouts pass (the authors' Qwen script: 0)"})
    clip_on_policy: bool = field(default=False, metadata={"help": "clip the rollouts' ratio (HPT's scripts: off)"})

    def __post_init__(self):
        super().__post_init__()
        if self.gate < 0:
            raise ValueError(f"gate counts passing rollouts: it must be >= 0, not {self.gate}")


def sft_groups(rewards, kinds, group_size, gate):
    """(groups,) bool: the questions with at most `gate` passing rollouts."""
    return losses.pass_counts(rewards, kinds == ROLLOUT, group_size) <= gate


class HptTrainer(MixedPolicyTrainer):
    def row_kinds(self, inputs, slots):
        return [EXPERT if slot == self.num_generations - 1 else ROLLOUT for slot in slots]

    def annotate(self, batch, rewards, kinds, rows):
        batch["advantages"] = losses.group_advantages(rewards, self.num_generations, counted=kinds == ROLLOUT)[rows]
        sft = sft_groups(rewards, kinds, self.num_generations, self.args.gate).repeat_interleave(self.num_generations)
        trained = torch.where(sft, kinds == EXPERT, kinds == ROLLOUT)[rows]
        batch["loss_mask"] = batch["loss_mask"] * trained.unsqueeze(1).to(batch["loss_mask"].dtype)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["hpt/sft_share"].append(sft.float().mean().item())
