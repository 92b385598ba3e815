"""DeepSpeed ZeRO stage 0 + bf16 with a client optimizer: FP16_UnfusedOptimizer, wrong updates (#7837).

Found by the configuration sweep (benchmarks/deepspeed_sweep.py), not by a report: without ZeRO the engine
wraps the client optimizer (the HF Trainer's, TRL's, Llama-Factory's) in FP16_UnfusedOptimizer for bf16. Its
dynamic loss scale starts at 2**16 and is never applied to the loss, yet its step divides the gradients by it,
so every update is 1/65536 of the intended one on 0.18.3-0.18.5; 0.17.6-0.18.2 carry earlier steps' gradients into
later updates instead. Up to 0.17.5 the engine built BF16_Optimizer, right (the sweep, every release 0.15.1-0.19.8).
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
FIRST_AFFECTED = "0.17.6"  # benchmarks/results/deepspeed_sweep.md: right on 0.17.5, wrong from 0.17.6

ZERO0_BF16 = Patch(
    name="deepspeed-zero0-bf16-unfused-7837",
    title="ZeRO stage 0 + bf16: the client optimizer is wrapped in FP16_UnfusedOptimizer, whose loss scale is never "
          "applied (updates / 65536, or earlier steps carried into later ones)",
    distribution="deepspeed",
    affected=VersionRange(FIRST_AFFECTED, FIXED_IN),
    fixed_in=FIXED_IN,
    when=All(Fact("zero_stage", "==", 0), Fact("precision", "==", "bf16")),
    impact="every optimizer step is wrong from the start of training: 1/65536 of the intended update "
           "(0.18.3-0.18.5), or earlier steps' gradients carried into later updates (0.17.6-0.18.2)",
    effect=("measured with the probe over every release 0.15.1-0.19.8 (one rank, GA 4, 3 SGD steps; "
            "benchmarks/results/deepspeed_sweep.md): 0.18.3-0.18.5 every micro-batch weighs 1.5e-5 in the update where "
            "1 is right; 0.17.6-0.18.2 the first step is right and later ones carry earlier steps (residual 0.68-0.72); "
            "up to 0.17.5 (BF16_Optimizer) and from 0.18.6 every weight 1 within 0.003"),
    no_patch_reason="the optimizer wrapper is built inside DeepSpeedEngine._configure_optimizer; no patch proven yet",
    links=("https://github.com/deepspeedai/DeepSpeed/issues/7837", "https://github.com/deepspeedai/DeepSpeed/pull/7839"),
    remediation="upgrade to deepspeed>=0.18.6, or train with ZeRO stage 1 or 2 (Llama-Factory: ds_z2_config.json "
                "instead of ds_z0_config.json)",
    advisory=True,
)

ORDER = 55  # where its patches sit in the registry (application and doctor order)
PATCHES = (ZERO0_BF16,)
