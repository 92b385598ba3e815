"""ReLIFT: Ma et al., "Learning What Reinforcement Learning Can't: Interleaved Online Fine-Tuning
for Hardest Questions", arXiv 2506.07527.

GRPO, plus a buffer of the questions the policy failed (no rollout of the group passed) with their
expert solutions. Whenever the buffer holds a full generation batch of rows, the next generation
batch is an SFT batch made of them (oldest first): no sampling, NLL on the expert solutions, the
same optimizer and token-weighted loss. Then RL resumes.
"""
from collections import deque
from dataclasses import dataclass, field

import torch
from trl import GRPOConfig

from . import losses
from .trainer import EXPERT, ROLLOUT, MixedPolicyTrainer


@dataclass
class ReliftConfig(GRPOConfig):
    buffer_capacity: int = field(default=1024, metadata={"help": "failed questions kept (oldest dropped first)"})


class FailedQuestions:
    """FIFO buffer of rows whose group had no passing rollout; one entry per question."""

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("buffer capacity must be >= 1")
        self.rows = deque(maxlen=capacity)

    def __len__(self):
        return len(self.rows)

    def add_failed(self, rows, pass_rates, group_size):
        """rows: this rank's rows, group by group; pass_rates: one per group of those rows."""
        for group, rate in enumerate(pass_rates):
            if rate == 0:
                self.rows.append(rows[group * group_size])

    def take(self, count):
        if count > len(self.rows):
            raise ValueError(f"{count} rows asked, {len(self.rows)} buffered")
        return [self.rows.popleft() for _ in range(count)]


class ReliftTrainer(MixedPolicyTrainer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.failed = FailedQuestions(self.args.buffer_capacity)
        self._sft_batch = False

    def choose_inputs(self, inputs):
        if len(inputs) % self.num_generations:
            raise ValueError(f"ReLIFT needs whole groups on each rank: {len(inputs)} rows per rank, "
                             f"{self.num_generations} rollouts per question")
        ready = torch.tensor(float(len(self.failed) >= len(inputs)), device=self.accelerator.device)
        self._sft_batch = self.accelerator.gather(ready).min().item() == 1  # every rank has a full batch
        return self.failed.take(len(inputs)) if self._sft_batch else inputs

    def row_kinds(self, inputs, slots):
        return [EXPERT if self._sft_batch else ROLLOUT] * len(inputs)

    def annotate(self, batch, rewards, kinds, rows):
        super().annotate(batch, rewards, kinds, rows)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["relift/sft_step"].append(float(self._sft_batch))
        if not self._sft_batch:
            group_rates = losses.pass_rates(rewards, kinds == ROLLOUT, self.num_generations)
            mine = group_rates[rows.start // self.num_generations: rows.stop // self.num_generations]
            self.failed.add_failed(self._batch_inputs, mine.tolist(), self.num_generations)
        self._metrics[mode]["relift/buffered"].append(float(len(self.failed)))
