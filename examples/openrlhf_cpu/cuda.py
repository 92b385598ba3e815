"""CPU no-ops for the torch.cuda calls OpenRLHF makes on its training path.

OpenRLHF pins ranks to GPUs (set_device), moves batches to current_device(), synchronises and
empties the CUDA cache, passes the current stream to its weight broadcast, and builds its device
mesh on "cuda". On a CPU these become no-ops and a CPU mesh; DeepSpeed itself runs on its CPU
accelerator (DS_ACCELERATOR=cpu). The RL replay buffer alone spells a device as
f"cuda:{current_device()}": `replay_buffer_on_cpu` gives it the CPU instead.
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
    torch.cuda.current_stream = lambda *args, **kwargs: None
    on_gpu = mesh.init_device_mesh

    def init_device_mesh(device_type, *args, **kwargs):
        return on_gpu("cpu", *args, **kwargs)

    init_device_mesh._sftrl_cpu = True
    mesh.init_device_mesh = init_device_mesh


def replay_buffer_on_cpu(module):
    """For openrlhf.trainer.ppo_utils.replay_buffer, once imported: its buffer's target device is the CPU.
    (torch.device("cuda:0") can be built without CUDA; only its use would fail.)"""
    buffer = module.NaiveReplayBuffer
    if getattr(buffer.__init__, "_sftrl_cpu", False):
        return
    original = buffer.__init__

    def __init__(self, *args, **kwargs):
        current = torch.cuda.current_device
        torch.cuda.current_device = lambda: 0
        try:
            original(self, *args, **kwargs)
        finally:
            torch.cuda.current_device = current
        self.target_device = torch.device("cpu")

    __init__._sftrl_cpu = True
    buffer.__init__ = __init__
