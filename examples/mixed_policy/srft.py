"""SRFT: Fu et al., "SRFT: A Single-Stage Method with Supervised and Reinforcement Fine-Tuning
for Reasoning", arXiv 2506.19767.

One objective per step over a group of rollouts plus the demonstration (7 + 1 at 8 rollouts):
    w_sft * NLL(demonstration)  +  PG(rollouts with A <= 0)  +  w_rl * PG(rollouts with A > 0)
with entropy-aware weights from the policy's mean token entropy H over the rollouts (no gradient
through them): w_sft = 0.5 exp(-H), w_rl = 0.1 exp(H). PG is the clipped token-level surrogate.
"""
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer


@dataclass
class SrftConfig(GRPOConfig):
    sft_weight_scale: float = field(default=0.5, metadata={"help": "w_sft = scale * exp(-H)"})
    rl_weight_scale: float = field(default=0.1, metadata={"help": "w_rl = scale * exp(H), on positive rollouts"})
    demonstrations: int = field(default=1, metadata={"help": "demonstrations per group"})


class SrftTrainer(MixedPolicyTrainer):
    def row_kinds(self, inputs, slots):
        first_demo = self.num_generations - self.args.demonstrations
        return [EXPERT if slot >= first_demo else ROLLOUT for slot in slots]

    def annotate(self, batch, rewards, kinds, rows):
        batch["advantages"] = losses.group_advantages(rewards, self.num_generations, counted=kinds == ROLLOUT)[rows]

    def per_token_loss(self, batch, logps, old_logps, entropies):
        expert = batch["expert_mask"].bool()
        rollout_tokens = batch["loss_mask"] * (~expert)
        entropy = losses.masked_mean(entropies, rollout_tokens)
        w_sft, w_rl = losses.entropy_weights(entropy, self.args.sft_weight_scale, self.args.rl_weight_scale)
        advantages = batch["advantages"]
        policy = losses.clipped_policy_loss(logps, old_logps, advantages, self.epsilon_low, self.epsilon_high)
        policy = torch.where((advantages > 0).unsqueeze(1), w_rl * policy, policy)
        loss = torch.where(expert, w_sft * losses.sft_loss(logps), policy)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["srft/w_sft"].append(w_sft.item())
        self._metrics[mode]["srft/w_rl"].append(w_rl.item())
        return loss, batch["loss_mask"]
