"""Every known bug, in the order patches are applied."""
from .deepspeed_offload import PATCHES as _DEEPSPEED_OFFLOAD
from .deepspeed_zero2_ga import PATCHES as _DEEPSPEED_ZERO2_GA
from .deepspeed_manual_accumulation import PATCHES as _DEEPSPEED_MANUAL
from .deepspeed_bf16_epilogue import PATCHES as _DEEPSPEED_BF16
from .deepspeed_bf16_selection import PATCHES as _DEEPSPEED_BF16_SELECTION
from .openrlhf_loss import PATCHES as _OPENRLHF
from .openrlhf_dynamic_batch import PATCHES as _OPENRLHF_DYNAMIC
from .llamafactory_multimodal import PATCHES as _LLAMAFACTORY

ALL = _DEEPSPEED_OFFLOAD + _DEEPSPEED_ZERO2_GA + _DEEPSPEED_MANUAL + _DEEPSPEED_BF16 + _DEEPSPEED_BF16_SELECTION + _OPENRLHF + _OPENRLHF_DYNAMIC + _LLAMAFACTORY
