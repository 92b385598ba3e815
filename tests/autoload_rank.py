"""A training-rank stand-in that never imports sftrl_patches: it imports DeepSpeed's ZeRO module
and writes, per rank, whether the patch reached it. Started by torchrun, deepspeed, accelerate,
Ray and plain subprocesses in tests/test_autoload.py.

usage: python autoload_rank.py OUT_DIR [--spawn-child] [--local_rank=N]
"""
import json
import os
import subprocess
import sys


def main():
    out_dir = next(arg for arg in sys.argv[1:] if not arg.startswith("--"))
    armed_at_start = "sftrl_patches" in sys.modules
    import deepspeed.runtime.zero.stage_1_and_2 as zero
    method = zero.DeepSpeedZeroOptimizer.__dict__["copy_grads_in_partition"]
    rank = os.environ.get("RANK", "0")
    report = {"rank": rank, "pid": os.getpid(), "argv": sys.argv[1:], "name": __name__,
              "armed_at_start": armed_at_start, "armed": "sftrl_patches" in sys.modules,
              "patch_mark": getattr(method, "__sftrl_patch__", None),
              "own_env": os.environ.get("SFTRL_TEST_OWN_ENV")}
    if "--spawn-child" in sys.argv:  # the grandchild runs this same file, one level deeper
        child_dir = os.path.join(out_dir, "child")
        os.makedirs(child_dir, exist_ok=True)
        subprocess.run([sys.executable, __file__, child_dir], check=True)
    with open(os.path.join(out_dir, f"rank{rank}-{os.getpid()}.json"), "w") as handle:
        json.dump(report, handle)


if __name__ == "__main__":
    main()
