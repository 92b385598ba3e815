"""Import-only stand-in: names OpenRLHF imports at module level; used only with packed samples."""


def _unavailable(*args, **kwargs):
    raise RuntimeError("flash_attn CPU stand-in: packed samples are not exercised on CPU")


index_first_axis = pad_input = rearrange = unpad_input = _unavailable
