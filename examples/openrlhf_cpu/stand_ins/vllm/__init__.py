"""Import-only stand-in: vLLM is CUDA-only. openrlhf.trainer.ray imports it at module level; rollouts are
not exercised on CPU (the actor test feeds the replay buffer directly)."""


class SamplingParams:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("vllm CPU stand-in: generation is not exercised on CPU")


class LLM(SamplingParams):
    pass
