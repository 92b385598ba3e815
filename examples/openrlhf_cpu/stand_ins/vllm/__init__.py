"""Import-only stand-in: vLLM is CUDA-only. openrlhf.trainer.ray imports it at module level; the trainer
tests that feed the replay buffer directly never generate. Generation runs through the working
stand-in in ../../vllm_hf instead (OpenRLHF's GRPO on Ray)."""


class SamplingParams:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("vllm CPU stand-in: generation is not exercised on CPU")


class LLM(SamplingParams):
    pass
