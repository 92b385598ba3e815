"""vllm.inputs.TokensPrompt: a plain dict with prompt_token_ids, as in vLLM."""
from typing import List, TypedDict


class TokensPrompt(TypedDict, total=False):
    prompt_token_ids: List[int]
