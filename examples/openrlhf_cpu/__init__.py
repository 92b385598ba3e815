"""OpenRLHF's own trainers on a CPU-only machine (FACTS.md: flash-attn and vLLM are CUDA-only).

`stand_ins/` holds import-only stand-ins for flash_attn and vllm: OpenRLHF imports them at module
level, and every name in them raises if called (the SFT path). `vllm_hf/` is a working vllm
stand-in that generates with Hugging Face and takes the trainer's weights over gloo (the RL path).
`cuda.install()` turns the few torch.cuda calls OpenRLHF makes into CPU no-ops; `ray_cpu` starts a
local Ray cluster whose workers get all of that. Nothing else is replaced: the trainers, their
losses, DeepspeedStrategy, the Ray actors, the rollout and reward code are OpenRLHF's own.
"""
import os

STAND_INS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stand_ins")
