"""ReLIFT: Ma et al., "Learning What Reinforcement Learning Can't: Interleaved Online Fine-Tuning
for Hardest Questions", arXiv 2506.07527 (github.com/TheRoadQaQ/ReLIFT).

GRPO, plus a buffer of the questions the policy failed (no rollout of the group passed) with their
expert solutions, newest first. Two ways to interleave SFT (`sft_mode`):

    add    (the authors') after the RL round's last optimizer step, once the buffer holds
           `sft_questions` questions, the newest of them leave it for one extra SFT step: NLL on
           their expert solutions as one token mean, minus the entropy bonus, with its own AdamW
           (lr `sft_lr`, weight decay 0.01, gradient norm clipped to 1). Every RL round stays.
    round  the next generation batch is made of buffered questions instead (oldest first) and takes
           an SFT step with TRL's optimizer: the only form that runs under DeepSpeed, whose ZeRO
           optimizer owns the master weights a second optimizer would have to update.
"""
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import TrainerCallback
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer

MODES = ("add", "round")


@dataclass
class ReliftConfig(GRPOConfig):
    buffer_capacity: int = field(default=0, metadata={
        "help": "failed questions kept, the oldest dropped first (0: no limit, as the authors' buffer)"})
    sft_mode: str = field(default="add", metadata={
        "help": "add: an extra SFT step after an RL round (the authors'); round: an SFT round in place of an RL one"})
    sft_questions: int = field(default=128, metadata={
        "help": "sft_mode add: buffered questions one SFT step takes (all ranks together; the authors': 128)"})
    sft_lr: float = field(default=0.0, metadata={
        "help": "sft_mode add: the SFT optimizer's learning rate (0: the RL learning rate; the authors' script "
                "sets both to 1e-6)"})
    clip_on_policy: bool = field(default=False, metadata={"help": "clip the rollouts' ratio (ReLIFT's script: off)"})

    def __post_init__(self):
        super().__post_init__()
        if self.sft_mode not in MODES:
            raise ValueError(f"sft_mode must be one of {', '.join(MODES)}, not {self.sft_mode!r}")
        if self.sft_questions < 1 or self.sft_lr < 0 or self.buffer_capacity < 0:
            raise ValueError("need sft_questions >= 1, sft_lr >= 0 and buffer_capacity >= 0")


class FailedQuestions:
    """Buffer of rows whose group had no passing rollout, one entry per question, oldest first."""

    def __init__(self, capacity=0):
        if capacity < 0:
            raise ValueError("buffer capacity must be >= 0 (0: no limit)")
        self.rows = deque(maxlen=capacity or None)

    def __len__(self):
        return len(self.rows)

    def add_failed(self, rows, pass_rates, group_size):
        """rows: this rank's rows, group by group; pass_rates: one per group of those rows."""
        for group, rate in enumerate(pass_rates):
            if rate == 0:
                self.rows.append(rows[group * group_size])

    def take(self, count, newest=False):
        if count > len(self.rows):
            raise ValueError(f"{count} rows asked, {len(self.rows)} buffered")
        return [self.rows.pop() if newest else self.rows.popleft() for _ in range(count)]


class _SftAfterRound(TrainerCallback):
    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.steps_per_generation == 0:  # the round's last optimizer step is done
            self.trainer.maybe_sft_step()


class ReliftTrainer(MixedPolicyTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed = FailedQuestions(self.args.buffer_capacity)
        self._sft_batch = False
        self.sft_optimizer = None
        if self.args.sft_mode == "add":
            if self.is_deepspeed_enabled:
                raise ValueError("ReLIFT's sft_mode 'add' needs its own optimizer, which DeepSpeed's ZeRO optimizer "
                                 "leaves no room for: run with sft_mode 'round' under DeepSpeed")
            if self.args.sft_questions % self.accelerator.num_processes:
                raise ValueError(f"sft_questions {self.args.sft_questions} does not split over "
                                 f"{self.accelerator.num_processes} processes")
            self.add_callback(_SftAfterRound(self))

    # ---- sft_mode "round": a whole generation batch of buffered questions ---------------------
    def choose_inputs(self, inputs):
        if len(inputs) % self.num_generations:
            raise ValueError(f"ReLIFT needs whole groups on each rank: {len(inputs)} rows per rank, "
                             f"{self.num_generations} rollouts per question")
        self._sft_batch = self.args.sft_mode == "round" and self._every_rank_holds(len(inputs))
        return self.failed.take(len(inputs)) if self._sft_batch else inputs

    def _every_rank_holds(self, count):
        ready = torch.tensor(float(len(self.failed) >= count), device=self.accelerator.device)
        return self.accelerator.gather(ready).min().item() == 1

    def row_kinds(self, inputs, slots):
        return [EXPERT if self._sft_batch else ROLLOUT] * len(inputs)

    def annotate(self, batch, rewards, kinds, rows):
        super().annotate(batch, rewards, kinds, rows)
        mode = "train" if self.model.training else "eval"
        if self.args.sft_mode == "round":
            self._metrics[mode]["relift/sft_step"].append(float(self._sft_batch))
        if self._sft_batch:
            return
        group_rates = losses.pass_rates(rewards, kinds == ROLLOUT, self.num_generations)
        mine = group_rates[rows.start // self.num_generations: rows.stop // self.num_generations]
        self.failed.add_failed(self._batch_inputs, mine.tolist(), self.num_generations)
        self._metrics[mode]["relift/buffered"].append(float(len(self.failed)))

    # ---- sft_mode "add": one extra SFT step after an RL round ----------------------------------
    def maybe_sft_step(self):
        """The extra SFT step when every rank holds its share of sft_questions; True if it ran."""
        count = self.args.sft_questions // self.accelerator.num_processes
        ran = self._every_rank_holds(count)
        if ran:
            self.sft_step(self.failed.take(count, newest=True))
        self._metrics["train"]["relift/sft_step"].append(float(ran))
        return ran

    def expert_batch(self, rows):
        """Prompt ids (left-padded) and expert-solution ids (right-padded, with EOS) of `rows`, and their
        masks: the RL batch's tokenization without its sampling, scoring and logging."""
        from trl.trainer.utils import pad
        self._row_kinds = None  # no prefix to add (the next round sets its own kinds)
        prompt_ids, _, _ = self._tokenize_prompts([row["prompt"] for row in rows])
        prompts = [torch.tensor(ids, device=self.accelerator.device) for ids in prompt_ids]
        completions = [torch.tensor(self.expert_ids(row), device=self.accelerator.device) for row in rows]
        pad_id = self.processing_class.pad_token_id
        return {"prompt_ids": pad(prompts, pad_id, "left"),
                "prompt_mask": pad([torch.ones_like(ids) for ids in prompts], 0, "left"),
                "completion_ids": pad(completions, pad_id, "right"),
                "completion_mask": pad([torch.ones_like(ids) for ids in completions], 0, "right")}

    def sft_step(self, rows):
        if self.sft_optimizer is None:
            self.sft_optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.args.sft_lr or self.args.learning_rate,
                                                   betas=(0.9, 0.999), weight_decay=0.01)
        batch = self.expert_batch(rows)
        mask = batch["completion_mask"]
        # one token mean over the step: DDP averages the ranks' gradients, so each rank divides by its share
        all_tokens = self.accelerator.gather(mask.sum()).sum()
        tokens = all_tokens / self.accelerator.num_processes
        self.flops.add("sft", int(all_tokens))
        micro = self.args.per_device_train_batch_size
        model = self.model_wrapped
        model.train()
        self.sft_optimizer.zero_grad(set_to_none=True)
        for start in range(0, len(rows), micro):
            part = slice(start, start + micro)
            input_ids = torch.cat([batch["prompt_ids"][part], batch["completion_ids"][part]], dim=1)
            attention = torch.cat([batch["prompt_mask"][part], mask[part]], dim=1)
            logps, entropies, _ = self._get_per_token_logps_and_entropies(
                model, input_ids, attention, batch["completion_ids"].size(1), compute_entropy=True)
            per_token = losses.sft_loss(logps) - self.args.entropy_coef * entropies
            losses.step_mean(per_token, mask[part], tokens).backward()
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.sft_optimizer.step()
        self.sft_optimizer.zero_grad(set_to_none=True)
        self._metrics["train"]["relift/sft_grad_norm"].append(float(norm))
