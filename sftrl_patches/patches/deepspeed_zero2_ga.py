"""DeepSpeed #7718: ZeRO-2 without offload and GA > 1 keeps only the last micro-batch (0.17.6-0.18.2).

The per-backward epilogue keeps a running sum of this rank's partition gradients in
`all_grad_tensors[i]`. From 0.17.6 it decides between "start a new sum" and "add to the sum" by
looking at `averaged_gradients[i]`, which stays None until the boundary, so every micro-step starts
a new sum and only the last survives. 0.18.3 looks at `all_grad_tensors[i]` instead.

The wrapper cannot add the missing addition afterwards: at the boundary the same call turns the
(already overwritten) sum into the flat partition the optimizer reads. So before calling the
original it sets `averaged_gradients[i]` to what steers the original into the branch 0.18.3 takes
(a placeholder when a sum is running, None when none is), and afterwards puts back every value the
original did not replace. The original body runs unchanged.
"""
from ..conditions import All, Any, Fact, several_micro_batches
from ..registry import Patch, Target
from .._version import VersionRange
from .deepspeed_offload import MODULE, OWNER

_ABSENT = object()


def _steer(optimizer):
    """Make the original's branch test agree with 0.18.3's; returns what to put back."""
    placed = []
    for i in range(len(optimizer.bit16_groups)):
        running_sum = optimizer.all_grad_tensors.get(i) is not None
        current = optimizer.averaged_gradients.get(i, _ABSENT)
        marked = current is not _ABSENT and current is not None
        if running_sum and not marked:
            placeholder = []  # any non-None value; the original replaces it at the boundary
        elif marked and not running_sum:
            placeholder = None  # a backward after a boundary, before step(): start a new sum (0.17.6 crashed here)
        else:
            continue
        optimizer.averaged_gradients[i] = placeholder
        placed.append((i, current, placeholder))
    return placed


def _put_back(optimizer, placed):
    for i, previous, placeholder in placed:
        if optimizer.averaged_gradients.get(i, _ABSENT) is not placeholder:
            continue  # the boundary replaced it with the real partition gradients
        if previous is _ABSENT:
            del optimizer.averaged_gradients[i]
        else:
            optimizer.averaged_gradients[i] = previous


def wrap_epilogue(original):
    def independent_gradient_partition_epilogue(self):
        if self.cpu_offload:  # the offload path keeps its sum elsewhere (see deepspeed_offload)
            return original(self)
        placed = _steer(self)
        try:
            return original(self)
        finally:
            _put_back(self, placed)
    return independent_gradient_partition_epilogue


# sftrl_patches._fingerprint over every release's sdist (benchmarks/source_shapes.py prints this table).
EPILOGUE_BROKEN = {
    "8feaf206a9e84954": "0.17.6-0.18.2",
}
EPILOGUE_CORRECT = {
    "b56c3f5863f11059": "0.15.0-0.17.4, before the regression",
    "68c8b2ddb1abeb8f": "0.17.5, before the regression",
    "c884daa99fe44258": "0.18.3-0.18.4",
    "605549a94975d85d": "0.18.5-0.19.4",
    "bc2b4cf9113ac7cd": "0.19.5-0.19.7",
    "2bccc4274d0c673a": "0.19.8",
}

ZERO2_GA_7718 = Patch(
    name="deepspeed-zero2-ga-7718",
    title="ZeRO-2 without offload + gradient accumulation keeps only the last micro-batch (DeepSpeed #7718)",
    distribution="deepspeed",
    affected=VersionRange("0.17.6", "0.18.3"),
    fixed_in="0.18.3",
    targets=(Target(MODULE, OWNER, "independent_gradient_partition_epilogue", wrap_epilogue,
                    EPILOGUE_BROKEN, EPILOGUE_CORRECT),),
    when=All(Fact("zero_stage", "==", 2), Fact("offload_optimizer", "==", "none", "no optimizer offload"),
             Any(Fact("gradient_accumulation_steps", ">", 1),
                 All(several_micro_batches(), Fact("accumulation", "==", "boundary",
                                                   "the loop marks the boundary")))),
    impact="the optimizer sees only the last of the {micro_batches_per_step} micro-batches of every step",
    links=("https://github.com/deepspeedai/DeepSpeed/issues/7718",
           "https://github.com/deepspeedai/DeepSpeed/pull/7665 (fix, 0.18.3)",
           "https://github.com/huggingface/trl/issues/4540"),
    effect=("measured with the probe, 3 SGD steps, on every release 0.15.1-0.19.8 "
            "(benchmarks/results/deepspeed_matrix.md, one rank) and on 0.17.6 with one and two gloo ranks, GA 2/4/8 "
            "(tests/test_deepspeed.py): ZeRO-2 without offload, GA 4 fp32 and GA 8 bf16, on 0.17.6-0.18.2 weights "
            "[0,...,0,1] at every step (parameters 0.09-0.16 off plain PyTorch); patched, every weight 1 and "
            "the fp32 parameters equal to plain PyTorch's; 0.15.1-0.17.5 and 0.18.3-0.19.8 are right"),
    remediation="Upgrade to deepspeed>=0.18.3, or keep `import sftrl_patches` active in every training process.",
)

ORDER = 20  # where its patches sit in the registry (application and doctor order)
PATCHES = (ZERO2_GA_7718,)
