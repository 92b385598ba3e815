"""DeepSpeed 0.17.6-0.18.5, ZeRO stage 0 + bf16 with a client optimizer: FP16_UnfusedOptimizer, whose gradients
are never zeroed, so every step carries all earlier steps' gradients (#7837).

Found by the configuration sweep (benchmarks/deepspeed_sweep.py), not by a report: without ZeRO the engine wraps
the client optimizer (the HF Trainer's, TRL's, Llama-Factory's) in FP16_UnfusedOptimizer for bf16. After the
optimizer step, DeepSpeedEngine._take_model_step zeroes the gradients for ZeRO, fp16 and amp, and for bf16 only
under ZeRO ("Temporary until bf16_optimizer and zero_optimizer are integrated"): BF16_Optimizer, which the engine
built up to 0.17.5, clears its own; FP16_UnfusedOptimizer does not. From 0.18.3 the same wrapper's loss scale is
also never applied (deepspeed-loss-scale-unapplied), which hides this fault behind a 1/65536 update; fix that one
alone and the carrying shows again. PR #7839 (0.18.6) zeroes the gradients through the optimizer for bf16 at any
stage. Upstream issue #7837. DeepSpeed's own FusedAdam (an `optimizer` block, OpenRLHF's) is wrapped in FP16_Optimizer
instead, whose step sets the gradients to None itself: not affected (the grids on 0.17.6 and 0.18.2-0.18.5: its
cells equal with and without the patches).

Llama-Factory ships exactly this configuration as examples/deepspeed/ds_z0_config.json (bf16 "auto", stage 0),
and its 0.9.5 release caps DeepSpeed at 0.18.4.

The patch does what 0.18.6 does, after the original step: when bf16 runs without ZeRO and the engine's optimizer
is one of the fp16 wrappers, it zeroes the gradients through the optimizer. Every other configuration runs the
original as it is.
"""
from .._version import VersionRange
from ..conditions import All, Fact
from ..registry import Patch, Target
from .deepspeed_loss_scale import NOT_FUSED_ADAM, is_fp16_wrapper

MODULE = "deepspeed.runtime.engine"
FIXED_IN = "0.18.6"
FIRST_AFFECTED = "0.17.6"  # benchmarks/results/deepspeed_sweep.md: right on 0.17.5, wrong from 0.17.6


def _leaves_gradients(engine):
    """True when the original step leaves the gradients of this engine's optimizer in place."""
    if not is_fp16_wrapper(getattr(engine, "optimizer", None)):
        return False
    return bool(engine.bfloat16_enabled()) and not engine.zero_optimization()


def wrap_take_model_step(original):
    def _take_model_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if _leaves_gradients(self):
            self.optimizer.zero_grad()  # 0.18.6's order: right after the step, before anything reads them
        return result
    return _take_model_step


ZERO0_BF16 = Patch(
    name="deepspeed-zero0-bf16-unfused-7837",
    title="ZeRO stage 0 + bf16: the client optimizer is wrapped in FP16_UnfusedOptimizer, whose gradients are never "
          "zeroed: every step carries all earlier steps' gradients",
    distribution="deepspeed",
    affected=VersionRange(FIRST_AFFECTED, FIXED_IN),
    fixed_in=FIXED_IN,
    targets=(
        # 0.15.2-0.17.5 share the first shape, but build BF16_Optimizer (which clears its own gradients)
        Target(MODULE, "DeepSpeedEngine", "_take_model_step", wrap_take_model_step,
               fingerprints={"bb22172bbc43ce5d": "0.17.6", "e8b6b72d325fc21f": "0.18.0-0.18.5"},
               fixed_fingerprints={"eade1e97452135c3": "0.18.6-0.19.3", "d58a7731de8f98d0": "0.19.4-0.19.6",
                                   "9cb826cb36739223": "0.19.7", "468476ce9cfed9c4": "0.19.8"}),
    ),
    # DeepSpeed's own FusedAdam gets FP16_Optimizer instead, whose step sets every gradient to None itself
    when=All(Fact("zero_stage", "==", 0), Fact("precision", "==", "bf16"), NOT_FUSED_ADAM),
    impact="every optimizer step after the first adds all earlier steps' gradients again",
    effect=("measured with the probe over every release 0.15.1-0.19.8 (one rank, GA 4, 3 SGD steps; "
            "benchmarks/results/deepspeed_sweep.md): on 0.17.6-0.18.2 the first step is right and later ones carry "
            "earlier steps (residual 0.68-0.72); on 0.18.3-0.18.5 the unapplied loss scale comes first (every "
            "micro-batch 1.5e-5, deepspeed-loss-scale-unapplied), and with that one patched the same carrying shows; "
            "up to 0.17.5 (BF16_Optimizer) and from 0.18.6 every weight 1 within 0.003. Patched (both records), every "
            "weight 1 within bf16's tolerance"),
    links=("https://github.com/deepspeedai/DeepSpeed/issues/7837", "https://github.com/deepspeedai/DeepSpeed/pull/7839"),
    remediation="upgrade to deepspeed>=0.18.6, or keep this package's patches on, or train with ZeRO stage 1 or 2 "
                "(Llama-Factory: ds_z2_config.json instead of ds_z0_config.json)",
    advisory=True,
)

ORDER = 55  # where its patches sit in the registry (application and doctor order)
PATCHES = (ZERO0_BF16,)
