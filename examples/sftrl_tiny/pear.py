"""PEAR-style SFT ("Good SFT Optimizes for SFT, Better SFT Prepares for RL", arXiv 2602.01058): the SFT loss
of each completion token is multiplied by a clipped importance ratio between the policy being trained
(pi_theta) and the policy the data is taken to come from (pi_beta), so that SFT leans towards what the
policy itself would generate, as the RL that follows learns from its own rollouts. Implemented here
from the paper's abstract and public summaries (its method section was not read from here); where
they leave room, the choices are ours and named below.

The behaviour policy. pi_beta's per-token log-probabilities are collected once, before SFT, by one pass
over the SFT data. Whoever wrote the data is not at hand: the tiny set is written by a program
(data.py, one solution per problem), OpenR1-Math by DeepSeek-R1. So pi_beta is, by default, the
*initial* model, the checkpoint SFT starts from (`--pear-behaviour initial`): the ratio then measures how
far SFT has moved the policy on each data token since it started. `--pear-behaviour deterministic` takes
the data's generator as deterministic instead (log pi_beta = 0 on every data token, so the ratio is
pi_theta itself): exactly true for the generated arithmetic, false for model-written data.

The weights. With r_t = log pi_theta(y_t | x, y_<t) - log pi_beta(y_t | x, y_<t) on the completion tokens
(no gradient: the weight is a constant of the step), a log-weight a_t per token is
    pear-token   a_t = r_t
    pear-block   a_t = R_b, the block b of B completion tokens (B = --pear-block-size, counted from the
                 completion's first token) that holds t: R_b = mean of r over the block (a geometric mean
                 of the ratios; --pear-reduce sum: their product)
    pear-seq     a_t = the mean of r over the sequence's completion (geometric mean; sum: product)
and with --pear-discount g > 0 (the paper's "discounted suffix" ratios, as we read them) the token and
block variants look ahead: a_t = sum_{s>=t} g^(s-t) r_s (over blocks for pear-block), divided by
sum_{s>=t} g^(s-t) under --pear-reduce mean. Then w_t = clip(exp(a_t), lo, hi) (--pear-clip), and
w_t <- w_t * N / sum(w) so that the weights of the N completion tokens of a batch average to 1: the
batch is the optimizer step's (every micro-batch of the accumulation window on every rank;
--pear-normalise step, one extra forward without gradient per micro-batch), or each micro-batch on its
own (micro-batch: no extra forward, but with micro-batch 1 the sequence weight divides out and
pear-seq is plain SFT). The loss is sum_t w_t * (-log pi_theta(y_t)) / (completion tokens of the step),
TRL's own token mean with weights.

`--sft-loss plain` (the default) builds TRL's SFTTrainer exactly as before; the pear-* losses build
PearSFTTrainer (a subclass overriding compute_loss). Importing this module imports neither torch nor
TRL until PearSFTTrainer or a tensor function is used.
"""
import dataclasses
import hashlib
import time
from dataclasses import dataclass

LOSSES = ("plain", "pear-token", "pear-block", "pear-seq")
DEFAULTS = dict(block_size=16, reduce="mean", discount=0.0, clip=(0.2, 5.0), normalise="step",
                behaviour="initial", collect_batch_size=8)


def add_arguments(parser):
    parser.add_argument("--sft-loss", choices=LOSSES, default="plain",
                        help="plain SFT (default), or the SFT loss reweighted by PEAR importance ratios per token, "
                             "per block of tokens or per sequence")
    parser.add_argument("--pear-block-size", type=int, default=DEFAULTS["block_size"],
                        help="completion tokens per block (pear-block)")
    parser.add_argument("--pear-reduce", choices=("mean", "sum"), default=DEFAULTS["reduce"],
                        help="log-ratios of a block, suffix or sequence combined by their mean (a geometric mean of "
                             "the ratios, default) or their sum (the product)")
    parser.add_argument("--pear-discount", type=float, default=DEFAULTS["discount"],
                        help="0 (default): a token's or block's own ratio; g in (0, 1]: the discounted ratio of it "
                             "and everything after it (pear-token, pear-block)")
    parser.add_argument("--pear-clip", type=float, nargs=2, default=list(DEFAULTS["clip"]), metavar=("LO", "HI"),
                        help="clip each weight to [LO, HI] before normalising")
    parser.add_argument("--pear-normalise", choices=("step", "micro-batch"), default=DEFAULTS["normalise"],
                        help="weights averaging 1 over the optimizer step's tokens (default; one extra forward "
                             "without gradient per micro-batch) or over each micro-batch's")
    parser.add_argument("--pear-behaviour", choices=("initial", "deterministic"), default=DEFAULTS["behaviour"],
                        help="the behaviour policy: the initial model, its log-probabilities collected once before "
                             "SFT (default), or a deterministic generator (log-probability 0 on every data token)")
    parser.add_argument("--pear-collect-batch", type=int, default=DEFAULTS["collect_batch_size"],
                        help="sequences per forward when collecting the behaviour log-probabilities")


def check_arguments(parser, args):
    """parser.error() on settings that cannot run."""
    low, high = args.pear_clip
    if args.pear_block_size < 1 or args.pear_collect_batch < 1:
        parser.error("--pear-block-size and --pear-collect-batch must be >= 1")
    if not 0.0 <= args.pear_discount <= 1.0:
        parser.error(f"--pear-discount must be in [0, 1], got {args.pear_discount}")
    if not 0.0 <= low <= high or high <= 0.0:
        parser.error(f"--pear-clip wants 0 <= LO <= HI and HI > 0, got {low} {high}")


def argv(args):
    """The PEAR flags of `args` as command-line arguments (none for plain SFT)."""
    if args.sft_loss == "plain":
        return []
    return ["--sft-loss", args.sft_loss, "--pear-block-size", str(args.pear_block_size), "--pear-reduce",
            args.pear_reduce, "--pear-discount", str(args.pear_discount), "--pear-clip",
            *(str(v) for v in args.pear_clip), "--pear-normalise", args.pear_normalise, "--pear-behaviour",
            args.pear_behaviour, "--pear-collect-batch", str(args.pear_collect_batch)]


@dataclass(frozen=True)
class Settings:
    loss: str
    block_size: int = DEFAULTS["block_size"]
    reduce: str = DEFAULTS["reduce"]
    discount: float = DEFAULTS["discount"]
    clip: tuple = DEFAULTS["clip"]
    normalise: str = DEFAULTS["normalise"]
    behaviour: str = DEFAULTS["behaviour"]
    collect_batch_size: int = DEFAULTS["collect_batch_size"]

    @classmethod
    def from_args(cls, args):
        return cls(args.sft_loss, args.pear_block_size, args.pear_reduce, args.pear_discount, tuple(args.pear_clip),
                   args.pear_normalise, args.pear_behaviour, args.pear_collect_batch)


# ---- the weights (tensors of shape (batch, positions); `mask` marks the completion tokens) ----------------

def _suffix(values, valid, discount, reduce):
    """Per row, over its valid entries in order: sum_{s>=t} g^(s-t) v_s, divided by sum_{s>=t} g^(s-t) for
    `mean`; 0 where not valid. A loop over each row's entries (the weights carry no gradient)."""
    import torch
    out = torch.zeros_like(values, dtype=torch.float64)
    for row in range(values.shape[0]):
        index = valid[row].nonzero().flatten().tolist()
        if not index:
            continue
        items = values[row, index].double().tolist()
        acc, norm, result = 0.0, 0.0, []
        for value in reversed(items):
            acc, norm = value + discount * acc, 1.0 + discount * norm
            result.append(acc / norm if reduce == "mean" else acc)
        out[row, index] = torch.tensor(result[::-1], dtype=torch.float64, device=out.device)
    return out.to(values.dtype)


def log_weights(log_ratio, mask, loss, block_size=DEFAULTS["block_size"], reduce=DEFAULTS["reduce"],
                discount=DEFAULTS["discount"]):
    """The log-weight a_t of every completion token (0 elsewhere) from the per-token log-ratios r_t."""
    import torch
    mask = mask.bool()
    r = torch.where(mask, log_ratio.detach().float(), 0.0)
    m = mask.float()
    if loss == "pear-token":
        return r if discount == 0 else _suffix(r, mask, discount, reduce)
    if loss == "pear-seq":
        total = r.sum(1, keepdim=True)
        if reduce == "mean":
            total = total / m.sum(1, keepdim=True).clamp(min=1)
        return total * m
    if loss == "pear-block":
        position = (mask.long().cumsum(1) - 1).clamp(min=0)   # index among the row's completion tokens
        blocks = int(position[mask].max()) // block_size + 1 if mask.any() else 1
        index = torch.where(mask, position // block_size, blocks)   # masked positions into a spare slot
        sums = torch.zeros(r.shape[0], blocks + 1, dtype=r.dtype, device=r.device).scatter_add_(1, index, r)
        counts = torch.zeros_like(sums).scatter_add_(1, index, m)
        values = sums / counts.clamp(min=1) if reduce == "mean" else sums
        if discount:
            valid = counts > 0
            valid[:, blocks] = False   # the spare slot is no block
            values = _suffix(values, valid, discount, reduce)
        return values.gather(1, index) * m
    raise ValueError(f"not a PEAR loss: {loss!r}")


def clipped_weights(log_w, mask, clip):
    """(clip(exp(a_t), lo, hi), 0 off the mask; statistics of the clipping)."""
    import torch
    low, high = clip
    mask = mask.bool()
    raw = torch.exp(log_w.float())
    weights = torch.where(mask, raw.clamp(min=low, max=high), 0.0)
    tokens = mask.sum().clamp(min=1)
    stats = {"clipped_low": float(((raw < low) & mask).sum() / tokens),
             "clipped_high": float(((raw > high) & mask).sum() / tokens)}
    return weights, stats


def normalise(weights, mask, total=None, count=None):
    """weights * count / total: the completion tokens' weights then average to 1 (total, count default to
    this batch's own sum of weights and number of completion tokens; a zero total leaves zeros)."""
    import torch
    total = weights.sum() if total is None else torch.as_tensor(total, dtype=weights.dtype, device=weights.device)
    count = mask.sum().to(weights.dtype) if count is None else torch.as_tensor(count, dtype=weights.dtype,
                                                                               device=weights.device)
    return torch.where(total > 0, weights * (count / total.clamp(min=torch.finfo(weights.dtype).tiny)), weights)


def pear_weights(policy_logps, behaviour_logps, mask, settings, total=None, count=None):
    """(normalised weights without gradient, statistics) of one batch; `total`/`count` normalise over a
    larger batch (the optimizer step's) when given."""
    import torch
    mask = mask.bool()
    with torch.no_grad():
        log_ratio = torch.where(mask, policy_logps.detach().float() - behaviour_logps.float(), 0.0)
        log_w = log_weights(log_ratio, mask, settings.loss, settings.block_size, settings.reduce, settings.discount)
        weights, stats = clipped_weights(log_w, mask, settings.clip)
        weights = normalise(weights, mask, total, count)
    tokens = mask.sum().clamp(min=1)
    stats["log_ratio_mean"] = float(log_ratio.sum() / tokens)
    stats["weight_max"] = float(weights.max()) if mask.any() else 0.0
    return weights, stats


# ---- the behaviour log-probabilities ------------------------------------------------------------------

def sequence_key(input_ids):
    """A key for one unpadded token sequence: its log-probabilities under a fixed policy depend on
    nothing else, so the table is indifferent to shuffling, padding and duplicates."""
    import numpy as np
    ids = input_ids.tolist() if hasattr(input_ids, "tolist") else list(input_ids)
    return hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=16).digest()


def collect_behaviour(model, dataset, collator, batch_size=8, device=None, bf16=False, rank=0, world=1):
    """{sequence_key: float32 log-probabilities of its completion tokens, in order} for this rank's share
    of the rows (rank, rank + world, ...), computed without gradient in eval mode with TRL's fused LM head
    (the forward SFTTrainer trains through)."""
    import contextlib
    import numpy as np
    import torch
    device = device or next(model.parameters()).device
    columns = dataset.select_columns(["input_ids", "labels"])
    indices = list(range(rank, len(columns), world))
    table = {}
    was_training = model.training
    model.eval()
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    try:
        for start in range(0, len(indices), batch_size):
            part = columns.select(indices[start:start + batch_size])
            examples = [{"input_ids": ids, "labels": labels} for ids, labels in zip(part["input_ids"], part["labels"])]
            batch = collator(examples)
            with torch.no_grad(), autocast:
                out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device),
                            labels=batch["labels"].to(device), use_cache=False, fused_lm_head=True)
            log_probs, mask = out.log_probs.float().cpu(), out.label_mask.cpu()
            for row in range(len(examples)):
                key = sequence_key(batch["input_ids"][row][batch["attention_mask"][row].bool()])
                table[key] = log_probs[row][mask[row]].numpy().astype(np.float32)
    finally:
        model.train(was_training)
    return table


def behaviour_for(table, input_ids, attention_mask, mask):
    """The behaviour log-probabilities laid out like the policy's (batch, positions): each row's table entry
    scattered over its completion positions."""
    import torch
    out = torch.zeros(mask.shape, dtype=torch.float32)
    ids, keep, mask = input_ids.cpu(), attention_mask.cpu().bool(), mask.cpu().bool()
    for row in range(ids.shape[0]):
        key = sequence_key(ids[row][keep[row]])
        if key not in table:
            raise KeyError("PEAR: a training sequence has no behaviour log-probabilities (collected before SFT "
                           "from the same prepared data set); was the data set changed after collection?")
        values = torch.from_numpy(table[key])
        if values.numel() != int(mask[row].sum()):
            raise ValueError(f"PEAR: {values.numel()} behaviour log-probabilities for {int(mask[row].sum())} "
                             "completion tokens")
        out[row, mask[row]] = values
    return out


# ---- the trainer ----------------------------------------------------------------------------------------

def _trainer_class():
    import torch
    import torch.distributed as dist
    from trl import SFTTrainer

    class PearSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer with each completion token's loss weighted by PEAR (see the module's doc)."""

        def __init__(self, *args, pear, **kwargs):
            if pear.loss not in LOSSES[1:]:
                raise ValueError(f"PearSFTTrainer runs the pear-* losses; {pear.loss!r} is TRL's SFTTrainer")
            super().__init__(*args, **kwargs)
            self.pear = pear
            self.behaviour = None
            self.pear_facts = {"settings": dataclasses.asdict(pear)}
            if pear.behaviour == "deterministic":
                self.pear_facts["behaviour_policy"] = "deterministic (log-probability 0 on every data token)"
            unsupported = [name for name, on in (
                ("packing", self.args.packing), ("padding_free", self.args.padding_free),
                (f"loss_type={self.args.loss_type}", self.args.loss_type != "nll"),
                ("label smoothing", self.args.label_smoothing_factor), ("compute_loss_func", self.compute_loss_func),
                ("a MoE aux loss", self.aux_loss_enabled)) if on]
            if unsupported:
                raise ValueError("PEAR is implemented for padded, unpacked NLL SFT only; not with "
                                 + ", ".join(unsupported))

        # -- the behaviour policy, once, before the first step
        def train(self, *args, **kwargs):
            if self.behaviour is None and self.pear.behaviour == "initial":
                self.behaviour = self.collect_behaviour()
            return super().train(*args, **kwargs)

        def collect_behaviour(self):
            started = time.time()
            self.model.to(self.args.device)  # where DeepSpeed or the Trainer puts it anyway
            table = collect_behaviour(self.model, self.train_dataset, self.data_collator, self.pear.collect_batch_size,
                                      self.args.device, bool(self.args.bf16), self.accelerator.process_index,
                                      self.accelerator.num_processes)
            if self.accelerator.num_processes > 1 and dist.is_available() and dist.is_initialized():
                shares = [None] * self.accelerator.num_processes
                dist.all_gather_object(shares, table)
                table = {key: value for share in shares for key, value in share.items()}
            tokens = sum(len(v) for v in table.values())
            self.pear_facts.update(
                behaviour_policy="initial model (the checkpoint SFT starts from)", behaviour_sequences=len(table),
                behaviour_tokens=tokens, collect_s=round(time.time() - started, 3),
                behaviour_logp_mean=float(sum(float(v.sum()) for v in table.values()) / max(tokens, 1)))
            return table

        def _behaviour(self, inputs, mask):
            if self.pear.behaviour == "deterministic":
                return torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
            return behaviour_for(self.behaviour, inputs["input_ids"], inputs["attention_mask"], mask).to(mask.device)

        def _record(self, stats):
            for name, value in stats.items():
                self._metrics["train"][f"pear/{name}"].append(value)

        # -- step normalisation: the weights of every micro-batch of the step, before its first backward
        def get_batch_samples(self, epoch_iterator, num_batches, device):
            batch_samples, num_items_in_batch = super().get_batch_samples(epoch_iterator, num_batches, device)
            if self.pear.normalise == "step" and batch_samples:
                self._attach_step_weights(batch_samples)
            return batch_samples, num_items_in_batch

        def _attach_step_weights(self, batch_samples):
            model = self.model_wrapped if self.model_wrapped is not None else self.model
            was_training = model.training
            model.eval()
            pieces = []
            try:
                with torch.no_grad():
                    for batch in batch_samples:
                        inputs = self._prepare_inputs({k: batch[k] for k in ("input_ids", "attention_mask", "labels")})
                        out = model(**inputs, use_cache=False, fused_lm_head=True)
                        mask = out.label_mask.bool()
                        log_ratio = torch.where(mask, out.log_probs.float() - self._behaviour(inputs, mask), 0.0)
                        log_w = log_weights(log_ratio, mask, self.pear.loss, self.pear.block_size, self.pear.reduce,
                                            self.pear.discount)
                        weights, stats = clipped_weights(log_w, mask, self.pear.clip)
                        stats["log_ratio_mean"] = float(log_ratio.sum() / mask.sum().clamp(min=1))
                        pieces.append((weights, mask, stats))
            finally:
                model.train(was_training)
            sums = torch.stack([sum(w.sum() for w, _, _ in pieces), sum(m.sum() for _, m, _ in pieces).float()])
            total, count = self.accelerator.gather(sums.to(self.args.device)).view(-1, 2).sum(0)
            for batch, (weights, mask, stats) in zip(batch_samples, pieces):
                batch["pear_weights"] = normalise(weights, mask, total, count)
                stats["weight_max"] = float(batch["pear_weights"].max()) if mask.any() else 0.0
                self._record(stats)

        # -- the loss: TRL's token mean, each token weighted
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop("pear_weights", None)
            if not self.model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs["use_cache"] = False
            outputs = model(**inputs, fused_lm_head=True)
            mask = outputs.label_mask.bool()
            if weights is None:  # micro-batch normalisation (or a direct call): from this forward's log-probs
                weights, stats = pear_weights(outputs.log_probs, self._behaviour(inputs, mask), mask, self.pear)
                self._record(stats)
            per_token_loss = -outputs.log_probs * weights.to(outputs.log_probs.dtype)
            num_tokens = outputs.label_mask.sum() if num_items_in_batch is None else num_items_in_batch
            loss = per_token_loss.sum() / torch.as_tensor(num_tokens).clamp(min=1)
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            # the metrics SFTTrainer logs
            num_valid = self.accelerator.gather_for_metrics(outputs.label_mask.sum()).sum()
            entropy_sum = self.accelerator.gather_for_metrics(outputs.entropy.detach().sum()).sum()
            num_correct = self.accelerator.gather_for_metrics(outputs.is_top1.sum()).sum()
            metrics = self._metrics["train"]
            metrics["entropy"].append((entropy_sum / num_valid).item() if num_valid > 0 else 0.0)
            metrics["mean_token_accuracy"].append((num_correct / num_valid).item() if num_valid > 0 else 0.0)
            self._total_train_tokens += self.accelerator.gather_for_metrics(
                inputs["attention_mask"].sum()).sum().item() // self._tp_size
            metrics["num_tokens"] = [self._total_train_tokens]
            if return_outputs:
                with torch.no_grad():
                    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
            return (loss, outputs) if return_outputs else loss

    return PearSFTTrainer


_CLASSES = {}


def __getattr__(name):  # PEP 562: `from .pear import PearSFTTrainer` imports TRL only then
    if name == "PearSFTTrainer":
        if name not in _CLASSES:
            _CLASSES[name] = _trainer_class()
        return _CLASSES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

