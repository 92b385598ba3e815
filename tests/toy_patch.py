"""A patch record for the toy library, used by engine tests in fresh interpreters."""
import os

from sftrl_patches._fingerprint import fingerprint_lines
from sftrl_patches._version import VersionRange
from sftrl_patches.registry import Patch, Target

KNOWN_SOURCE_LINES = [
    "def add(self, value):",
    'self.total = getattr(self, "total", 0) + value',
    "return self.total",
]


def wrap_add(original):
    if os.environ.get("TOY_WRAPPER_RAISES"):
        raise RuntimeError("wrapper factory failed on purpose")

    def add(self, value):
        return original(self, value) * 10
    return add


TOY = Patch(
    name="toy-add",
    title="toy bug",
    distribution="toylib",
    affected=VersionRange("1.0.0", "2.0.0"),
    fixed_in="2.0.0",
    targets=(Target("toylib.core", "Accumulator", "add", wrap_add,
                    {fingerprint_lines(KNOWN_SOURCE_LINES): "1.x"}),),
    remediation="upgrade toylib",
)
