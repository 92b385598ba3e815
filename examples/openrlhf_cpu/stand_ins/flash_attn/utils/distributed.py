"""Import-only stand-in: imported by OpenRLHF's ring-attention helpers, never called without ring attention."""


def all_gather(*args, **kwargs):
    raise RuntimeError("flash_attn CPU stand-in: ring attention is not exercised on CPU")
