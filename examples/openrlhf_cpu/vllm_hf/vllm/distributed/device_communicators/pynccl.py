"""PyNcclCommunicator's broadcast, carried by a gloo group on the CPU (vLLM's needs NCCL)."""
import torch
import torch.distributed as dist

# gloo refuses bfloat16 and int16 ("Invalid scalar type"); a broadcast only moves bits, so 16-bit
# floats travel as their bytes.
_AS_BYTES = (torch.bfloat16, torch.float16)


class PyNcclCommunicator:
    def __init__(self, group, device=None):
        self.rank, self.world_size, self.device = group.rank, group.world_size, device
        store = dist.PrefixStore("sftrl-vllm-stand-in", group.store)
        self._gloo = dist.ProcessGroupGloo(store, group.rank, group.world_size, group.timeout)

    def broadcast(self, tensor, src, stream=None):
        """In place, like NCCL's: `tensor` on `src` is sent, on every other rank overwritten."""
        contiguous = tensor.contiguous()
        carrier = contiguous.view(-1).view(torch.uint8) if tensor.dtype in _AS_BYTES else contiguous
        options = dist.BroadcastOptions()
        options.rootRank = src
        self._gloo.broadcast([carrier], options).wait()
        if contiguous.data_ptr() != tensor.data_ptr():  # received into a copy: write it back
            tensor.copy_(contiguous)
