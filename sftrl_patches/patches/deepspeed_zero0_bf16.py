"""DeepSpeed ZeRO stage 0 + bf16 with a client optimizer: FP16_UnfusedOptimizer, wrong updates (#7837).

Found by the configuration sweep (benchmarks/deepspeed_sweep.py), not by a report: without ZeRO the engine
wraps the client optimizer (the HF Trainer's, TRL's, Llama-Factory's) in FP16_UnfusedOptimizer for bf16. Its
dynamic loss scale starts at 2**16 and is never applied to the loss, yet its step divides the gradients by it,
so every update is about 1/65536 of the intended one (0.18.2-0.18.5); earlier releases of the window carry
earlier steps' gradients into later updates instead. Before the window the engine built BF16_Optimizer, right.
Fixed by PR #7839 ("Fix bf16 gradient norm divergence with ZeRO stage 0"), first in 0.18.6; upstream issue #7837.

Llama-Factory ships exactly this configuration as examples/deepspeed/ds_z0_config.json (bf16 "auto", stage 0),
and its 0.9.5 release caps DeepSpeed at 0.18.4.

No patch (yet): the wrapper is chosen and built inside DeepSpeedEngine._configure_optimizer; a fix would have to
be proven over several steps on every release of the window, which the sweep makes possible.
"""
from .._version import VersionRange
from ..conditions import All, Fact
from ..registry import Patch

FIXED_IN = "0.18.6"
FIRST_AFFECTED = "0.17.0"  # benchmarks/results/deepspeed_sweep.md: the first release the sweep finds wrong

ZERO0_BF16 = Patch(
    name="deepspeed-zero0-bf16-unfused-7837",
    title="ZeRO stage 0 + bf16: the client optimizer is wrapped in FP16_UnfusedOptimizer, whose loss scale is never "
          "applied (updates / 65536, or earlier steps carried into later ones)",
    distribution="deepspeed",
    affected=VersionRange(FIRST_AFFECTED, FIXED_IN),
    fixed_in=FIXED_IN,
    when=All(Fact("zero_stage", "==", 0), Fact("precision", "==", "bf16")),
    impact="every optimizer step is wrong from the start of training: about 1/65536 of the intended update on "
           "0.18.2-0.18.5, earlier steps' gradients carried into later updates on the releases before",
    effect=("measured with the probe (one rank, 3 SGD steps, GA 1 and 4; benchmarks/results/deepspeed_sweep.md): on "
            "0.18.4 every micro-batch weighs 1.5e-5 in the first update where 1 is right; on 0.17.6 the first step is "
            "right and later ones carry earlier steps (residual 0.68); 0.16.4 builds BF16_Optimizer and 0.18.6 the "
            "fixed FP16_UnfusedOptimizer: every weight 1 within 0.005"),
    no_patch_reason="the optimizer wrapper is built inside DeepSpeedEngine._configure_optimizer; no patch proven yet",
    links=("https://github.com/deepspeedai/DeepSpeed/issues/7837", "https://github.com/deepspeedai/DeepSpeed/pull/7839"),
    remediation="upgrade to deepspeed>=0.18.6, or train with ZeRO stage 1 or 2 (Llama-Factory: ds_z2_config.json "
                "instead of ds_z0_config.json)",
    advisory=True,
)

ORDER = 55  # where its patches sit in the registry (application and doctor order)
PATCHES = (ZERO0_BF16,)
