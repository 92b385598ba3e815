"""DeepSpeed ZeRO stage 0 + fp16 with a loss scale other than 1 (the default, dynamic): the loss is never scaled, yet
the step divides the gradients by the scale, so every update is 1/scale of the intended one.

Found by the full grid (benchmarks/deepspeed_sweep.py --grid), not by a report. From 0.18.3 the engine scales the
loss in backward() only for ZeRO optimizers (`isinstance(self.optimizer, ZeROOptimizer)`) or torch autocast; at
stage 0 fp16 runs FP16_UnfusedOptimizer (a client optimizer) or FP16_Optimizer (DeepSpeed's fused Adam), which
are neither, and whose step unscales by their current scale. Read in the source: up to 0.18.2 backward() handed
the loss to the fp16 optimizer's own backward(), which scaled it. The same mechanism as #7837 (bf16, whose
wrapper also holds a scale of 2**16), but fp16 is untouched by that fix (PR #7839, 0.18.6): wrong through 0.19.8.

With DeepSpeed's fp16 defaults the scale starts at 2**16: SGD-like optimizers barely move; Adam is nearly
invariant to a constant gradient scale, but its epsilon then weighs 2**16 times more, and gradient clipping
compares a norm 2**16 too small, so clipping stops acting.

No patch (yet): a fix scales the loss in DeepSpeedEngine.backward for these two wrappers, and would have to be
proven over several steps on every release of the window, fused and unfused.
"""
from .._version import VersionRange
from ..conditions import All, Fact
from ..registry import Patch

FIRST_AFFECTED = "0.18.3"  # benchmarks/results/deepspeed_sweep.md: right on 0.18.2, wrong from 0.18.3
VERIFIED_THROUGH = "0.19.8"

ZERO0_FP16_SCALE = Patch(
    name="deepspeed-zero0-fp16-loss-scale-unapplied",
    title="ZeRO stage 0 + fp16 with a dynamic (or any non-1) loss scale: the loss is never scaled but the step "
          "unscales, every update divided by the loss scale",
    distribution="deepspeed",
    affected=VersionRange(FIRST_AFFECTED, None),
    verified_through=VERIFIED_THROUGH,
    when=All(Fact("zero_stage", "==", 0), Fact("precision", "==", "fp16"),
             Fact("fp16_loss_scale", "!=", 1.0, "a loss scale other than 1 (dynamic, DeepSpeed's default)")),
    impact="every optimizer step is 1/(loss scale) of the intended update (1/65536 with DeepSpeed's fp16 defaults); "
           "with Adam, epsilon weighs that much more and gradient clipping stops acting",
    effect=("measured with the probe (one rank, GA 4, 3 SGD steps, a dynamic loss scale starting at 2**8; "
            "benchmarks/results/deepspeed_sweep.md and deepspeed_grid.md): on 0.18.3-0.19.8 every micro-batch weighs "
            "0.0039 (1/256) in the update where 1 is right, with DeepSpeed's GA, with several backward() per step "
            "(boundary or not) and unmanaged; up to 0.18.2 every weight 1. With a static scale of 1 every release "
            "is right"),
    no_patch_reason=("the loss is scaled in DeepSpeedEngine.backward only for ZeRO optimizers; a fix there has not "
                     "been proven on every release of the window yet"),
    links=("https://github.com/deepspeedai/DeepSpeed/issues/7837 (the same mechanism for bf16)",),
    remediation="use bf16, or ZeRO stage 1 or 2 (their optimizers scale the loss themselves); fp16.loss_scale 1 "
                "avoids the wrong scale but gives up overflow protection",
    advisory=True,
)

ORDER = 56  # where its patches sit in the registry (application and doctor order)
PATCHES = (ZERO0_FP16_SCALE,)
