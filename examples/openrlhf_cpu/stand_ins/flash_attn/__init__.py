"""Import-only stand-in: flash-attn is CUDA-only. OpenRLHF imports these names at module level."""
