"""AsyncLLMEngine: requests that arrive together become one batch for the worker; the event loop
stays free while a batch generates (it runs in a thread), so new requests queue for the next one."""
import asyncio

from .worker import HFWorker


class AsyncEngineArgs:
    """Keeps whatever OpenRLHF passes (model, seed, dtype, max_model_len, ...); the worker reads
    model and seed, the rest has no meaning on a CPU."""

    def __init__(self, *args, **kwargs):
        if args:
            kwargs.setdefault("model", args[0])
        self.__dict__.update(kwargs)


class _OutputProcessor:
    def __init__(self, engine):
        self._engine = engine

    def get_num_unfinished_requests(self):
        return self._engine.unfinished


class AsyncLLMEngine:
    # how long the first request of a batch waits for the others issued with it
    GATHER_SECONDS = 0.01

    def __init__(self, engine_args):
        self.worker = HFWorker(**vars(engine_args))
        self.output_processor = _OutputProcessor(self)
        self.unfinished = 0
        self._queue = []
        self._batching = None
        self._lock = asyncio.Lock()

    @classmethod
    def from_engine_args(cls, engine_args, **_):
        return cls(engine_args)

    async def generate(self, prompt, sampling_params, request_id, **_):
        """An async iterator, as vLLM's; its one item is the finished RequestOutput."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._queue.append(((request_id, list(prompt["prompt_token_ids"]), sampling_params), done))
        self.unfinished += 1
        if self._batching is None or self._batching.done():
            self._batching = loop.create_task(self._run_batches())
        try:
            yield await done
        finally:
            self.unfinished -= 1

    async def _run_batches(self):
        while self._queue:
            await asyncio.sleep(self.GATHER_SECONDS)
            queued, self._queue = self._queue, []
            groups = {}
            for request, done in queued:
                groups.setdefault(request[2].batch_key(), []).append((request, done))
            for members in groups.values():
                try:
                    async with self._lock:  # weight updates and generation never overlap
                        results = await asyncio.to_thread(self.worker.generate, [r for r, _ in members])
                except Exception as exc:  # every waiting request sees the failure
                    for _, done in members:
                        done.set_exception(exc)
                    continue
                for (_, done), result in zip(members, results):
                    done.set_result(result)

    async def collective_rpc(self, method, timeout=None, args=(), kwargs=None):
        """Calls the worker's method (init_process_group, update_weight); one result per worker."""
        async with self._lock:
            result = await asyncio.to_thread(getattr(self.worker, method), *args, **(kwargs or {}))
        return [result]

    async def is_sleeping(self):
        return False

    async def sleep(self, level=1):
        pass

    async def wake_up(self, tags=None):
        pass

    async def reset_prefix_cache(self, *args, **kwargs):
        pass

    async def pause_generation(self, *args, **kwargs):
        pass

    async def resume_generation(self, *args, **kwargs):
        pass
