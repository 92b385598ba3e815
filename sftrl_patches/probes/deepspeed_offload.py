"""Numerical proof on the installed DeepSpeed: which micro-batches reach the optimizer.

Runs in a child interpreter (torch and DeepSpeed are imported here only). Each case trains a
tiny MLP for a few SGD steps through `deepspeed.initialize` and, per step, compares the master
weights' update with plain-PyTorch gradients of every micro-batch taken at the same weights:

- weights: least-squares w such that the applied gradient = sum_i w_i g_i / n; [1]*n is correct;
- grad_norm: DeepSpeed's global gradient norm, against the reference norm;
- max_param_diff: largest |master weight - reference SGD update|;
- residual: the part of the applied gradient that no combination of this step's micro-batches
  explains (|applied - basis w| / |applied|): state that leaks in from earlier steps.

Each case runs at least 3 optimizer steps by default: a one-step probe cannot see a leak.

A case with "optimizer": "deepspeed_adam" lets DeepSpeed build its own optimizer from the config
(DeepSpeedCPUAdam when the optimizer is offloaded, JIT-built once per release) and follows a
plain torch Adam run fed the correct gradient of every step: Adam's update is not linear in the
gradient, so there are no weights to fit; max_param_diff compares the two trajectories after each step.

Usage: python -m sftrl_patches.probes.deepspeed_offload --cases JSON --out FILE
(under torch.distributed.run for several ranks).
"""
import argparse
import json
import os
import sys
import time
import traceback

LR = 0.5
ADAM = {"lr": 0.01, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
DEFAULT_STEPS = 3
IN, HIDDEN, OUT = 6, 12, 3


def prepare_environment():
    """Single-rank defaults for torch.distributed on loopback; the CPU accelerator without CUDA."""
    from . import free_port
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_WORLD_SIZE", "1")):
        os.environ.setdefault(name, value)
    import torch
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def skip_shm_build():
    # The CPU accelerator JIT-builds a shared-memory comm op (~60 s of g++) that one process
    # over gloo never needs; DeepSpeed falls back to torch.distributed when it is None.
    import importlib
    comm_torch = importlib.import_module("deepspeed.comm.torch")
    if hasattr(comm_torch, "build_shm_op"):
        comm_torch.build_shm_op = lambda: None


def _model(torch, seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(IN, HIDDEN), torch.nn.Tanh(), torch.nn.Linear(HIDDEN, OUT))


def _micro_batch(torch, step, rank, index, size):
    generator = torch.Generator().manual_seed(10_000 * step + 100 * rank + index)
    return torch.randn(size, IN, generator=generator), torch.randn(size, OUT, generator=generator)


def _ds_config(case):
    zero = {"stage": case["stage"], "overlap_comm": case.get("overlap_comm", False),
            "contiguous_gradients": True, "reduce_bucket_size": 64, "allgather_bucket_size": 64}
    if case.get("offload", True):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if case.get("offload_param") and case["stage"] == 3:
        zero["offload_param"] = {"device": "cpu", "pin_memory": False}
    if case["stage"] == 3:  # keep every parameter partitioned: the tiny model would otherwise stay whole
        zero.update({"stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": 64,
                     "stage3_max_live_parameters": 64})
    ga = case["ga"] if case.get("mode", "ga") == "ga" else 1
    config = {
        "train_micro_batch_size_per_gpu": case.get("micro_batch", 2),
        "gradient_accumulation_steps": ga,
        "zero_optimization": zero,
        "bf16": {"enabled": case.get("dtype") == "bf16"},
        # set in every case: its default became 1.0 in 0.19.3 (#8068)
        "gradient_clipping": float(case.get("clip", 0.0)),
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 1 << 30,
    }
    if case.get("grad_accum_dtype"):  # bf16 + ZeRO-1 + fp32 here selects BF16_Optimizer (#7985)
        config["data_types"] = {"grad_accum_dtype": case["grad_accum_dtype"]}
    if case.get("optimizer") == "deepspeed_adam":  # DeepSpeed's own: DeepSpeedCPUAdam with offload
        config["optimizer"] = {"type": "Adam", "params": dict(ADAM)}
        config["zero_force_ds_cpu_optimizer"] = True
    if case.get("master_weights") == "bf16":  # the low-precision master-weights branch (needs CPU Adam offload)
        config["bf16"]["bf16_master_weights_and_grads"] = True
    if case.get("mode") == "unmanaged":  # 0.19.4+: the caller's step() is the boundary, any backward() count
        config["managed_gradient_accumulation"] = False
    if case.get("dtype") == "fp16" and case.get("loss_scale") == "dynamic":  # DeepSpeed's default fp16 setting
        config["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 8, "hysteresis": 2}
    elif case.get("dtype") == "fp16":  # a static loss scale (1 unless the case names one): no skipped steps
        config["fp16"] = {"enabled": True, "loss_scale": float(case.get("loss_scale") or 1.0)}
        if case.get("master_weights") == "fp16":  # the same branch up to 0.18.2, fp16 only (needs CPU Adam offload)
            config["fp16"]["fp16_master_weights_and_grads"] = True
    return config


def _full_param(safe_get_full_fp32_param, param, masters=None):
    """The fp32 master copy: DeepSpeed's hp mapping, else the optimizer's own fp32 group entry (`masters`,
    from _unmapped_masters), else the module's parameter."""
    full = safe_get_full_fp32_param(param)
    if full is None and masters:
        full = masters.get(id(param))
    return (param if full is None else full).detach().float().cpu()


def _unmapped_masters(optimizer):
    """id(module parameter) -> its fp32 master, for optimizers that keep fp32 groups without DeepSpeed's hp
    mapping: FP16_UnfusedOptimizer, which 0.18.3-0.18.4 build for bf16 + ZeRO-1 + fp32 accumulation where
    BF16_Optimizer was asked for (upstream PR #7788)."""
    masters = {}
    for low, high in zip(getattr(optimizer, "fp16_groups", None) or [], getattr(optimizer, "fp32_groups", None) or []):
        if isinstance(low, list) and isinstance(high, list):
            masters.update({id(l): h for l, h in zip(low, high)})
    return masters


def allow_fp16_on_cpu():
    """DeepSpeed's CPU accelerator refuses fp16 unless oneDNN has fp16 kernels for this CPU; torch computes
    fp16 on any CPU (slowly), so a probe case that asks for fp16 lifts that gate, nothing else."""
    import torch
    from deepspeed.accelerator import get_accelerator
    accelerator = get_accelerator()
    if accelerator.device_name() == "cpu" and not accelerator.is_fp16_supported():
        accelerator.is_fp16_supported = lambda: True
        accelerator.supported_dtypes = lambda: [torch.float, torch.bfloat16, torch.float16]


def fit_weights(basis, applied):
    """Least-squares weight of each column of `basis` (one gradient per micro-batch) in `applied`,
    and the part of `applied` that no combination of them explains (float64)."""
    import torch
    weights = torch.linalg.lstsq(basis.double(), applied.double().unsqueeze(1)).solution.flatten()
    return weights, applied.double() - basis.double() @ weights


def run_case(case):
    import torch
    import deepspeed
    from deepspeed.utils import safe_get_full_fp32_param

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if case.get("dtype") == "fp16":
        allow_fp16_on_cpu()
    n_micro = case["ga"]
    mode = case.get("mode", "ga")
    micro_batch = case.get("micro_batch", 2)
    model = _model(torch, seed=1234)
    if case.get("optimizer") in ("deepspeed_adam", "adamw"):
        return _run_adam_case(case, torch, deepspeed, model, rank, world)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=_ds_config(case))
    dtype = next(engine.module.parameters()).dtype
    device = next(engine.module.parameters()).device
    masters = _unmapped_masters(engine.optimizer)
    steps = []
    for step in range(case.get("steps", DEFAULT_STEPS)):
        params = list(engine.module.parameters())
        before = [_full_param(safe_get_full_fp32_param, p, masters).clone() for p in params]
        # Reference: plain PyTorch on the same weights and dtype, one gradient per (rank, micro-batch). The weights
        # come from the fp32 masters (under ZeRO-3 the module holds only its partition).
        reference = _model(torch, seed=0)
        with torch.no_grad():
            for ref, master in zip(reference.parameters(), before):
                ref.copy_(master.view_as(ref))
        reference = reference.to(dtype)
        columns = []
        for r in range(world):
            for i in range(n_micro):
                x, y = _micro_batch(torch, step, r, i, micro_batch)
                reference.zero_grad()
                torch.nn.functional.mse_loss(reference(x.to(dtype)).float(), y).backward()
                columns.append(torch.cat([p.grad.detach().float().flatten() for p in reference.parameters()]))
        basis = torch.stack(columns, dim=1) / (n_micro * world)
        if case.get("clip"):  # DeepSpeed scales the whole step's gradient by clip / (norm + 1e-6) when above clip
            basis = basis * min(1.0, float(case["clip"]) / (float(basis.sum(dim=1).norm()) + 1e-6))
        expected_grad = basis.sum(dim=1)

        for i in range(n_micro):
            x, y = _micro_batch(torch, step, rank, i, micro_batch)
            loss = torch.nn.functional.mse_loss(engine(x.to(device=device, dtype=dtype)).float(), y.to(device))
            if mode == "ga":
                engine.backward(loss)  # DeepSpeed divides by GA itself
                engine.step()          # a no-op until the boundary
            else:
                if mode == "multi_backward":  # the documented way; "no_boundary" is OpenRLHF's dynamic batch
                    engine.set_gradient_accumulation_boundary(i == n_micro - 1)
                engine.backward(loss / n_micro)  # "unmanaged": DeepSpeed leaves the count to the caller
        if mode != "ga":
            engine.step()

        after = [_full_param(safe_get_full_fp32_param, p, masters) for p in params]
        applied = torch.cat([(b - a).flatten() for b, a in zip(before, after)]) / LR
        weights, unexplained = fit_weights(basis, applied)
        expected_after = torch.cat([b.flatten() for b in before]) - LR * expected_grad
        norm = engine.get_global_grad_norm()
        steps.append({
            "weights": [round(float(w), 6) for w in weights],
            "grad_norm": None if norm is None else float(norm),
            "reference_grad_norm": float(expected_grad.norm()),
            "max_param_diff": float((torch.cat([a.flatten() for a in after]) - expected_after).abs().max()),
            "residual": float(unexplained.norm() / applied.double().norm().clamp_min(1e-30)),
            "optimizer": type(engine.optimizer).__name__,
        })
    if hasattr(engine, "destroy"):
        engine.destroy()
    return steps


def _run_adam_case(case, torch, deepspeed, model, rank, world):
    """DeepSpeed's own Adam ("deepspeed_adam"), or a client torch AdamW ("adamw", what the HF Trainer passes),
    against the same torch optimizer fed each step's correct gradient, from the same weights."""
    from deepspeed.utils import safe_get_full_fp32_param
    reference = _model(torch, seed=0)
    reference.load_state_dict(model.state_dict())
    kind = torch.optim.AdamW if case.get("optimizer") == "adamw" else torch.optim.Adam
    reference_optimizer = kind(reference.parameters(), lr=ADAM["lr"], betas=tuple(ADAM["betas"]),
                               eps=ADAM["eps"], weight_decay=ADAM["weight_decay"])
    if case.get("optimizer") == "adamw":
        client = torch.optim.AdamW(model.parameters(), lr=ADAM["lr"], betas=tuple(ADAM["betas"]), eps=ADAM["eps"],
                                   weight_decay=ADAM["weight_decay"])
        engine, *_ = deepspeed.initialize(model=model, optimizer=client, config=_ds_config(case))
    else:
        engine, *_ = deepspeed.initialize(model=model, model_parameters=model.parameters(), config=_ds_config(case))
    dtype = next(engine.module.parameters()).dtype
    n_micro, micro_batch = case["ga"], case.get("micro_batch", 2)
    # which master-weights branch the optimizer took (the attribute's name changed in 0.18.3)
    low_precision = any(getattr(engine.optimizer, name, False) for name in
                        ("fp16_master_weights_and_gradients", "low_precision_master_weights_and_grads"))
    steps = []
    for step in range(case.get("steps", DEFAULT_STEPS)):
        reference_optimizer.zero_grad()
        for r in range(world):
            for i in range(n_micro):
                x, y = _micro_batch(torch, step, r, i, micro_batch)
                loss = torch.nn.functional.mse_loss(reference(x), y) / (n_micro * world)
                loss.backward()
        if case.get("clip"):
            torch.nn.utils.clip_grad_norm_(reference.parameters(), float(case["clip"]))
        expected_grad_norm = float(torch.cat([p.grad.flatten() for p in reference.parameters()]).norm())
        reference_optimizer.step()
        for i in range(n_micro):
            x, y = _micro_batch(torch, step, rank, i, micro_batch)
            engine.backward(torch.nn.functional.mse_loss(engine(x.to(dtype)).float(), y))
            engine.step()
        masters = _unmapped_masters(engine.optimizer)  # FP16_UnfusedOptimizer keeps fp32 groups of its own
        after = torch.cat([_full_param(safe_get_full_fp32_param, p, masters).flatten()
                           for p in engine.module.parameters()])
        expected = torch.cat([p.detach().flatten() for p in reference.parameters()])
        norm = engine.get_global_grad_norm()
        steps.append({"weights": [], "grad_norm": None if norm is None else float(norm),
                      "reference_grad_norm": expected_grad_norm,
                      "max_param_diff": float((after - expected).abs().max()), "residual": 0.0,
                      "low_precision_master_weights": low_precision})
    if hasattr(engine, "destroy"):
        engine.destroy()
    return steps


def summarize(steps):
    """Worst step of a case."""
    worst = max(steps, key=lambda s: s["max_param_diff"])
    return {**worst, "steps": steps}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", required=True, help="JSON list of case dicts, or @FILE holding it")
    parser.add_argument("--out", required=True, help="where rank 0 writes the JSON result")
    args = parser.parse_args(argv)
    if args.cases.startswith("@"):
        with open(args.cases[1:]) as handle:
            cases = json.load(handle)
    else:
        cases = json.loads(args.cases)
    prepare_environment()

    import sftrl_patches  # arms the hook before DeepSpeed loads, even without autoload
    started = time.time()
    import deepspeed
    skip_shm_build()
    import logging
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    on_gpu = __import__("torch").cuda.is_available() and os.environ.get("DS_ACCELERATOR") != "cpu"
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo", verbose=False)
    # DeepSpeed <= 0.18.7 calls gc.collect() three times per engine (see_memory_usage): with torch's
    # modules tracked that is ~0.25 s each, most of a case's time. Nothing imported so far is garbage.
    import gc
    gc.freeze()
    results = []
    for case in cases:
        try:
            results.append({"case": case, **summarize(run_case(case))})
        except Exception as exc:
            results.append({"case": case, "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=4)})
    if int(os.environ.get("RANK", "0")) == 0:
        payload = {
            "deepspeed": deepspeed.__version__,
            "torch": __import__("torch").__version__,
            "accelerator": __import__("deepspeed.accelerator", fromlist=["x"]).get_accelerator().device_name(),
            "world_size": int(os.environ["WORLD_SIZE"]),
            "patches": {name: s.state for name, s in sftrl_patches.status().items()},
            "seconds": round(time.time() - started, 2),
            "results": results,
        }
        with open(args.out, "w") as handle:
            json.dump(payload, handle, indent=1)
    shut_down_process_group()
    return 0


def shut_down_process_group():
    # Leaving the gloo group to the interpreter's exit lets one rank tear it down while the other
    # still talks to it; measured: 1 run in 24 died with "terminate called without an active exception".
    import torch.distributed as dist
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
