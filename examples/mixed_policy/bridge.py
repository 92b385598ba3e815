"""BRIDGE: Chen et al., "Beyond Two-Stage Training: Cooperative SFT and RL for LLM Reasoning",
arXiv 2509.06948 (code announced at github.com/ChanLiang/BRIDGE; not readable from here, so this
follows the paper's formulation as its abstract and public summaries state it).

The policy is an augmented model pi(.; theta, w): the base weights theta and a LoRA adapter w
(peft, on every linear layer but the LM head; B = 0 at the start, so pi starts as the base model).
The paper's bilevel problem, SFT the leader and RL the follower,

    max_w J_SFT(theta*(w), w)   s.t.   theta*(w) in argmax_theta J_RL(theta, w),

in losses (L = -J), relaxed with the value-function penalty lambda > 0 (`penalty`):

    min_{theta, w}  F = L_SFT(theta, w) + lambda [L_RL(theta, w) - L_RL(theta^(w), w)],
    theta^(w) = argmin_theta' L_RL(theta', w)   (RL alone).

The bracket is minus the cooperative gain J_RL(theta, w) - J_RL(theta^, w): what the base trained
jointly earns over the base trained by RL alone. The two levels are F's two partial gradients:

  lower (theta; the adapter held fixed):  dF/dtheta = lambda [dL_RL/dtheta + (1/lambda) dL_SFT/dtheta]:
      an RL step with SFT supervision weighted 1/lambda. Rollout tokens take the clipped policy loss
      (GRPO's), the expert trace's tokens (1/lambda) x NLL, in the step's one token mean; TRL's
      optimizer, whose parameter groups hold theta only.
  upper (w; the base held fixed): by Danskin's theorem d/dw L_RL(theta^(w), w) = dL_RL/dw at theta^,
      so no Hessian and no differentiation through the lower level's steps (first order):
          g_w = dL_SFT/dw (theta, w) + lambda [dL_RL/dw (theta, w) - dL_RL/dw (theta^, w)],
      one AdamW step on w (`lora_lr`), gradient norm clipped as TRL's.

Where this simplifies the paper: theta^ (RL alone) is neither trained to optimality nor kept as a
second model with rollouts of its own. From one starting point a joint step theta_k - eta (g_RL +
g_SFT / lambda) and an RL-only step theta_k - eta g_RL differ by eta g_SFT / lambda, so to first order
theta^ is theta with the SFT share of the round's lower-level update taken back: the round's steps
sum the SFT gradient G = sum_expert dNLL/dtheta / (lambda T_step) (T_step the loss tokens of one
step), taken at theta (after the steps, not before: the same to first order), and Adam's step for it
is lr G / (sqrt(v^) + eps), v^ its bias-corrected second moment (momentum ignored), so
theta^ = theta + lr G / (sqrt(v^) + eps). Both L_RL terms are the round's rollouts under the lower
level's policy loss, ratio to the sampling policy (importance-weighted, no fresh rollouts from
theta^); L_SFT is the token-mean NLL of the round's expert traces, which are also the lower level's
SFT data (the paper samples SFT and RL batches from separate data sets; here each question's expert
solution is its SFT example). One upper step per generation round, after its lower-level steps.
lambda is fixed and ties both levels; no KL term (beta 0, as every method here). The paper's values
(lambda or its schedule, the adapter's rank, the learning rates) are not known here.

FLOPs (flops.py's rules): the round's rollouts 8ND and expert traces 6ND as every method; the upper
level adds three forward + backward passes at 6ND each ("extra_pass"): the expert traces once
(dL_SFT for w and theta) and the rollouts twice (at theta and at theta^). N counts the adapter's
parameters too (the augmented model is what runs). One process, no DeepSpeed: the upper level
has an optimizer of its own, which ZeRO's would leave no room for.
"""
import copy
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer

ADAPTER = "lora_"  # the adapter's parameter names contain this (peft's lora_A / lora_B)


@dataclass
class BridgeConfig(GRPOConfig):
    penalty: float = field(default=1.0, metadata={
        "help": "lambda of the penalty: the lower level weighs the SFT loss by 1/lambda, the upper level the "
                "cooperative gain by lambda (the authors' value is not known here)"})
    sft_traces: int = field(default=1, metadata={
        "help": "expert traces per group, in its last slots: the SFT data of both levels"})
    lora_rank: int = field(default=8, metadata={"help": "rank r of the LoRA adapter w that the upper level trains"})
    lora_alpha: float = field(default=16.0, metadata={"help": "LoRA scale: the adapter adds (alpha / r) B A"})
    lora_lr: float = field(default=0.0, metadata={
        "help": "the upper level's AdamW learning rate (0: the RL learning rate)"})

    def __post_init__(self):
        super().__post_init__()
        if self.penalty <= 0 or self.lora_rank < 1 or self.lora_alpha <= 0 or self.lora_lr < 0:
            raise ValueError("need penalty > 0, lora_rank >= 1, lora_alpha > 0 and lora_lr >= 0")
        if not 1 <= self.sft_traces < self.num_generations:
            raise ValueError(f"sft_traces must be 1 to num_generations - 1 ({self.num_generations - 1}), "
                             f"not {self.sft_traces}")


def lora_config(args):
    from peft import LoraConfig
    return LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules="all-linear", task_type="CAUSAL_LM")


def gradients(params):
    """Copies of the params' gradients (zeros where a param got none)."""
    return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone() for p in params]


def rl_alone_offset(grad, state, lr, beta2, eps):
    """What a step of Adam (lr, beta2, eps; its `state` for this parameter, or None) moves a weight by for
    the gradient `grad`, momentum ignored: lr grad / (sqrt(v^) + eps), v^ the bias-corrected second moment;
    where the optimizer has none yet (no state, or a zero entry) v^ = grad^2, as at Adam's first step."""
    if state and "exp_avg_sq" in state and int(state.get("step", 0)) > 0:
        v_hat = state["exp_avg_sq"] / (1 - beta2 ** int(state["step"]))
        v_hat = torch.where(v_hat > 0, v_hat, grad * grad)
    else:
        v_hat = grad * grad
    return lr * grad / (v_hat.sqrt() + eps)


class _UpperAfterRound(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.lower_lr = self.trainer._get_learning_rate()  # before the scheduler moves it on

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % (args.steps_per_generation * args.num_iterations) == 0:  # the round's lower steps
            self.trainer.upper_level_step()


class BridgeTrainer(MixedPolicyTrainer):
    def __init__(self, *args, **kwargs):
        config = kwargs["args"] if "args" in kwargs else args[2]
        if kwargs.get("peft_config") is None:
            kwargs["peft_config"] = lora_config(config)
        super().__init__(*args, **kwargs)
        if self.is_deepspeed_enabled or self.accelerator.num_processes > 1:
            raise ValueError("BRIDGE runs in one process without DeepSpeed here: its upper level has an optimizer "
                             "of its own over the adapter")
        named = list(self.model.named_parameters())
        self.adapter = [p for name, p in named if ADAPTER in name]
        self.base = [p for name, p in named if ADAPTER not in name]
        if not self.adapter:
            raise ValueError("the model has no LoRA adapter")
        self._trainable(adapter=False, base=True)  # TRL's optimizer (built in train()) takes theta only
        self.upper_optimizer = None
        self.lower_lr = None  # the learning rate of the last lower-level step
        self._round = None
        self.add_callback(_UpperAfterRound(self))

    def _trainable(self, adapter, base):
        for p in self.adapter:
            p.requires_grad_(adapter)
        for p in self.base:
            p.requires_grad_(base)

    @contextmanager
    def _gradients_of(self, adapter, base):
        """Gradients for the adapter and/or the base only, inside; the lower level's setting after."""
        self._trainable(adapter, base)
        try:
            yield
        finally:
            self._trainable(adapter=False, base=True)
            for p in self.adapter + self.base:
                p.grad = None

    # ---- the lower level: RL + (1/lambda) SFT on theta, the adapter fixed ---------------------
    def row_kinds(self, inputs, slots):
        first_expert = self.num_generations - self.args.sft_traces
        return [EXPERT if slot >= first_expert else ROLLOUT for slot in slots]

    def per_token_loss(self, batch, logps, old_logps, entropies):
        policy = self.policy_loss(batch, logps, old_logps)
        sft = losses.sft_loss(logps) / self.args.penalty
        return torch.where(batch["expert_mask"].bool(), sft, policy), batch["loss_mask"]

    def _generate_and_score_completions(self, inputs):
        batch = super()._generate_and_score_completions(inputs)
        if self.model.training:
            if batch.get("old_per_token_logps") is None:  # TRL skips them when one step trains a round
                with torch.no_grad():
                    batch["old_per_token_logps"] = self._logps(batch, slice(None))
            self._round = dict(batch)  # the upper level's data, once the round's lower steps are done
        return batch

    # ---- the upper level: the cooperative-gain gradient on w, the base fixed --------------------
    def _logps(self, batch, rows):
        completion_ids = batch["completion_ids"][rows]
        input_ids = torch.cat([batch["prompt_ids"][rows], completion_ids], dim=1)
        attention = torch.cat([batch["prompt_mask"][rows], batch["completion_mask"][rows]], dim=1)
        logps, _, _ = self._get_per_token_logps_and_entropies(self.model, input_ids, attention, completion_ids.size(1))
        return logps

    def _backward_mean(self, batch, mask, per_token):
        """Backward of sum(per_token(rows, logps) * mask) / mask.sum() over the rows with a masked token, in
        micro-batches; returns the loss value."""
        rows = mask.sum(1).nonzero().flatten()
        tokens, total = mask.sum().clamp(min=1), 0.0
        for start in range(0, len(rows), self.args.per_device_train_batch_size):
            part = rows[start:start + self.args.per_device_train_batch_size]
            loss = (per_token(part, self._logps(batch, part)) * mask[part]).sum() / tokens
            loss.backward()
            total += loss.item()
        return total

    def _policy_loss_of(self, batch):
        old = batch["old_per_token_logps"]
        return lambda part, logps: self.policy_loss({"advantages": batch["advantages"][part]}, logps, old[part])

    def _lower_optimizer(self):
        inner = getattr(self.optimizer, "optimizer", self.optimizer)
        if inner is None:  # before train() built it: as Adam's first step at the configured settings
            return None, self.args.learning_rate, self.args.adam_beta2, self.args.adam_epsilon
        group = inner.param_groups[0]
        return inner, group["lr"] if self.lower_lr is None else self.lower_lr, group["betas"][1], group["eps"]

    def upper_level_gradient(self, batch):
        """(g_w, parts): the first-order cooperative-gain gradient of the adapter on a round's batch,
        g_w = dL_SFT/dw + lambda (dL_RL/dw at theta - dL_RL/dw at theta^), and its pieces. The base
        weights are put back bit for bit; FLOPs of the three passes are counted."""
        loss_mask = batch["loss_mask"]
        sft_mask = loss_mask * batch["expert_mask"]
        rl_mask = loss_mask - sft_mask
        penalty = self.args.penalty
        # 1. the expert traces at (theta, w): dL_SFT/dw for the upper level, dL_SFT/dtheta for theta^
        with self._gradients_of(adapter=True, base=True):
            sft_loss = self._backward_mean(batch, sft_mask, lambda part, logps: losses.sft_loss(logps))
            sft_w, sft_theta = gradients(self.adapter), gradients(self.base)
        # 2. the rollouts at (theta, w): dL_RL/dw where the base was trained jointly
        with self._gradients_of(adapter=True, base=False):
            rl_joint = self._backward_mean(batch, rl_mask, self._policy_loss_of(batch))
            joint_w = gradients(self.adapter)
        # 3. theta^: the round's lower-level SFT gradient taken back as its Adam step
        optimizer, lr, beta2, eps = self._lower_optimizer()
        tokens_in_step = (batch["num_items_in_batch"] / self.accelerator.num_processes
                          * self.args.gradient_accumulation_steps / self.args.steps_per_generation)
        scale = float(sft_mask.sum()) / (penalty * float(tokens_in_step.clamp(min=1)))  # mean -> the steps' SFT sum
        saved = [p.detach().clone() for p in self.base]
        try:
            with torch.no_grad():
                for p, grad in zip(self.base, sft_theta):
                    state = optimizer.state.get(p) if optimizer is not None else None
                    p.add_(rl_alone_offset(scale * grad, state, lr, beta2, eps))
            with self._gradients_of(adapter=True, base=False):
                rl_alone = self._backward_mean(batch, rl_mask, self._policy_loss_of(batch))
                alone_w = gradients(self.adapter)
        finally:
            with torch.no_grad():
                for p, value in zip(self.base, saved):
                    p.copy_(value)
        self.flops.add("extra_pass", int(sft_mask.sum()) + 2 * int(rl_mask.sum()))
        grads = [s + penalty * (j - a) for s, j, a in zip(sft_w, joint_w, alone_w)]
        parts = {"sft": sft_w, "joint": joint_w, "alone": alone_w, "sft_loss": sft_loss,
                 "gain": rl_alone - rl_joint}  # J_RL(theta) - J_RL(theta^), the surrogate's estimate
        return grads, parts

    def upper_level_step(self, batch=None):
        """One AdamW step on the adapter along -g_w (the base untouched); False when no round is there."""
        batch = self._round if batch is None else batch
        if batch is None:
            return False
        was_training = self.model.training
        self.model.train()
        grads, parts = self.upper_level_gradient(batch)
        if self.upper_optimizer is None:
            self.upper_optimizer = torch.optim.AdamW(self.adapter, lr=self.args.lora_lr or self.args.learning_rate,
                                                     betas=(self.args.adam_beta1, self.args.adam_beta2),
                                                     eps=self.args.adam_epsilon, weight_decay=0.0)
        with self._gradients_of(adapter=True, base=False):
            for p, grad in zip(self.adapter, grads):
                p.grad = grad
            norm = torch.nn.utils.clip_grad_norm_(self.adapter, self.args.max_grad_norm)
            self.upper_optimizer.step()
        self.model.train(was_training)
        gain_norm = torch.linalg.vector_norm(torch.stack([
            torch.linalg.vector_norm(j - a) for j, a in zip(parts["joint"], parts["alone"])]))
        metrics = self._metrics["train"]
        metrics["bridge/upper_grad_norm"].append(float(norm))
        metrics["bridge/gain_grad_norm"].append(self.args.penalty * float(gain_norm))
        metrics["bridge/cooperative_gain"].append(float(parts["gain"]))
        metrics["bridge/upper_sft_loss"].append(float(parts["sft_loss"]))
        self._round = None
        return True

    # ---- the model a run leaves: theta and w merged --------------------------------------------
    def save_model(self, output_dir=None, _internal_call=False):
        """The augmented model pi(.; theta, w) with the adapter merged in: a plain causal LM that loads
        without peft (the evaluation's and the checkpoints' format)."""
        output_dir = output_dir or self.args.output_dir
        if self.is_world_process_zero():
            merged = copy.deepcopy(self.accelerator.unwrap_model(self.model)).merge_and_unload()
            merged.save_pretrained(output_dir)
