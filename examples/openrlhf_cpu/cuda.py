"""CPU no-ops for the torch.cuda calls OpenRLHF makes on its training path.

OpenRLHF pins ranks to GPUs (set_device), moves batches to current_device(), synchronises and
empties the CUDA cache, and builds its device mesh on "cuda". On a CPU these become no-ops and a
CPU mesh; DeepSpeed itself runs on its CPU accelerator (DS_ACCELERATOR=cpu).
"""
import torch


def install():
    """Idempotent; call before OpenRLHF builds its strategy."""
    import torch.distributed.device_mesh as mesh
    if getattr(mesh.init_device_mesh, "_sftrl_cpu", False):
        return
    torch.cuda.set_device = lambda *args, **kwargs: None
    torch.cuda.current_device = lambda: "cpu"
    torch.cuda.synchronize = lambda *args, **kwargs: None
    torch.cuda.empty_cache = lambda *args, **kwargs: None
    on_gpu = mesh.init_device_mesh

    def init_device_mesh(device_type, *args, **kwargs):
        return on_gpu("cpu", *args, **kwargs)

    init_device_mesh._sftrl_cpu = True
    mesh.init_device_mesh = init_device_mesh
