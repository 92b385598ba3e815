"""Run the numerical probes in child interpreters, patched and unpatched.

Nothing here imports torch or DeepSpeed; the children do.
"""
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

from .. import _config

DOCTOR_CASES = (
    {"label": "ZeRO-2 offload GA 4", "stage": 2, "ga": 4},
    {"label": "ZeRO-1 offload GA 4", "stage": 1, "ga": 4},
    {"label": "ZeRO-2 offload GA=1, 4x backward(), boundary set", "stage": 2, "ga": 4, "mode": "multi_backward"},
    {"label": "ZeRO-2 offload GA=1, 4x backward(), no boundary", "stage": 2, "ga": 4, "mode": "no_boundary",
     "no_patch": "deepspeed-manual-accumulation-last-only"},  # before 0.19.0; patched on 0.19.x
    {"label": "ZeRO-2 no offload GA=1, 4x backward(), no boundary", "stage": 2, "ga": 4, "mode": "no_boundary",
     "offload": False, "no_patch": "deepspeed-manual-accumulation-last-only"},
    {"label": "ZeRO-2 no offload GA 4 (#7718)", "stage": 2, "ga": 4, "offload": False},
)  # each runs the probe's default of 3 optimizer steps

WEIGHT_TOLERANCE = 0.01
FP32_PARAM_TOLERANCE = 1e-6
# bf16 weights against an fp32 torch Adam run, lr 0.01, 3 steps: 1.0e-3-2.1e-3 on upstream-fixed 0.19.8;
# a dropped micro-batch flips update signs (2 x lr = 0.02 at the first step).
BF16_ADAM_TOLERANCE = 5e-3


def missing_requirements():
    """Why the DeepSpeed probe cannot run here, or None."""
    for module in ("torch", "deepspeed"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not importable in {sys.executable}"
    return None


RESIDUAL_TOLERANCE = 0.01


def case_is_correct(result):
    """Every micro-batch fully counted at every step, nothing left over from earlier steps; in fp32
    also the exact update."""
    if "error" in result:
        return False
    return all(_step_is_correct(step, result["case"]) for step in result.get("steps", [result]))


def _step_is_correct(step, case):
    if not step["weights"]:  # an Adam case: the trajectory against torch Adam, no weights to fit
        fp32 = case.get("dtype", "fp32") == "fp32"
        return step["max_param_diff"] <= (FP32_PARAM_TOLERANCE if fp32 else BF16_ADAM_TOLERANCE)
    if any(abs(w - 1.0) > WEIGHT_TOLERANCE for w in step["weights"]):
        return False
    if step.get("residual", 0.0) > RESIDUAL_TOLERANCE:
        return False
    if case.get("dtype", "fp32") == "fp32":
        return step["max_param_diff"] <= FP32_PARAM_TOLERANCE
    return True


def run_child(cases, patched, nprocs=1, timeout=300, python=None, env=None):
    """One child run (under torch.distributed.run when nprocs > 1); returns its JSON payload."""
    python = python or sys.executable
    child_env = dict(os.environ if env is None else env)
    child_env[_config.DISABLE_VAR] = "" if patched else "1"
    child_env.pop(_config.STRICT_VAR, None)
    child_env.setdefault("PYTHONWARNINGS", "ignore")
    # The package that runs the probe must be the one the child imports.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, child_env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory(prefix="sftrl-probe-") as tmp:
        out = os.path.join(tmp, "result.json")
        cases_file = os.path.join(tmp, "cases.json")  # a file: a sweep's cases overflow a command line
        with open(cases_file, "w") as handle:
            json.dump(list(cases), handle)
        module_args = ["-m", "sftrl_patches.probes.deepspeed_offload", "--cases", "@" + cases_file, "--out", out]
        command = launch_command(python, nprocs, module_args)
        started = time.time()
        proc = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(out):
            raise ProbeFailed(f"probe child exited with {proc.returncode}: {proc.stderr[-2000:]}")
        with open(out) as handle:
            payload = json.load(handle)
    payload["wall_seconds"] = round(time.time() - started, 2)
    return payload


def launch_command(python, nprocs, args):
    """`python args`, or the same under torch.distributed.run with nprocs local ranks on loopback."""
    if nprocs <= 1:
        return [python, *args]
    return [python, "-m", "torch.distributed.run", "--nproc_per_node", str(nprocs),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]


def free_port():
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProbeFailed(RuntimeError):
    pass


def run_deepspeed_probe(cases=DOCTOR_CASES, nprocs=1, timeout=300, python=None):
    """{"status": "ran"|"skipped"|"error", "unpatched": payload, "patched": payload, ...}."""
    if python is None:
        reason = missing_requirements()
        if reason:
            return {"status": "skipped", "reason": reason}
    try:
        unpatched = run_child(cases, patched=False, nprocs=nprocs, timeout=timeout, python=python)
        patched = run_child(cases, patched=True, nprocs=nprocs, timeout=timeout, python=python)
    except (ProbeFailed, subprocess.TimeoutExpired, OSError) as exc:
        return {"status": "error", "reason": str(exc)}
    return {"status": "ran", "unpatched": unpatched, "patched": patched}
