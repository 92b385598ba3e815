"""DeepSpeed 0.18.5-0.18.9: BF16_Optimizer's last micro-batch is added after the all-reduce.

BF16_Optimizer (bf16 with ZeRO stage 1 and an fp32 `grad_accum_dtype`, or bf16 with pipeline
parallelism) keeps each step's gradient in an fp32 buffer: every backward, its
`backward_epilogue()` adds the bf16 gradients of that micro-batch into it. From 0.18.3 (PR #7665)
the engine's `_backward_epilogue` all-reduces first and calls the optimizer's epilogue after, so at
the boundary the buffer is averaged over ranks before the last micro-batch is added: each rank
then steps with its own, un-averaged last micro-batch. One rank is unaffected. Fixed upstream in
0.19.0 (PR #7985), which runs the BF16 epilogue before the all-reduce. 0.18.3 and 0.18.4 have the
same source but never build BF16_Optimizer (see deepspeed_bf16_selection), so only 0.18.5-0.18.9
are affected.

The wrapper does the same around the original: it runs the optimizer's epilogue first, then the
original body with that one call made a no-op for its duration (it would add the micro-batch a
second time). Nothing else changes; with `immediate_grad_update` (gradients added in hooks during
backward) or any other optimizer the original runs as it is.
"""
from .._version import VersionRange
from ..conditions import All, Any, Fact, several_ranks
from ..registry import Patch, Target

MODULE = "deepspeed.runtime.engine"
FIXED_IN = "0.19.0"


def _needs_reordering(optimizer):
    if type(optimizer).__name__ != "BF16_Optimizer":
        return False
    return not getattr(optimizer, "immediate_grad_update", False)


def _already_run(*args, **kwargs):
    return None




def wrap_backward_epilogue(original):
    def _backward_epilogue(self, *args, **kwargs):
        optimizer = getattr(self, "optimizer", None)
        if not _needs_reordering(optimizer) or "backward_epilogue" in vars(optimizer):
            return original(self, *args, **kwargs)
        optimizer.backward_epilogue()  # 0.19.0's order: the micro-batch into the fp32 buffer first
        optimizer.backward_epilogue = _already_run  # the original's own call, a no-op for this call
        try:
            return original(self, *args, **kwargs)
        finally:
            del optimizer.backward_epilogue  # the class's method again
    return _backward_epilogue


BF16_EPILOGUE = Patch(
    name="deepspeed-bf16-last-micro-batch-7985",
    title="BF16_Optimizer (bf16, ZeRO-1, fp32 grad_accum_dtype): the last micro-batch of a step is added after "
          "the all-reduce, never averaged over ranks",
    distribution="deepspeed",
    # The source has the bug from 0.18.3, but 0.18.3-0.18.4 never build BF16_Optimizer (PR #7788).
    affected=VersionRange("0.18.5", FIXED_IN),
    fixed_in=FIXED_IN,
    targets=(
        Target(MODULE, "DeepSpeedEngine", "_backward_epilogue", wrap_backward_epilogue,
               fingerprints={"d95cb966168d0912": "0.18.3-0.18.9"},
               fixed_fingerprints={"9aab288676684f9f": "0.19.0-0.19.2", "81be539b36a02329": "0.19.3-0.19.5",
                                   "0b80e2df413df9d8": "0.19.6-0.19.7", "ec597ad486bf7fe7": "0.19.8"}),
        # Guard: the epilogue adds the micro-batch's bf16 gradients into the fp32 buffer, once per call.
        Target("deepspeed.runtime.bf16_optimizer", "BF16_Optimizer", "backward_epilogue", None,
               fingerprints={"33853027a24698d0": "0.18.3-0.19.8"}),
    ),
    # DeepSpeed picks BF16_Optimizer for these two (engine._do_optimizer_sanity_check); any GA, 1 included.
    when=All(Fact("precision", "==", "bf16"),
             Any(All(Fact("zero_stage", "==", 1), Fact("grad_accum_dtype", "==", "fp32"),
                     Fact("offload_optimizer", "==", "none", "no optimizer offload")),
                 All(Fact("zero_stage", "==", 0), Fact("pipeline_parallel", "==", True))),
             several_ranks(), Fact("immediate_grad_update", "==", False)),
    impact="each of the {data_parallel_size} ranks steps its part of the parameters with its own, un-averaged "
           "last micro-batch",
    effect=("measured with the probe on two gloo ranks, 3 SGD steps (tests/test_deepspeed.py on 0.18.6 and 0.18.9; "
            "benchmarks/results/deepspeed_matrix_two_ranks.md on every release): on 0.18.5-0.18.9 "
            "each rank updates its part of the parameters with its own, un-averaged last micro-batch (GA 4: "
            "micro-batch weights 0.25-1.80 where 1 is right, 17-33% of the update unexplained; GA 1: the whole "
            "gradient, 51-55% unexplained); patched, every weight 1 within bf16's 0.005, the same numbers as upstream "
            "0.19.0. One rank is unaffected. 0.18.3-0.18.4 never build BF16_Optimizer for this configuration "
            "(FP16_UnfusedOptimizer, every update / 65536: deepspeed-loss-scale-unapplied), so this bug "
            "cannot occur there"),
    links=("https://github.com/deepspeedai/DeepSpeed/pull/7985", "https://github.com/deepspeedai/DeepSpeed/pull/7665"),
    remediation="upgrade to deepspeed>=0.19.0, or keep this package's patch on",
)

ORDER = 40  # where its patches sit in the registry (application and doctor order)
PATCHES = (BF16_EPILOGUE,)
