from setuptools import find_packages, setup

setup(
    name="sftrl-patches",
    version="0.1.0",
    description="Version-gated, fingerprint-checked fixes for silent bugs in DeepSpeed and OpenRLHF "
                "that break SFT-then-RL baselines, and a doctor that proves them.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["sftrl_patches", "sftrl_patches.*"]),
    install_requires=[],  # the import path is stdlib only
    extras_require={
        # torch itself is left to the user: pin the build that matches your hardware.
        "probe": ["torch", "deepspeed", "einops", "hjson", "msgpack", "ninja", "numpy", "psutil",
                  "py-cpuinfo", "pydantic", "tqdm"],
        "test": ["pytest>=7", "packaging"],
    },
    entry_points={"console_scripts": ["sftrl-doctor=sftrl_patches.doctor.cli:main"]},
)
