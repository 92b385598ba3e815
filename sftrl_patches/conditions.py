"""When a run is hit: each record's conditions as a predicate over one normalised run description.

A run description is a plain dict (see FIELDS); a missing key means "not known". Predicates answer
with three values (True, False, None for unknown), say which facts decided, and render the prose
the doctor shows as `when:`, so the text and the test are one thing.
"""
from ._version import parse

# field -> how a reviewer reads it. Values are normalised by the readers in sftrl_patches.run.
FIELDS = {
    "trainer": "the training loop",                     # openrlhf-sft, openrlhf-ppo, trl, transformers, llamafactory, deepspeed
    "zero_stage": "ZeRO stage",                         # 0-3
    "offload_optimizer": "offload_optimizer.device",    # none, cpu, nvme
    "gradient_accumulation_steps": "gradient_accumulation_steps",  # DeepSpeed's own counter
    "micro_batches_per_step": "micro-batches per optimizer step",  # backward() calls per step()
    "accumulation": "how the loop accumulates",          # engine, boundary, manual (see ACCUMULATION)
    "data_parallel_size": "data-parallel ranks",
    "precision": "precision",                           # fp32, fp16, bf16
    "grad_accum_dtype": "data_types.grad_accum_dtype",  # fp32, fp16, bf16 (DeepSpeed's default: the model's)
    "fp16_loss_scale": "fp16.loss_scale",               # "dynamic" (0, DeepSpeed's default) or the static scale
    "pipeline_parallel": "pipeline parallelism",
    "immediate_grad_update": "bf16.immediate_grad_update",
    "dynamic_batch": "dynamic batching",
    "critic": "a critic model",
    "multimodal": "a multimodal model",
    "loss_agg_mode": "loss aggregation mode",
    "tensor_parallel_size": "DeepSpeed tensor parallel size",
    "ring_attn_size": "ring attention size",
    "policy_loss_type": "policy loss type",
    "optimizer": "optimizer",                           # client (the trainer's own), deepspeed (an `optimizer` block)
    "fused_adam": "DeepSpeed's FusedAdam as the optimizer",  # its fp16 wrapper is FP16_Optimizer, not the unfused one
}

ACCUMULATION = {
    "engine": "DeepSpeed counts micro-batches (gradient_accumulation_steps)",
    "boundary": "several backward() per step(), the loop marks the boundary",
    "manual": "several backward() per step(), no boundary marked",
    "unmanaged": "managed_gradient_accumulation: false (0.19.4+): the caller's step() ends the step",
}


class Predicate:
    def evaluate(self, run):
        """(True | False | None, because: [str], missing: [field])."""
        raise NotImplementedError

    def fields(self):
        raise NotImplementedError

    def __and__(self, other):
        return All(self, other)

    def __or__(self, other):
        return Any(self, other)


class Fact(Predicate):
    """One comparison of a run field (or `version:DIST`) with a value."""

    OPS = {
        "==": lambda a, b: a == b,
        "!=": lambda a, b: a != b,
        ">": lambda a, b: a > b,
        ">=": lambda a, b: a >= b,
        "<": lambda a, b: a < b,
        "in": lambda a, b: a in b,
    }

    def __init__(self, field, op, value, text=None):
        if op not in self.OPS:
            raise ValueError(f"unknown operator {op!r}")
        self.field, self.op, self.value, self._text = field, op, value, text

    def fields(self):
        return [self.field]

    def _label(self):
        if self.field.startswith("version:"):
            return self.field.split(":", 1)[1]
        return FIELDS.get(self.field, self.field)

    def __str__(self):
        if self._text:
            return self._text
        label, value = self._label(), self.value
        if self.field == "zero_stage":
            if self.op == "in":
                return "ZeRO stage " + " or ".join(str(v) for v in value)
            return f"ZeRO stage {value}" if self.op == "==" else f"ZeRO stage {self.op} {value}"
        if isinstance(value, bool) and self.op == "==":
            return label if value else f"no {label}"
        if self.op == "==":
            return f"{label}={value}"
        if self.op == "in":
            return f"{label} in {', '.join(map(str, value))}"
        return f"{label} {self.op} {value}"

    def _current(self, run):
        if self.field.startswith("version:"):
            text = run.get("versions", {}).get(self.field.split(":", 1)[1])
            return parse(text) if text else None
        return run.get(self.field)

    def evaluate(self, run):
        current = self._current(run)
        if current is None:
            return None, [], [self.field]
        value = parse(self.value) if self.field.startswith("version:") else self.value
        try:
            holds = bool(self.OPS[self.op](current, value))
        except TypeError:  # a value of the wrong kind reads as not known, never as a crash
            return None, [], [self.field]
        shown = _show(current)
        source = run.get("sources", {}).get(self.field)
        source = f"; from {source}" if source else ""
        if holds:
            return True, [f"{self} (the run: {shown}{source})"], []
        if isinstance(current, bool):
            return False, [f"not {self} (the run: {shown}{source})"], []
        return False, [f"not {self}: the run has {self._label()} {shown}{source}"], []


def _show(value):
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


class _Group(Predicate):
    joiner = ""

    def __init__(self, *parts):
        self.parts = parts

    def fields(self):
        return [f for part in self.parts for f in part.fields()]

    def __str__(self):
        texts = []
        for part in self.parts:
            text = str(part)
            texts.append(f"({text})" if isinstance(part, _Group) and type(part) is not type(self) else text)
        return self.joiner.join(texts)


class All(_Group):
    joiner = ", "

    def evaluate(self, run):
        results = [part.evaluate(run) for part in self.parts]
        false = [r for r in results if r[0] is False]
        if false:
            return False, [b for r in false for b in r[1]], []
        because = [b for r in results if r[0] for b in r[1]]
        missing = list(dict.fromkeys(m for r in results if r[0] is None for m in r[2]))
        return (None if missing else True), because, missing


class Any(_Group):
    joiner = " or "

    def evaluate(self, run):
        results = [part.evaluate(run) for part in self.parts]
        true = [r for r in results if r[0]]
        if true:
            return True, true[0][1], []
        missing = list(dict.fromkeys(m for r in results if r[0] is None for m in r[2]))
        because = [b for r in results if r[0] is False for b in r[1]]
        return (None if missing else False), because, missing


def several_micro_batches():
    return Fact("micro_batches_per_step", ">", 1, "more than one micro-batch per optimizer step")


def several_ranks():
    return Fact("data_parallel_size", ">", 1, "more than one data-parallel rank")
