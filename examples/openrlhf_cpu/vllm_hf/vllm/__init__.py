"""A working vLLM stand-in that generates with Hugging Face on the CPU, for tests and demos only
(see ../README.md). Only the names OpenRLHF's RL path uses exist."""
from ._version import __version__  # noqa: F401
from .engine import AsyncEngineArgs, AsyncLLMEngine  # noqa: F401
from .outputs import CompletionOutput, RequestOutput  # noqa: F401
from .sampling_params import SamplingParams  # noqa: F401
