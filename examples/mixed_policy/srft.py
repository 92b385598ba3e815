"""SRFT: Fu et al., "SRFT: A Single-Stage Method with Supervised and Reinforcement Fine-Tuning
for Reasoning", arXiv 2506.19767.

One objective per step over a group of rollouts plus the demonstration (7 + 1 at 8 rollouts):
    w_sft * NLL(demonstration) + OFF(demonstration) + PG(rollouts with A <= 0) + w_rl * PG(rollouts with A > 0)
with entropy-aware weights from each row's mean token entropy H under the policy (no gradient
through them): w_sft = 0.5 exp(-H), w_rl = 0.1 exp(H). PG is the clipped token-level surrogate;
OFF is LUFFY's off-policy term -A f(pi) on the demonstration's tokens, with the advantage over a
baseline of every row of the group, demonstration included. Per row H and the OFF term follow what
is reported for the authors' code (the HPT authors' re-implementation; SRFT's own repository was
not readable from here); --demonstration-pg false gives the paper's objective without OFF.
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
    demonstration_pg: bool = field(default=True, metadata={
        "help": "also LUFFY's off-policy term -A f(pi) on the demonstration, the baseline over every row"})
    shaping_gamma: float = field(default=0.1, metadata={"help": "gamma of f(pi) = pi / (pi + gamma) in that term"})


class SrftTrainer(MixedPolicyTrainer):
    def row_kinds(self, inputs, slots):
        first_demo = self.num_generations - self.args.demonstrations
        return [EXPERT if slot >= first_demo else ROLLOUT for slot in slots]

    def annotate(self, batch, rewards, kinds, rows):
        counted = None if self.args.demonstration_pg else kinds == ROLLOUT
        batch["advantages"] = losses.group_advantages(rewards, self.num_generations, counted=counted)[rows]

    def per_token_loss(self, batch, logps, old_logps, entropies):
        expert, mask = batch["expert_mask"].bool(), batch["loss_mask"]
        row_entropy = (entropies * mask).sum(1) / mask.sum(1).clamp(min=1)
        w_sft, w_rl = (w.unsqueeze(1) for w in losses.entropy_weights(
            row_entropy, self.args.sft_weight_scale, self.args.rl_weight_scale))
        advantages = batch["advantages"]
        policy = losses.clipped_policy_loss(logps, old_logps, advantages, self.epsilon_low, self.epsilon_high)
        policy = torch.where((advantages > 0).unsqueeze(1), w_rl * policy, policy)
        demonstration = w_sft * losses.sft_loss(logps)
        if self.args.demonstration_pg:
            demonstration = demonstration + losses.shaped_off_policy_loss(logps, advantages, self.args.shaping_gamma)
        loss = torch.where(expert, demonstration, policy)
        mode = "train" if self.model.training else "eval"
        is_expert_row = expert.any(1)
        if is_expert_row.any():
            self._metrics[mode]["srft/w_sft"].append(w_sft.squeeze(1)[is_expert_row].mean().item())
        if (~is_expert_row).any():
            self._metrics[mode]["srft/w_rl"].append(w_rl.squeeze(1)[~is_expert_row].mean().item())
        return loss, mask
