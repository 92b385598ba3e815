"""DeepSpeed ZeRO-1/2 with the optimizer offloaded to CPU loses micro-batches (FACTS.md, bugs 1 and 1b).

Both wrappers call the original method and add only the step it misses, using the rule that held
before the regression (0.15.1): on every micro-step that is not the accumulation boundary, write
the running gradient sum back to the CPU accumulator. Upstream 0.19.0 instead copies on every
micro-step, which is wrong for ZeRO-1 on 0.15.2-0.16.4 (they count micro-steps differently).
"""
from ..conditions import All, Fact, several_micro_batches
from ..registry import Patch, Target
from .._version import VersionRange

MODULE = "deepspeed.runtime.zero.stage_1_and_2"
OWNER = "DeepSpeedZeroOptimizer"


def _low_precision_master_weights(optimizer):
    # Renamed in 0.18.3; both names mean "the CPU accumulator is a slice of the master grads".
    for name in ("low_precision_master_weights_and_grads", "fp16_master_weights_and_gradients"):
        if hasattr(optimizer, name):
            return bool(getattr(optimizer, name))
    raise AttributeError("DeepSpeedZeroOptimizer has neither low_precision_master_weights_and_grads "
                         "nor fp16_master_weights_and_gradients")


def _at_boundary(optimizer):
    # An attribute in every affected release; a method from 0.19.4 on.
    boundary = optimizer.is_gradient_accumulation_boundary
    return bool(boundary() if callable(boundary) else boundary)


def _write_running_sum_to_cpu(optimizer, param):
    """The write-back that 0.15.2-0.18.9 skip on micro-steps after the first."""
    param_id = optimizer.get_param_id(param)
    _, source_offset, _, num_elements = optimizer.grad_position[param_id]
    running_sum = optimizer.get_param_gradient_attribute(param).data.view(-1)
    if _low_precision_master_weights(optimizer):
        running_sum = running_sum.narrow(0, source_offset, num_elements)
    optimizer.accumulated_grads_in_cpu[param_id].data.copy_(running_sum, non_blocking=True)


def wrap_async_accumulate(original):
    def async_accumulate_grad_in_cpu_via_gpu(self, param):
        original(self, param)
        if self.micro_step_id > 0 and not _at_boundary(self):
            _write_running_sum_to_cpu(self, param)
    return async_accumulate_grad_in_cpu_via_gpu


def wrap_copy_grads_in_partition(original):
    def copy_grads_in_partition(self, param):
        # With GA=1 upstream never accumulates on CPU, so every backward() before the boundary
        # is overwritten by the next. Accumulate whenever a step holds several backward() calls.
        # ZeRO-1 only reduces at the boundary and is measured correct: leave it to the original.
        if (self.cpu_offload and self.partition_gradients and self.gradient_accumulation_steps == 1
                and (self.micro_step_id > 0 or not _at_boundary(self))):
            self.async_accumulate_grad_in_cpu_via_gpu(param)
        return original(self, param)
    return copy_grads_in_partition


# Fingerprints from sftrl_patches._fingerprint over every release's sdist
# (benchmarks/source_shapes.py prints this table).
ASYNC_ACCUMULATE_BROKEN = {
    "6ecd55473bac1c84": "0.15.2-0.18.2 (fp16_master_weights_and_gradients)",
    "4e05e6ddcafbd849": "0.18.3-0.18.9 (low_precision_master_weights_and_grads)",
}
ASYNC_ACCUMULATE_CORRECT = {
    "7c6ea8110ea94fd1": "0.14.0-0.15.1, before the regression",
    "4868e9aaf099e268": "0.19.0-0.19.7",
    "1a9e8f5caed39499": "0.19.8",
}
COPY_GRADS_BROKEN = {
    "cf096042964c4639": "0.14.0-0.17.0",
    "bd4aa52ec55c8279": "0.17.1-0.18.9",
}
COPY_GRADS_FIXED = {
    "7a1e27d70e62a0d2": "0.19.0-0.19.4",
    "e053a6826263456f": "0.19.5-0.19.7",
    "b976991c0708bfb7": "0.19.8",
}

OFFLOAD_GA_DROP = Patch(
    name="deepspeed-offload-ga-drop",
    title="ZeRO-2 + offload_optimizer=cpu + gradient accumulation keeps only the first and last micro-batch",
    distribution="deepspeed",
    affected=VersionRange("0.15.2", "0.19.0"),
    fixed_in="0.19.0",
    targets=(Target(MODULE, OWNER, "async_accumulate_grad_in_cpu_via_gpu", wrap_async_accumulate,
                    ASYNC_ACCUMULATE_BROKEN, ASYNC_ACCUMULATE_CORRECT),),
    # ZeRO-1 runs the same method and measured unaffected.
    when=All(Fact("zero_stage", "==", 2), Fact("offload_optimizer", "==", "cpu"),
             Fact("gradient_accumulation_steps", ">", 2)),
    impact="the optimizer sees micro-batches 1 and {gradient_accumulation_steps} of every "
           "{gradient_accumulation_steps}; the ones between are dropped",
    links=("https://github.com/deepspeedai/DeepSpeed/pull/6550 (regression, 0.15.2)",
           "https://github.com/deepspeedai/DeepSpeed/pull/7967 (fix, 0.19.0)"),
    effect=("measured with the probe, one rank, 3 SGD steps, on every release 0.15.1-0.19.8 "
            "(benchmarks/results/deepspeed_matrix.md): ZeRO-2 with offload, GA 4 and 8, fp32 and bf16, on "
            "0.15.2-0.18.9 weights [1,0,0,1] and [1,0,...,0,1] at every step (fp32 parameters 0.07-0.13 off plain "
            "PyTorch after each step); patched, every weight 1 and fp32 parameters equal to plain PyTorch's. ZeRO-1 "
            "is right in every release; 0.15.1 and 0.19.x are right"),
    remediation="Upgrade to deepspeed>=0.19.0, or keep `import sftrl_patches` active in every training process.",
)

OFFLOAD_MULTI_BACKWARD = Patch(
    name="deepspeed-offload-multi-backward",
    title="ZeRO-2 + offload_optimizer=cpu + GA=1 with several backward() per step keeps only the last one",
    distribution="deepspeed",
    affected=VersionRange(None, "0.19.0"),
    fixed_in="0.19.0",
    targets=(Target(MODULE, OWNER, "copy_grads_in_partition", wrap_copy_grads_in_partition,
                    COPY_GRADS_BROKEN, COPY_GRADS_FIXED),),
    when=All(Fact("zero_stage", "==", 2), Fact("offload_optimizer", "==", "cpu"),
             Fact("gradient_accumulation_steps", "==", 1), several_micro_batches(),
             Fact("accumulation", "==", "boundary", "the loop marks the boundary with "
                  "set_gradient_accumulation_boundary")),
    impact="the optimizer sees only the last of the {micro_batches_per_step} micro-batches of every step",
    links=("https://github.com/deepspeedai/DeepSpeed/pull/7981 (fix, 0.19.0)",),
    effect=("measured with the probe, one rank, 3 SGD steps, on every release 0.15.1-0.19.8 "
            "(benchmarks/results/deepspeed_matrix.md): ZeRO-2 with offload, GA=1, 4 backward() with the boundary "
            "set, on 0.15.1-0.18.9 weights [0,0,0,1] at every step (fp32 parameters 0.13-0.15 off); patched, "
            "every weight 1 and the parameters equal to plain PyTorch's; 0.19.x are right"),
    remediation="Upgrade to deepspeed>=0.19.0, or keep `import sftrl_patches` active in every training process.",
    # On 0.15.2-0.18.9 the accumulation this patch adds goes through the method the first patch fixes.
    requires=("deepspeed-offload-ga-drop",),
)

ORDER = 10  # where its patches sit in the registry (application and doctor order)
PATCHES = (OFFLOAD_GA_DROP, OFFLOAD_MULTI_BACKWARD)
