"""Group DeepSpeed releases by the source fingerprint of each patched method.

    python benchmarks/source_shapes.py            # every release folder under .ds-releases/
    python benchmarks/deepspeed_releases.py install $(python benchmarks/deepspeed_releases.py list)  # to get them all

Prints, per target, the runs of consecutive releases that share one shape and whether the patch
knows that shape as broken (wrapped), fixed (left alone) or not at all.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import deepspeed_releases  # noqa: E402
from sftrl_patches import PATCHES  # noqa: E402
from sftrl_patches._fingerprint import fingerprint_in_source  # noqa: E402


def installed_releases(root=deepspeed_releases.ROOT):
    if not os.path.isdir(root):
        return []
    versions = [v for v in os.listdir(root) if deepspeed_releases.is_installed(v, root)]
    return sorted(versions, key=lambda v: tuple(int(p) for p in v.split(".")))


def main():
    versions = installed_releases()
    if not versions:
        print("no release folders under .ds-releases/; install some first", file=sys.stderr)
        return 2
    for patch in PATCHES.values():
        for target in patch.targets:
            print(f"{patch.name}: {target.dotted}")
            runs = []
            for version in versions:
                path = os.path.join(deepspeed_releases.release_dir(version), *target.module.split(".")) + ".py"
                with open(path, encoding="utf-8") as handle:
                    fp = fingerprint_in_source(handle.read(), target.owner, target.attribute)
                if runs and runs[-1][0] == fp:
                    runs[-1][2] = version
                else:
                    runs.append([fp, version, version])
            for fp, first, last in runs:
                known = ("broken, wrapped" if fp in target.fingerprints else
                         "fixed, left alone" if fp in target.fixed_fingerprints else "unknown")
                print(f"  {fp}  {first:>7} - {last:<7} {known}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
