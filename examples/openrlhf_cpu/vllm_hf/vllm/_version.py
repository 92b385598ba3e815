"""The vLLM release the installed OpenRLHF asks for (its `vllm` extra), so its version checks see
what they would on a GPU box; 0.19.0 (OpenRLHF 0.9.10's) when that cannot be read."""
import re
from importlib import metadata

DEFAULT = "0.19.0"


def pinned_by_openrlhf():
    try:
        requirements = metadata.requires("openrlhf") or []
    except metadata.PackageNotFoundError:
        return DEFAULT
    for requirement in requirements:
        match = re.match(r"vllm\s*==\s*([\w.]+)\s*;.*extra\s*==\s*[\"']vllm[\"']", requirement)
        if match:
            return match.group(1)
    return DEFAULT


__version__ = pinned_by_openrlhf()
