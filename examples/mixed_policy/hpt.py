"""HPT (Hybrid Post-Training): Lv et al., "Towards a Unified View of Large Language Model
Post-Training", arXiv 2509.04419 (github.com/TsinghuaC3I/Unify-Post-Training).

Per question: when the pass rate of its rollouts is at or below the gate, the group trains on the
expert trace with the SFT loss (its rollouts carry no loss); otherwise it takes a GRPO step on
its rollouts (the expert trace carries no loss). Each group has num_generations - 1 rollouts and
one expert slot, so the switch can happen inside one generation batch.
"""
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer


@dataclass
class HptConfig(GRPOConfig):
    gate: float = field(default=0.0, metadata={"help": "SFT on a question when its pass rate <= gate"})


def sft_groups(rewards, kinds, group_size, gate):
    """(groups,) bool: the questions whose rollouts' pass rate is at or below the gate."""
    return losses.pass_rates(rewards, kinds == ROLLOUT, group_size) <= gate


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
