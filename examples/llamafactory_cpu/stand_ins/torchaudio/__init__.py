"""Import-only stand-in: Llama-Factory's mm_plugin imports torchaudio at module level and calls it
only for audio inputs, which text SFT never has. No torchaudio wheel matches the CPU torch here."""


def load(*args, **kwargs):
    raise RuntimeError("torchaudio stand-in: audio inputs are not supported in this CPU environment")
