"""Llama-Factory's multimodal SFT: a mean of per-micro-batch (and per-rank) means (FACTS.md).

Since 0.9.3 (#7448, for transformers 4.49's VLM losses) its SFT and pre-training trainers set
`model_accepts_loss_kwargs = False` whenever a processor is loaded, i.e. for multimodal models, so
transformers no longer hands the model the step's token count: each micro-batch's loss is its own
token mean, divided by GA, and ranks are averaged. Text-only SFT keeps transformers' token mean.
A documented bug with no patch: a fix would have to be proven on a multimodal model run through
Llama-Factory's own trainer, which this package has not done.
"""
from .._version import VersionRange
from ..conditions import All, Any, Fact, several_micro_batches, several_ranks
from ..registry import Patch

MULTIMODAL_LOSS = Patch(
    name="llamafactory-multimodal-loss-7448",
    title="Llama-Factory multimodal SFT: the loss is a mean of per-micro-batch (and per-rank) means",
    distribution="llamafactory",
    affected=VersionRange("0.9.3", None),
    verified_through="0.9.5",
    when=All(Fact("trainer", "==", "llamafactory", "Llama-Factory's trainer"),
             Fact("multimodal", "==", True, "a multimodal model (Llama-Factory loads its processor)"),
             Any(several_micro_batches(), several_ranks())),
    impact=("the step's loss is a mean of {micro_batches_per_step} micro-batch means on each of "
            "{data_parallel_size} data-parallel ranks: a token in a short sample weighs more than one in a long one"),
    no_patch_reason=("every release from 0.9.3 (PR #7448) through 0.9.5 and main (2026-08) sets "
                     "model_accepts_loss_kwargs=False for models with a processor; not patched here"),
    links=("https://github.com/hiyouga/LLaMA-Factory/pull/7448",
           "https://github.com/huggingface/transformers/pull/36044"),
    remediation=("Text-only SFT is not affected. For multimodal SFT, equal-length micro-batches (packing) make "
                 "the mean of means equal the token mean; otherwise weigh the effect."),
    advisory=True,
)

ORDER = 80  # where its patches sit in the registry (application and doctor order)
PATCHES = (MULTIMODAL_LOSS,)
