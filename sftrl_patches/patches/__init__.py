"""Every known bug, in the order patches are applied."""
from .deepspeed_offload import PATCHES as _DEEPSPEED

ALL = _DEEPSPEED
