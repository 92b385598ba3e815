"""Test double: names OpenRLHF imports at module level; used only with packed samples."""


def _unavailable(*args, **kwargs):
    raise RuntimeError("flash_attn test double: packed samples are not exercised on CPU")


index_first_axis = pad_input = rearrange = unpad_input = _unavailable
