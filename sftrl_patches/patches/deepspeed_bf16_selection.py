"""DeepSpeed 0.18.3-0.18.4: bf16 + ZeRO-1 + fp32 grad_accum_dtype gets FP16_UnfusedOptimizer, and every
update is divided by 65536.

The engine decides which optimizer wrapper to build by name, and in these two releases the names of
BF16_Optimizer's case (BFLOAT16) and the DDP bf16 case (DDP_BFLOAT16) are the same string, "bf16". The
DDP branch is tested first, so the configuration that asks for BF16_Optimizer gets the fp16 wrapper:
with a client optimizer (no `optimizer` block: what the HF Trainer, TRL and accelerate hand over) that
is FP16_UnfusedOptimizer, whose dynamic loss scale starts at 2**16. The engine does not scale the loss
for it (it scales only for ZeRO optimizers), yet its step divides the gradients by the scale. Fixed in
0.18.5 (PR #7788 gives the DDP case its own name). Read in the source, not measured: a DeepSpeed
`optimizer` block on a GPU gives FusedAdam and the fused FP16_Optimizer, whose scale is 1 for bf16.

No patch: the choice is made inside DeepSpeedEngine._configure_optimizer from module constants, and
correcting it would also need the BF16_Optimizer attributes that PR #7788 adds in the same change.
"""
from .._version import VersionRange
from ..conditions import All, Fact
from ..registry import Patch

FIXED_IN = "0.18.5"

BF16_SELECTION = Patch(
    name="deepspeed-bf16-unfused-65536-7788",
    title="bf16 + ZeRO-1 + fp32 grad_accum_dtype with a client optimizer: FP16_UnfusedOptimizer instead of "
          "BF16_Optimizer, every update divided by 65536",
    distribution="deepspeed",
    affected=VersionRange("0.18.3", FIXED_IN),
    fixed_in=FIXED_IN,
    when=All(Fact("precision", "==", "bf16"), Fact("zero_stage", "==", 1), Fact("grad_accum_dtype", "==", "fp32"),
             Fact("offload_optimizer", "==", "none", "no optimizer offload")),
    impact="with a client optimizer (the HF Trainer's AdamW, SGD, ...), every optimizer step moves the weights by "
           "1/65536 of the intended update",
    effect=("measured with the probe (one rank, 3 SGD steps, GA 1 and 4; tests/test_deepspeed.py): on 0.18.3 and "
            "0.18.4 the engine runs FP16_UnfusedOptimizer and every micro-batch weighs 1.5e-5 (1/65536) in the update "
            "where 1 is right; 0.18.5 builds BF16_Optimizer, every weight 1 within 0.002; 0.18.4 without grad_accum_dtype "
            "builds DeepSpeedZeroOptimizer, every weight 1 within 0.003"),
    no_patch_reason=("the engine picks the optimizer wrapper from two module constants that share one value; fixing "
                     "that would also need the BF16_Optimizer attributes PR #7788 adds with it"),
    links=("https://github.com/deepspeedai/DeepSpeed/pull/7788", "https://github.com/deepspeedai/DeepSpeed/pull/7839"),
    remediation="upgrade to deepspeed>=0.18.5, or leave data_types.grad_accum_dtype unset (ZeRO-1's own optimizer "
                "then, which accumulates in bf16)",
    advisory=True,
)

ORDER = 50  # where its patches sit in the registry (application and doctor order)
PATCHES = (BF16_SELECTION,)
