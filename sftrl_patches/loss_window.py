"""One token-weighted loss per optimizer step, for trainers that average per-micro-batch means.

The runtime half of the OpenRLHF patches; it imports torch, so only a patched trainer loads it.
A trainer's micro-batches are read one optimizer step (window) ahead, the loss tokens of the
window are summed over every data-parallel rank, and each micro-batch's loss is multiplied by a
scale so that, after DeepSpeed's 1/GA and the averaging of gradients over ranks, the step's
gradient is that of  sum(token losses of the window, all ranks) / (tokens of the window, all ranks).
"""
import contextlib
import itertools

# What the trainer's loss is, per micro-batch on rank k (S = masked sum of token losses):
LOCAL_MEAN = "local-mean"                     # S / (tokens of this micro-batch on this rank)
GLOBAL_MICRO_MEAN = "global-micro-batch-mean"  # S / (tokens of this micro-batch on all ranks) * D (0.10.3)

_MISSING = object()


class CountError(RuntimeError):
    """A micro-batch whose loss tokens cannot be counted."""


class StepWindows:
    """Wraps a data loader; yields its items unchanged and sets `scale` for the item being trained.

    accumulation: micro-batches per optimizer step (DeepSpeed's gradient_accumulation_steps).
    count: item -> number of loss tokens in it (on this rank).
    mode: LOCAL_MEAN or GLOBAL_MICRO_MEAN, how the trainer already normalises each micro-batch.
    Every rank must iterate the same number of items (OpenRLHF's samplers guarantee it): each
    window costs one all-reduce of `accumulation + 1` numbers. A step split across two epochs
    is normalised per part (each part's token mean, weighted by its share of the GA micro-batches).
    """

    def __init__(self, loader, accumulation, count, mode=LOCAL_MEAN, group=None, on_fallback=None):
        if accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {accumulation}")
        if mode not in (LOCAL_MEAN, GLOBAL_MICRO_MEAN):
            raise ValueError(f"unknown mode {mode!r}")
        self.loader = loader
        self.accumulation = int(accumulation)
        self.count = count
        self.mode = mode
        self.group = group
        self.on_fallback = on_fallback  # called once with a reason when counting fails
        self.scale = 1.0
        self.position = 0  # micro-batches handed out so far, over every epoch
        self.active = True

    def __len__(self):
        return len(self.loader)

    def __getattr__(self, name):  # sampler, batch_size, state_dict, ...: the loader's own
        loader = self.__dict__.get("loader")
        if loader is None:
            raise AttributeError(name)
        return getattr(loader, name)

    def __iter__(self):
        # Windows follow the trainer's micro-step count across epochs (it starts at a step
        # boundary): after an epoch that ended mid-step, the first window only completes that step.
        items = iter(self.loader)
        self.epoch_position = 0
        while True:
            window = list(itertools.islice(items, self._window_size()))
            if not window:
                return
            scales = self._scales(window) if self.active else [1.0] * len(window)
            for item, scale in zip(window, scales):
                self.scale = scale
                self.position += 1
                self.epoch_position += 1
                yield item
            self.scale = 1.0

    def _window_size(self):
        return self.accumulation - self.position % self.accumulation

    def _trainer_factors(self, size):
        """What the trainer already multiplies each loss of the next `size` micro-batches by."""
        return [1.0] * size

    def _scales(self, window):
        import torch
        counts, failure = [], None
        try:
            counts = [float(self.count(item)) for item in window]
        except Exception as exc:  # noqa: BLE001 - reported below; every rank must still all-reduce
            failure = exc
        # One collective per window, always the same size on every rank; the last slot flags
        # a rank that could not count, so that all ranks fall back together instead of hanging.
        # Every rank has the same window size (same number of items per step).
        vector = torch.zeros(len(window) + 1, dtype=torch.float64, device=_device(self.group))
        if failure is None:
            vector[:len(counts)] = torch.tensor(counts, dtype=torch.float64)
        else:
            vector[-1] = 1.0
        world = _all_reduce_sum(vector, self.group)
        if vector[-1].item() > 0:
            self.active = False
            if self.on_fallback is not None:
                self.on_fallback(f"a rank could not count loss tokens ({failure!r})" if failure
                                 else "another rank could not count loss tokens")
            return [1.0] * len(window)
        global_counts = vector[:len(window)].tolist()
        total = sum(global_counts)
        if total <= 0:  # nothing to learn from in this step: leave the trainer's own loss
            return [1.0] * len(window)
        factors = self._trainer_factors(len(window))
        if self.mode == LOCAL_MEAN:
            return [c * self.accumulation * world / total / f if f > 0 else 1.0 for c, f in zip(counts, factors)]
        return [g * self.accumulation / total / f if f > 0 else 1.0 for g, f in zip(global_counts, factors)]


class DynamicStepWindows(StepWindows):
    """StepWindows for OpenRLHF's dynamic batching (0.8.6-0.10.2).

    There, DeepSpeed's GA is 1 (no 1/GA), a step's micro-batches are the runs of
    `buffer.dynamic_optimizer_step` that end in a 1, and each micro-batch's local token mean is
    already multiplied by `buffer.dynamic_loss_scale[i]` (its share of the step's samples on this
    rank), which the scale divides out. `buffer` is read when iteration starts: ppo_train fills it
    (setup_dynamic_batch) before it builds its loader. Each epoch runs over the whole buffer.
    """

    def __init__(self, loader, buffer, count, group=None, on_fallback=None):
        super().__init__(loader, 1, count, LOCAL_MEAN, group, on_fallback)
        self.buffer = buffer

    def _window_size(self):
        flags = self.buffer.dynamic_optimizer_step
        end = self.epoch_position
        while end < len(flags) - 1 and not flags[end]:
            end += 1
        return end - self.epoch_position + 1

    def _trainer_factors(self, size):
        start = self.epoch_position
        return [float(f) for f in self.buffer.dynamic_loss_scale[start:start + size]]


def _device(group):
    import torch
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce_sum(vector, group):
    """Sum `vector` in place over the group; returns the group size (1 without torch.distributed)."""
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    dist.all_reduce(vector, op=dist.ReduceOp.SUM, group=group)
    return dist.get_world_size(group)


def scaled_backward(strategy, windows):
    """A context in which strategy.backward(loss, ...) receives loss * windows.scale."""
    original = strategy.backward

    def backward(loss, *args, **kwargs):
        scale = windows.scale
        return original(loss * scale if scale != 1.0 else loss, *args, **kwargs)

    return replaced_attribute(strategy, "backward", backward)


@contextlib.contextmanager
def replaced_attribute(owner, name, value):
    """Set owner.name for the duration of the block, then put back what was there."""
    own = vars(owner).get(name, _MISSING)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if own is _MISSING:
            delattr(owner, name)
        else:
            setattr(owner, name, own)


@contextlib.contextmanager
def replaced_global(function, name, make_value):
    """Replace the module-level `name` that `function`'s body reads, for the duration of the block.

    make_value(previous) -> the replacement. Used for loaders that a trainer method builds itself.
    """
    namespace = function.__globals__
    previous = namespace[name]
    namespace[name] = make_value(previous)
    try:
        yield
    finally:
        namespace[name] = previous
