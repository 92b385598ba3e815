"""DeepSpeed 0.19.x, ZeRO-1/2 + offload_optimizer=cpu, GA=1, several backward() per step, boundary
never set (manual accumulation, OpenRLHF's dynamic batching): the CPU accumulator is never reset.

With GA=1 every backward is a boundary. The first backward of a step (micro-step 0) goes straight
to the fp32 gradient buffer without being saved to the CPU accumulator, and every later backward
adds that accumulator, which still holds the sum of the previous steps. Measured on 0.19.8: step 1
drops the first backward; step k adds backwards 2..N of every earlier step.

The rule applied (the same as the documented way, `set_gradient_accumulation_boundary`, and as
0.16.5 and unmanaged accumulation give): one optimizer step's gradient is the sum of the backward
calls since the previous step(). The wrapper adds only the missing reset: at the second backward
of a step it starts each parameter's CPU accumulator from what the first backward left in the
fp32 gradient buffer (zero if the parameter had no gradient then); the original then adds and
writes back as it does for any later micro-step. The documented pattern (first backward not a
boundary) never reaches this code, and neither does the common single backward per step.
"""
from ..conditions import All, Any, Fact, several_micro_batches
from ..registry import Patch, Target
from .._version import VersionRange
from .deepspeed_offload import ASYNC_ACCUMULATE_CORRECT, COPY_GRADS_FIXED, MODULE, OWNER, _at_boundary, \
    _low_precision_master_weights


class _Window:
    """What this optimizer saw since the last step(): which parameters the first backward wrote."""

    def __init__(self):
        self.reset()

    def reset(self):
        self.first = set()      # param ids written by micro-step 0 (straight to the fp32 buffer)
        self.seeded = set()     # param ids whose CPU accumulator was reset in this window
        self.manual = False     # micro-step 0 was a boundary: GA=1 manual accumulation
        self.last_micro = -1
        self.synced = False

    def observe(self, param_id, micro_step):
        # step() resets the micro-step count; a parameter seen twice at micro-step 0 means the
        # same (a backward reduces each parameter once).
        if micro_step < self.last_micro or (micro_step == 0 and param_id in self.first):
            self.reset()
        self.last_micro = micro_step


def _seed_cpu_accumulator(optimizer, param, param_id, window):
    import torch
    from deepspeed.accelerator import get_accelerator
    group, source_offset, dest_offset, num_elements = optimizer.grad_position[param_id]
    accumulator = optimizer.accumulated_grads_in_cpu.get(param_id)
    if accumulator is None:
        accumulator = torch.zeros(param.numel(), dtype=param.dtype, device=optimizer.device)
        if getattr(optimizer, "cpu_offload_pin_memory", False):
            accumulator = get_accelerator().pin_memory(accumulator)
        optimizer.accumulated_grads_in_cpu[param_id] = accumulator
    else:
        accumulator.zero_()
    if param_id in window.first:
        if not window.synced:  # the first backward's copy into the fp32 buffer may still be in flight
            get_accelerator().synchronize()
            window.synced = True
        first = optimizer.single_partition_of_fp32_groups[group].grad.view(-1).narrow(0, dest_offset, num_elements)
        accumulator.view(-1).narrow(0, source_offset, num_elements).copy_(first)


def wrap_copy_grads_in_partition(original):
    def copy_grads_in_partition(self, param, *args, **kwargs):
        if self.cpu_offload and self.gradient_accumulation_steps == 1 and not _low_precision_master_weights(self):
            _before_copy(self, param, args, kwargs)
        return original(self, param, *args, **kwargs)
    return copy_grads_in_partition


def _before_copy(optimizer, param, args, kwargs):
    compact = getattr(optimizer, "_use_compact_grad_partition_buffer", None)
    if compact is not None:  # 0.19.8: fp32 accumulation of low-precision grads has its own path
        group_idx = args[0] if args else kwargs.get("group_idx")
        if group_idx is None:
            group_idx = optimizer._get_param_group_idx(param)
        if compact(group_idx):
            return
    window = optimizer.__dict__.setdefault("_sftrl_manual_window", _Window())
    param_id = optimizer.get_param_id(param)
    micro_step = optimizer.micro_step_id
    window.observe(param_id, micro_step)
    if micro_step == 0:
        window.first.add(param_id)
        window.manual = window.manual or _at_boundary(optimizer)
    elif window.manual and param_id not in window.seeded:
        _seed_cpu_accumulator(optimizer, param, param_id, window)
        window.seeded.add(param_id)


NO_BOUNDARY = Fact("accumulation", "==", "manual", "several engine.backward() calls before one step() without "
                   "set_gradient_accumulation_boundary")

# The sweep and the grid: on 0.19.8 bf16 or fp16 with fp32 grad_accum_dtype sums right (its compact fp32
# accumulation path; ZeRO-1 and ZeRO-2, with and without offload); 0.19.7 does not. Both records stand aside there.
NOT_COMPACT_FP32_ACCUMULATION = Any(
    Fact("version:deepspeed", "<", "0.19.8"), Fact("precision", "==", "fp32"),
    Fact("grad_accum_dtype", "!=", "fp32", "grad_accum_dtype other than fp32"))

MANUAL_ACCUMULATION_LEAK = Patch(
    name="deepspeed-offload-manual-accumulation",
    title="ZeRO-1/2 + offload_optimizer=cpu + GA=1 with several backward() per step and no boundary set: "
          "the first backward is lost and every earlier step leaks into the update",
    distribution="deepspeed",
    affected=VersionRange("0.19.0", None),
    verified_through="0.19.8",
    targets=(Target(MODULE, OWNER, "copy_grads_in_partition", wrap_copy_grads_in_partition, COPY_GRADS_FIXED),
             # relied on: at micro-steps after the first, add the CPU accumulator and write the sum back
             Target(MODULE, OWNER, "async_accumulate_grad_in_cpu_via_gpu", None, {
                 fp: shape for fp, shape in ASYNC_ACCUMULATE_CORRECT.items() if not shape.startswith("0.14")})),
    when=All(Fact("zero_stage", "in", (1, 2)), Fact("offload_optimizer", "==", "cpu"),
             Fact("gradient_accumulation_steps", "==", 1), several_micro_batches(), NO_BOUNDARY,
             NOT_COMPACT_FP32_ACCUMULATION),
    impact="the first optimizer step loses its first micro-batch, and every later step also carries the "
           "gradients of all earlier steps",
    links=("https://github.com/deepspeedai/DeepSpeed/pull/7981 (0.19.0, where the accumulation path began)",
           "https://github.com/OpenRLHF/OpenRLHF/issues/1131"),
    effect=("measured with the probe, one rank, 3 SGD steps, on every release 0.15.1-0.19.8 "
            "(benchmarks/results/deepspeed_matrix.md) and over 4 steps on 0.19.8 (tests/test_deepspeed.py): ZeRO-1 "
            "and ZeRO-2 with offload, GA=1, 4 backward() and no boundary, on 0.19.0-0.19.8 step 1 weights [0,1,1,1] "
            "and from step 2 on 69-74% of each update is no micro-batch of its step (parameters 0.07-0.17 off); "
            "patched, every step the sum of its own 4 backward calls, every weight 1. Before 0.19.0 the same calls "
            "keep the last backward only: deepspeed-manual-accumulation-last-only"),
    remediation="Mark every backward but the last with engine.set_gradient_accumulation_boundary(False), or set "
                "zero_optimization.managed_gradient_accumulation=false (0.19.5+), or keep `import sftrl_patches` "
                "active in every training process.",
)

MANUAL_ACCUMULATION_LAST_ONLY = Patch(
    name="deepspeed-manual-accumulation-last-only",
    title="ZeRO-1/2 + GA=1 with several backward() per step and no boundary set: only the last backward reaches "
          "the optimizer (without offload from 0.17.6; with offload before 0.19.0)",
    distribution="deepspeed",
    affected=VersionRange(None, None),
    verified_through="0.19.8",
    when=All(Fact("zero_stage", "in", (1, 2)), Fact("gradient_accumulation_steps", "==", 1),
             several_micro_batches(), NO_BOUNDARY,
             Any(All(Fact("offload_optimizer", "==", "none", "no optimizer offload"),
                     Fact("version:deepspeed", ">=", "0.17.6"),
                     # the sweep: bf16 + ZeRO-1 + fp32 grad_accum_dtype builds BF16_Optimizer (FP16_UnfusedOptimizer
                     # on 0.17.6-0.18.4), not ZeRO's, and sums every backward
                     Any(Fact("zero_stage", "!=", 1), Fact("precision", "!=", "bf16"),
                         Fact("grad_accum_dtype", "!=", "fp32", "grad_accum_dtype other than fp32")),
                     NOT_COMPACT_FP32_ACCUMULATION),
                 All(Fact("offload_optimizer", "==", "cpu"), Fact("version:deepspeed", "<", "0.19.0")))),
    impact="only the last of the {micro_batches_per_step} backward calls of every step reaches the optimizer "
           "(0.17.6-0.18.2 without offload: a TypeError in the second backward)",
    no_patch_reason=(
        "every backward() is a boundary, and each boundary makes that backward the step's gradient. Measured on CPU "
        "over 3 optimizer steps (benchmarks/results/deepspeed_matrix.md, probe mode no_boundary), ZeRO-1 and "
        "ZeRO-2: without offload 0.15.1-0.17.5 sum correctly, 0.17.6-0.18.2 raise TypeError in the epilogue "
        "(OpenRLHF #1131's crash; [0,0,0,1] with this package's #7718 patch), 0.18.3-0.19.8 weights [0,0,0,1]; "
        "with offload every release before 0.19.0 weights [0,0,0,1] (0.19.x: see "
        "deepspeed-offload-manual-accumulation). Not patched: the caller's fix is one call per backward (for "
        "OpenRLHF's dynamic batching, this package makes that call: openrlhf-dynamic-batch-zero12)"),
    links=("https://github.com/OpenRLHF/OpenRLHF/issues/1131", "https://github.com/allenai/open-instruct/pull/1498"),
    remediation="Call engine.set_gradient_accumulation_boundary(False) before every backward but the last of a step "
                "(or use unmanaged accumulation, 0.19.4+).",
    advisory=True,
)

ORDER = 30  # where its patches sit in the registry (application and doctor order)
PATCHES = (MANUAL_ACCUMULATION_LEAK, MANUAL_ACCUMULATION_LAST_ONLY)
