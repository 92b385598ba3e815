"""Every known bug, in the order patches are applied."""
from .deepspeed_offload import PATCHES as _DEEPSPEED
from .openrlhf_loss import PATCHES as _OPENRLHF

ALL = _DEEPSPEED + _OPENRLHF
