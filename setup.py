import os
import shutil

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 64 (PEP 660 editable installs)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover
    editable_wheel = None

# Autoload: these two files go to the root of site-packages, so every interpreter of the
# environment arms the patches (see autoload/_sftrl_patches_autoload.py). pip records them in
# the wheel's RECORD, so `pip uninstall` removes them.
AUTOLOAD_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "autoload")
AUTOLOAD_FILES = ("sftrl_patches.pth", "sftrl_patches.start")


class BuildPyWithAutoload(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            for name in AUTOLOAD_FILES:
                self.copy_file(os.path.join(AUTOLOAD_DIR, name), os.path.join(self.build_lib, name))


CMDCLASS = {"build_py": BuildPyWithAutoload}

if editable_wheel is not None:
    class EditableWheelWithAutoload(editable_wheel):
        # An editable wheel holds only path hooks; the start-up files must be in it as well.
        def _run_build_commands(self, dist_name, unpacked_wheel, *args, **kwargs):
            result = super()._run_build_commands(dist_name, unpacked_wheel, *args, **kwargs)
            for name in AUTOLOAD_FILES:
                shutil.copyfile(os.path.join(AUTOLOAD_DIR, name), os.path.join(unpacked_wheel, name))
            return result

    CMDCLASS["editable_wheel"] = EditableWheelWithAutoload

setup(
    name="sftrl-patches",
    version="0.1.0",
    description="Version-gated, fingerprint-checked fixes for silent bugs in DeepSpeed and OpenRLHF "
                "that break SFT-then-RL baselines, and a doctor that proves them.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],  # in the sdist (with MANIFEST.in) and in the wheel's .dist-info
    python_requires=">=3.9",
    packages=find_packages(include=["sftrl_patches", "sftrl_patches.*"]),
    py_modules=["_sftrl_patches_autoload"],
    package_dir={"": "autoload", "sftrl_patches": "sftrl_patches"},  # autoload/ holds the one top-level module
    install_requires=[],  # the import path is stdlib only
    extras_require={
        # torch itself is left to the user: pin the build that matches your hardware.
        "probe": ["torch", "deepspeed", "einops", "hjson", "msgpack", "ninja", "numpy", "psutil",
                  "py-cpuinfo", "pydantic", "tqdm"],
        # YAML configs for `sftrl-doctor audit` (sftrl_patches/audit/inputs.py imports yaml only then)
        "audit": ["pyyaml"],
        "test": ["pytest>=7", "packaging", "pyyaml"],
        # examples/sftrl_tiny and examples/recipes (TRL path); DeepSpeed comes from "probe"
        "demo": ["trl==1.16.0", "transformers>=4.56.2", "accelerate", "datasets", "tokenizers", "math-verify",
                 "matplotlib"],
    },
    cmdclass=CMDCLASS,
    entry_points={"console_scripts": ["sftrl-doctor=sftrl_patches.doctor.cli:main"]},
)
