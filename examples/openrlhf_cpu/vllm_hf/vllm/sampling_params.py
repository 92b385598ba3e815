"""vLLM's SamplingParams as OpenRLHF uses it: a mutable, picklable bag of generation settings."""


class SamplingParams:
    def __init__(self, n=1, temperature=1.0, top_p=1.0, top_k=-1, max_tokens=16, min_tokens=0,
                 skip_special_tokens=True, include_stop_str_in_output=False, logprobs=None, stop=None,
                 stop_token_ids=None, seed=None, **others):
        if n != 1:
            raise ValueError("vllm stand-in: n > 1 is not supported (OpenRLHF asks for one sample per request)")
        self.n = n
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.max_tokens = max_tokens
        self.min_tokens = min_tokens
        self.skip_special_tokens = skip_special_tokens
        self.include_stop_str_in_output = include_stop_str_in_output
        self.logprobs = logprobs
        self.stop = stop
        self.stop_token_ids = list(stop_token_ids or [])
        self.seed = seed
        self.__dict__.update(others)  # settings this stand-in does not act on, kept for whoever reads them

    def batch_key(self):
        """Requests with equal keys can share one generate call (max_tokens may differ)."""
        return (self.temperature, self.top_p, self.top_k, self.min_tokens, self.skip_special_tokens,
                self.logprobs is not None, tuple(self.stop_token_ids))

    def __repr__(self):
        return f"SamplingParams({self.__dict__})"
