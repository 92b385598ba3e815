from . import SamplingParams as TokensPrompt  # noqa: F401 - raises if used
