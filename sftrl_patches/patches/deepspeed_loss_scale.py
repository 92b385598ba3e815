"""DeepSpeed 0.18.3 and later: the engine no longer scales the loss for its fp16 optimizer wrappers, which still
unscale, so every update is divided by the loss scale.

Up to 0.18.2, DeepSpeedEngine.backward handed the loss to the optimizer's own backward(), and the fp16 wrappers
(FP16_UnfusedOptimizer around a client optimizer, FP16_Optimizer around DeepSpeed's fused Adam) multiplied it by
their current loss scale there. From 0.18.3 the engine calls loss.backward() itself and scales only for ZeRO
optimizers (`scale_if_loss`) or torch autocast; the two wrappers are neither, yet their step still divides the
gradients by the scale. Found by the configuration sweep (benchmarks/deepspeed_sweep.py), not by a report.
Three configurations build one of them with a scale other than 1:

- ZeRO stage 0 + fp16 with a dynamic scale (DeepSpeed's default, 2**16 to start) or a static one other than 1:
  every release from 0.18.3, 0.19.8 included (no upstream fix known);
- ZeRO stage 0 + bf16, 0.18.3-0.18.5: the client optimizer is wrapped in FP16_UnfusedOptimizer, whose dynamic
  scale starts at 2**16 (#7837; PR #7839 builds the right wrapper from 0.18.6). Llama-Factory's stock
  ds_z0_config.json is this configuration, and Llama-Factory 0.9.5 caps DeepSpeed at 0.18.4;
- bf16 + ZeRO-1 + fp32 grad_accum_dtype without offload, 0.18.3-0.18.4: the engine picks FP16_UnfusedOptimizer
  instead of BF16_Optimizer (two module constants share the value "bf16"; PR #7788, 0.18.5).

The patch puts back what 0.18.2 did: when the engine's optimizer is one of the two wrappers (not a ZeRO optimizer,
no torch autocast scaler) and its current scale is not 1, DeepSpeedEngine.backward receives the loss times that
scale, and returns its result divided by it (the caller sees the loss it logged before). The step's overflow check
then sees real gradients and the dynamic scale moves as designed. Every other optimizer runs the original as it is.
"""
from .._version import VersionRange
from ..conditions import All, Any, Fact
from ..registry import Patch, Target

MODULE = "deepspeed.runtime.engine"
FP16_WRAPPERS = ("FP16_Optimizer", "FP16_UnfusedOptimizer")
VERIFIED_THROUGH = "0.19.8"


# For bf16, DeepSpeed wraps its own FusedAdam in FP16_Optimizer, whose scale is 1 there (the grids on 0.18.3-0.18.5:
# unpatched and patched cells equal); any other optimizer gets FP16_UnfusedOptimizer, whose scale starts at 2**16.
NOT_FUSED_ADAM = Fact("fused_adam", "==", False, "DeepSpeed's FusedAdam as the optimizer: no")


def is_fp16_wrapper(optimizer):
    """FP16_Optimizer or FP16_UnfusedOptimizer (or a subclass), by name: the patch never imports DeepSpeed."""
    return any(cls.__name__ in FP16_WRAPPERS for cls in type(optimizer).__mro__)


def unapplied_scale(engine, zero_optimizer_class=None):
    """The wrapper's current loss scale when the engine will not apply it itself, else None."""
    optimizer = getattr(engine, "optimizer", None)
    if not is_fp16_wrapper(optimizer):
        return None
    if zero_optimizer_class is not None and isinstance(optimizer, zero_optimizer_class):
        return None  # the engine scales for ZeRO optimizers itself
    if getattr(engine, "torch_autocast_z0_gradscaler", None):
        return None
    config = getattr(optimizer, "loss_scale_config", None)  # 0.18.6 moved the scale there
    scale = getattr(config, "cur_scale", None) if config is not None else getattr(optimizer, "cur_scale", None)
    if not isinstance(scale, (int, float)) or scale == 1:
        return None
    return scale


def wrap_backward(original):
    zero_optimizer_class = getattr(original, "__globals__", {}).get("ZeROOptimizer")

    def backward(self, loss, *args, **kwargs):
        scale = unapplied_scale(self, zero_optimizer_class)
        if scale is None or not hasattr(loss, "float"):
            return original(self, loss, *args, **kwargs)
        result = original(self, loss.float() * scale, *args, **kwargs)  # as 0.18.2's wrappers scaled: in fp32
        return (result / scale).to(loss.dtype) if hasattr(result, "to") else result
    return backward


LOSS_SCALE = Patch(
    name="deepspeed-loss-scale-unapplied",
    title="the fp16 optimizer wrappers (ZeRO-0 fp16; ZeRO-0 bf16 before 0.18.6; bf16 ZeRO-1 fp32 accumulation "
          "before 0.18.5) unscale a loss the engine never scaled: every update divided by the loss scale",
    distribution="deepspeed",
    affected=VersionRange("0.18.3", None),
    verified_through=VERIFIED_THROUGH,
    targets=(
        Target(MODULE, "DeepSpeedEngine", "backward", wrap_backward,
               fingerprints={"513d3d49cb4c0aa4": "0.18.3", "1d69674aa46c70b5": "0.18.4-0.19.3",
                             "d82d9fcf82a2d9f8": "0.19.4-0.19.5", "9ba876a409ceb5f3": "0.19.6-0.19.7",
                             "c1015e3815918b71": "0.19.8"},
               # Its backward() only raises ("Only train_batch() is accessible"); its schedule's backward pass calls
               # DeepSpeedEngine.backward through super(), which is the wrapper.
               harmless_overrides={"deepspeed.runtime.pipe.engine.PipelineEngine": "refuses backward(); its "
                                   "pipeline schedule reaches the wrapper through super().backward()"}),
        # Guards: the wrappers' step divides the gradients by their current scale (what the wrapper relies on).
        Target("deepspeed.runtime.fp16.unfused_optimizer", "FP16_UnfusedOptimizer", "unscale_and_clip_grads", None,
               fingerprints={"cc3a4dee8aaa8a33": "0.18.3-0.18.5", "0bd83f4bcdbf9747": "0.18.6-0.19.8"}),
        Target("deepspeed.runtime.fp16.fused_optimizer", "FP16_Optimizer", "unscale_and_clip_grads", None,
               fingerprints={"73a4a427dc3740d1": "0.18.3-0.18.5", "6d364d83be52a153": "0.18.6-0.19.8"}),
    ),
    when=Any(
        All(Fact("zero_stage", "==", 0), Fact("precision", "==", "fp16"),
            Fact("fp16_loss_scale", "!=", 1.0, "a loss scale other than 1 (dynamic, DeepSpeed's default)")),
        All(Fact("zero_stage", "==", 0), Fact("precision", "==", "bf16"), Fact("version:deepspeed", "<", "0.18.6"),
            NOT_FUSED_ADAM),
        All(Fact("zero_stage", "==", 1), Fact("precision", "==", "bf16"), Fact("grad_accum_dtype", "==", "fp32"),
            Fact("offload_optimizer", "==", "none", "no optimizer offload"), Fact("version:deepspeed", "<", "0.18.5"),
            NOT_FUSED_ADAM)),
    impact="every optimizer step is 1/(loss scale) of the intended update (1/65536 with DeepSpeed's defaults); "
           "with Adam, epsilon weighs that much more and gradient clipping stops acting",
    effect=("measured with the probe (one rank, GA 4, 3 SGD steps; benchmarks/results/deepspeed_sweep.md and "
            "deepspeed_grid.md): ZeRO-0 fp16 with a dynamic scale starting at 2**8, every micro-batch weighs 1/256 in "
            "the update where 1 is right, on every release 0.18.3-0.19.8 (up to 0.18.2 every weight 1); ZeRO-0 bf16 on "
            "0.18.3-0.18.5 and bf16 ZeRO-1 with fp32 accumulation on 0.18.3-0.18.4, 1.5e-5 (1/65536). With the patch, "
            "every weight 1 within the 16-bit tolerance on every release of the window"),
    links=("https://github.com/deepspeedai/DeepSpeed/issues/7837", "https://github.com/deepspeedai/DeepSpeed/pull/7839",
           "https://github.com/deepspeedai/DeepSpeed/pull/7788"),
    remediation="keep this package's patch on; or use ZeRO stage 1 or 2 (their optimizers scale the loss "
                "themselves); for bf16, deepspeed>=0.18.6; fp16.loss_scale 1 avoids the wrong scale but gives up "
                "overflow protection",
    advisory=True,
)

ORDER = 56  # where its patches sit in the registry (application and doctor order)
PATCHES = (LOSS_SCALE,)
