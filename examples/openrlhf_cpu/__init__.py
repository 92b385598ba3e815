"""OpenRLHF's own trainers on a CPU-only machine (FACTS.md: flash-attn and vLLM are CUDA-only).

`stand_ins/` holds import-only stand-ins for flash_attn and vllm: OpenRLHF imports them at module
level, and every name in them raises if called. `cuda.install()` turns the few torch.cuda calls
OpenRLHF makes on its SFT path into CPU no-ops. Nothing else is replaced: the trainer, its loss,
DeepspeedStrategy and its DeepSpeed config are OpenRLHF's own.
"""
import os

STAND_INS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "stand_ins")
