"""TRL's GRPOTrainer with the few hooks that mixed-policy methods need, and nothing else changed:
generation, reward functions, vLLM, DeepSpeed and the generation-batch split stay TRL's.

Each row of a generation batch has a kind, chosen before generation by `row_kinds`:

    ROLLOUT   the policy's own completion (on-policy)
    EXPERT    the dataset's expert solution put in place of a rollout (off-policy trace)
    PREFIXED  the policy continues a prefix of the expert solution; the prefix becomes the start
              of the completion and `expert_mask` marks it

After scoring, `annotate` sets advantages (and whatever else a method needs) from the rewards of
the whole generation batch, and `per_token_loss` turns the new log-probabilities into per-token
losses and a loss mask. The loss of every micro-batch is its masked token sum over the loss-token
count of the whole optimizer step (all micro-batches, all ranks): one token-weighted mean per
step, whatever mix of SFT and RL tokens it holds. A FlopsCounter tallies compute by the paper's
accounting and is logged as `flops` at every step.
"""
import torch
from trl import GRPOTrainer

from . import losses
from .flops import FlopsCounter, parameter_count

ROLLOUT, EXPERT, PREFIXED = 0, 1, 2


class MixedPolicyTrainer(GRPOTrainer):
    """Plain GRPO (DAPO token-level clipped loss, group-mean baseline) when no hook is overridden."""

    expert_field = "target"  # the dataset column with the expert solution (assistant turn or text)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self.args, "use_adaptive_entropy", False):
            raise ValueError("use_adaptive_entropy is TRL's own loss; the mixed-policy loss takes a fixed entropy_coef")
        self.flops = FlopsCounter(parameter_count(self.model))
        self._batch_inputs, self._row_kinds, self._prefix_lengths, self._rewards = None, None, None, None

    def progress(self):
        """How far the run is, 0 to 1, for schedules: steps over max_steps (train.py swaps in FLOPs over
        the budget when the run has one, since its max_steps is then only a ceiling)."""
        return min(1.0, self.state.global_step / max(1, self.state.max_steps))

    # ---- hooks for the methods -------------------------------------------------------------
    def choose_inputs(self, inputs):
        """The rows of the next generation batch (ReLIFT swaps in its buffer here)."""
        return inputs

    def row_kinds(self, inputs, slots):
        """One kind per row; `slots[i]` is the row's position inside its group of num_generations."""
        return [ROLLOUT] * len(inputs)

    def prefix_length(self, expert_length, group):
        """Tokens of the expert solution a PREFIXED row of group `group` (its question's group of
        num_generations rows, numbered over the whole generation batch) starts from."""
        raise NotImplementedError(f"{type(self).__name__} plans PREFIXED rows but sets no prefix length")

    def annotate(self, batch, rewards, kinds, rows):
        """Fill batch["advantages"] (and method fields) from the whole generation batch's rewards and
        kinds (gathered over ranks); `rows` is this rank's slice of them."""
        rollouts = kinds == ROLLOUT
        batch["advantages"] = losses.group_advantages(rewards, self.num_generations, counted=rollouts)[rows]

    def per_token_loss(self, batch, logps, old_logps, entropies):
        """(per-token loss, loss mask), both (B, T): NLL on expert tokens, the clipped GRPO surrogate
        on the policy's own (plain GRPO when a batch has no expert tokens)."""
        policy = self.policy_loss(batch, logps, old_logps)
        return torch.where(batch["expert_mask"].bool(), losses.sft_loss(logps), policy), batch["loss_mask"]

    def policy_loss(self, batch, logps, old_logps):
        """The rollouts' per-token policy-gradient loss: clipped, unless the method's config has
        clip_on_policy off (the LUFFY, HPT and ReLIFT scripts set loss_remove_clip)."""
        if getattr(self.args, "clip_on_policy", True):
            return losses.clipped_policy_loss(logps, old_logps, batch["advantages"], self.epsilon_low,
                                              self.epsilon_high)
        return losses.unclipped_policy_loss(logps, old_logps, batch["advantages"])

    # ---- expert solutions ------------------------------------------------------------------
    def expert_text(self, row):
        target = row[self.expert_field]
        return target[-1]["content"] if isinstance(target, list) else str(target)

    def expert_ids(self, row):
        """The expert solution as completion tokens, ending with EOS, cut to max_completion_length."""
        ids = self._tokenizer(self.expert_text(row), add_special_tokens=False)["input_ids"]
        return list(ids[: self.max_completion_length - 1]) + [self._tokenizer.eos_token_id]

    # ---- TRL internals this class hooks into -----------------------------------------------
    def _generate_and_score_completions(self, inputs):
        training = self.model.training
        inputs = self.choose_inputs(inputs) if training else inputs
        first = self.accelerator.process_index * len(inputs)
        slots = [(first + i) % self.num_generations for i in range(len(inputs))]
        self._groups = [(first + i) // self.num_generations for i in range(len(inputs))]
        self._batch_inputs = inputs
        self._row_kinds = self.row_kinds(inputs, slots) if training else [ROLLOUT] * len(inputs)
        self._prefix_lengths = [0] * len(inputs)
        batch = super()._generate_and_score_completions(inputs)
        return self._annotate_batch(batch, training)

    def _tokenize_prompts(self, prompts):
        prompt_ids, images, multimodal = super()._tokenize_prompts(prompts)
        if self._row_kinds and PREFIXED in self._row_kinds:
            prompt_ids = [list(ids) for ids in prompt_ids]
            for i, kind in enumerate(self._row_kinds):
                if kind == PREFIXED:
                    expert = self.expert_ids(self._batch_inputs[i])[:-1]
                    length = min(self.prefix_length(len(expert), self._groups[i]), len(expert))
                    prompt_ids[i] = prompt_ids[i] + expert[:length]
                    self._prefix_lengths[i] = length
        return prompt_ids, images, multimodal

    def _generate(self, prompts):
        kinds, rows = self._row_kinds, self._batch_inputs
        if all(kind == EXPERT for kind in kinds):  # a pure SFT batch: nothing to sample
            prompt_ids, _, _ = self._tokenize_prompts(prompts)
            completion_ids = [self.expert_ids(row) for row in rows]
            return prompt_ids, completion_ids, None, self._decode(prompts, completion_ids), None, {}, None, []
        prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images = \
            super()._generate(prompts)
        if all(kind == ROLLOUT for kind in kinds):
            return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images
        if tool_mask is not None:
            raise NotImplementedError("mixed-policy rows with tool calls are not supported")
        prompt_ids, completion_ids = [list(ids) for ids in prompt_ids], [list(ids) for ids in completion_ids]
        logprobs = None if logprobs is None else [list(lp) for lp in logprobs]
        for i, kind in enumerate(kinds):
            if kind == EXPERT:
                completion_ids[i] = self.expert_ids(rows[i])
                if logprobs is not None:
                    logprobs[i] = [float("nan")] * len(completion_ids[i])
            elif kind == PREFIXED and self._prefix_lengths[i]:
                length = self._prefix_lengths[i]
                prefix, prompt_ids[i] = prompt_ids[i][-length:], prompt_ids[i][:-length]
                completion_ids[i] = (prefix + completion_ids[i])[: self.max_completion_length]
                if logprobs is not None:
                    logprobs[i] = ([float("nan")] * length + logprobs[i])[: self.max_completion_length]
        completions = self._decode(prompts, completion_ids)
        return prompt_ids, completion_ids, tool_mask, completions, logprobs, extra, images, tool_images

    def _decode(self, prompts, completion_ids):
        texts = self.processing_class.batch_decode(completion_ids, skip_special_tokens=True)
        if isinstance(prompts[0], list):  # conversational
            return [[{"role": "assistant", "content": text}] for text in texts]
        return texts

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        weights = self.reward_weights.to(rewards_per_func.device).unsqueeze(0)
        self._rewards = torch.nan_to_num((rewards_per_func * weights).nansum(dim=1), nan=0.0)
        return rewards_per_func

    def _annotate_batch(self, batch, training):
        device = batch["completion_mask"].device
        kinds = torch.tensor(self._row_kinds, device=device)
        prefix = torch.tensor(self._prefix_lengths, device=device)
        mask = batch["completion_mask"]
        positions = torch.arange(mask.size(1), device=device).unsqueeze(0)
        from_expert = (kinds == EXPERT).unsqueeze(1) | ((kinds == PREFIXED).unsqueeze(1) & (positions < prefix.unsqueeze(1)))
        batch["row_kind"], batch["prefix_length"] = kinds, prefix
        batch["expert_mask"] = mask * from_expert.to(mask.dtype)
        batch["loss_mask"] = mask if "tool_mask" not in batch else mask * batch["tool_mask"]
        local = len(self._row_kinds)
        rows = slice(self.accelerator.process_index * local, (self.accelerator.process_index + 1) * local)
        all_kinds = self.accelerator.gather(kinds)
        batch["rewards"] = self._rewards[rows]
        self.annotate(batch, self._rewards, all_kinds, rows)
        # The step's token count, after the methods have masked what they do not train on.
        batch["num_items_in_batch"] = self.accelerator.gather(batch["loss_mask"].sum()).sum()
        if training:
            self._count_flops(batch, all_kinds)
        return batch

    def _count_flops(self, batch, all_kinds):
        mask, expert = batch["completion_mask"], batch["expert_mask"]
        counts = torch.stack([(mask - expert).sum(), expert.sum()]).unsqueeze(0)
        generated, expert_tokens = self.accelerator.gather(counts).sum(dim=0).tolist()
        pure_sft = bool((all_kinds == EXPERT).all())
        self.flops.add("on_policy", generated)
        self.flops.add("sft" if pure_sft else "off_policy", expert_tokens)

    def _compute_loss(self, model, inputs):
        prompt_ids, completion_ids = inputs["prompt_ids"], inputs["completion_ids"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        logps, entropies, _ = self._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, completion_ids.size(1), compute_entropy=True)
        old_logps = inputs.get("old_per_token_logps")
        old_logps = logps.detach() if old_logps is None else old_logps
        per_token, mask = self.per_token_loss(inputs, logps, old_logps, entropies)
        # TRL's entropy_coef (its own loss, which this one replaces, would apply it): a bonus of coef x the
        # step's token-mean entropy, with its gradient (the authors' LUFFY, HPT, ReLIFT scripts: 0.001)
        if self.args.entropy_coef:
            per_token = per_token - self.args.entropy_coef * entropies
        if "importance_sampling_ratio" in inputs:  # TRL's vLLM-vs-trainer correction (1 on expert tokens)
            per_token = per_token * inputs["importance_sampling_ratio"]
        mode = "train" if self.model.training else "eval"
        # As TRL's "dapo": num_items_in_batch counts the generation batch over all ranks.
        tokens_in_step = inputs["num_items_in_batch"] / self.accelerator.num_processes
        if mode == "train":
            tokens_in_step = tokens_in_step * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss = losses.step_mean(per_token, mask, tokens_in_step)
        self._metrics[mode]["entropy"].append(losses.masked_mean(entropies.detach(), inputs["completion_mask"]).item())
        self._metrics[mode]["expert_token_share"].append(
            (inputs["expert_mask"].sum() / inputs["completion_mask"].sum().clamp(min=1)).item())
        if mode == "train":
            self._metrics[mode]["flops"].append(float(self.flops.total))
        return loss
