"""The model side of an engine: a Hugging Face model on the CPU that generates a batch of token
prompts and takes weights from the trainer's sync group, as vLLM's worker extension would."""
import json
import os

import torch

from .outputs import CompletionOutput, Logprob, RequestOutput

LOG_VAR = "SFTRL_VLLM_STAND_IN_LOG"


class HFWorker:
    def __init__(self, model, seed=0, trust_remote_code=True, **_):
        from transformers import AutoModelForCausalLM, AutoTokenizer
        torch.manual_seed(seed)
        self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
        # float32 compute from the checkpoint's (bf16) values: exact copies of the weights.
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32, attn_implementation="eager",
                                                          trust_remote_code=trust_remote_code).eval()
        self.parameters = dict(self.model.named_parameters())
        eos = self.model.generation_config.eos_token_id  # an id, a list of ids, or None
        self.eos = set(eos) if isinstance(eos, (list, tuple)) else {eos} - {None}
        self.pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self.eos or {0})
        self._sync = None
        self._updated = set()
        self.syncs = 0
        self._log("loaded", model=model)

    # ---- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, requests):
        """requests: [(request_id, prompt_token_ids, SamplingParams)] sharing one batch_key()."""
        from transformers import GenerationConfig
        params = requests[0][2]
        longest = max(len(ids) for _, ids, _ in requests)
        input_ids = torch.full((len(requests), longest), self.pad, dtype=torch.long)
        attention = torch.zeros_like(input_ids)
        for row, (_, ids, _) in enumerate(requests):  # left padding: every prompt ends where generation starts
            input_ids[row, longest - len(ids):] = torch.tensor(ids, dtype=torch.long)
            attention[row, longest - len(ids):] = 1
        sample = params.temperature > 0
        config = GenerationConfig(
            do_sample=sample, temperature=params.temperature if sample else None,
            top_p=params.top_p if sample else None, top_k=(params.top_k if params.top_k and params.top_k > 0 else 0)
            if sample else None, max_new_tokens=max(p.max_tokens for _, _, p in requests),
            min_new_tokens=params.min_tokens or None, eos_token_id=sorted(self.eos | set(params.stop_token_ids)) or None,
            pad_token_id=self.pad, output_scores=params.logprobs is not None, return_dict_in_generate=True)
        out = self.model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)
        new_tokens = out.sequences[:, longest:]
        logprobs = torch.stack(out.scores, 1).log_softmax(-1) if params.logprobs is not None else None
        return [self._result(request, new_tokens[row], None if logprobs is None else logprobs[row])
                for row, request in enumerate(requests)]

    def _result(self, request, generated, logprobs):
        request_id, prompt_ids, params = request
        stops = self.eos | set(params.stop_token_ids)
        tokens, finish = [], "length"
        for token in generated.tolist()[:params.max_tokens]:  # a shorter budget is a prefix of a longer one
            tokens.append(token)
            if token in stops:
                finish = "stop"
                break
        chosen = None
        if logprobs is not None:
            chosen = [{token: Logprob(float(logprobs[step, token]))} for step, token in enumerate(tokens)]
        text = self.tokenizer.decode(tokens, skip_special_tokens=params.skip_special_tokens)
        return RequestOutput(request_id, list(prompt_ids), [CompletionOutput(0, text, tokens, finish, chosen)])

    # ---- weight sync (the trainer's rank 0 broadcasts each parameter) ----------------------------
    def init_process_group(self, master_address, master_port, rank_offset, world_size, group_name="",
                           backend="gloo", use_ray=False):
        if use_ray:
            raise NotImplementedError("vllm stand-in: --vllm_sync_with_ray is not supported; weights sync over gloo")
        from .distributed.device_communicators.pynccl import PyNcclCommunicator
        from .distributed.utils import StatelessProcessGroup
        group = StatelessProcessGroup.create(host=master_address, port=master_port, rank=rank_offset,
                                             world_size=world_size)
        self._sync = PyNcclCommunicator(group, device="cpu")

    @torch.no_grad()
    def update_weight(self, name, dtype, shape, empty_cache=False):
        if self._sync is None:
            raise RuntimeError("vllm stand-in: update_weight before init_process_group")
        weight = torch.empty(shape, dtype=dtype)
        self._sync.broadcast(weight, src=0)
        if name not in self.parameters:
            raise KeyError(f"vllm stand-in: the trainer sent {name!r}, which this model does not have")
        self.parameters[name].copy_(weight)
        self._updated.add(name)
        if self._updated >= set(self.parameters):  # every parameter arrived: one sync is complete
            self._updated.clear()
            self.syncs += 1
            self._log("synced", sync=self.syncs)

    def checksum(self):
        """Sum of |w| over every parameter, in float64: changes when any weight does."""
        return float(sum(p.detach().double().abs().sum() for p in self.parameters.values()))

    def _log(self, event, **fields):
        path = os.environ.get(LOG_VAR)
        if not path:
            return
        line = json.dumps({"event": event, "pid": os.getpid(), "checksum": self.checksum(), **fields}) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
