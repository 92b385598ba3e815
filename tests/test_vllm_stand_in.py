"""The working vLLM stand-in (examples/openrlhf_cpu/vllm_hf) that OpenRLHF's RL runs on here: its
generation against Hugging Face's own, its batching, its vLLM-shaped results, and its weight sync
over gloo. A tiny model made on the spot; no Ray (tests/test_openrlhf_grpo.py runs it in Ray)."""
import asyncio
import json
import os
import sys
import threading

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, ROOT)
from examples.openrlhf_cpu.ray_cpu import VLLM_HF  # noqa: E402

PROMPTS = ["Compute 7 + 1.", "Compute 17 - 2 × 3 + 40."]


@pytest.fixture(scope="module")
def vllm():
    """The stand-in package, imported from its folder (nothing else named vllm is on the path)."""
    sys.path.insert(0, VLLM_HF)
    try:
        import vllm as stand_in
        assert os.path.dirname(stand_in.__file__) == os.path.join(VLLM_HF, "vllm")
        yield stand_in
    finally:
        sys.path.remove(VLLM_HF)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from examples.sftrl_tiny import data, model, tokenizer as tokenizer_module
    folder = tmp_path_factory.mktemp("tiny_model")
    rows, _ = data.generate(64, 0, operands=3, digits=1, seed=0)
    tokenizer = tokenizer_module.train(rows)
    tokenizer_module.save(tokenizer, str(folder))
    model.build(tokenizer, seed=0).to(torch.bfloat16).save_pretrained(str(folder))  # bf16, as OpenRLHF saves
    return str(folder)


@pytest.fixture(scope="module")
def engine(vllm, model_dir):
    return vllm.AsyncLLMEngine.from_engine_args(vllm.AsyncEngineArgs(model=model_dir, seed=0, dtype="bfloat16"))


def prompt_ids(engine, text):
    tokenizer = engine.worker.tokenizer
    chat = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    return tokenizer(chat, add_special_tokens=False)["input_ids"]


def generate_all(engine, requests):
    """requests: [(prompt ids, SamplingParams)], issued concurrently as OpenRLHF's executors do."""
    from vllm.inputs import TokensPrompt

    async def one(index, ids, params):
        final = None
        async for output in engine.generate(TokensPrompt(prompt_token_ids=ids), params, request_id=str(index)):
            final = output
        return final

    async def all_of_them():
        return await asyncio.gather(*(one(i, ids, params) for i, (ids, params) in enumerate(requests)))
    return asyncio.run(all_of_them())


def test_greedy_generation_matches_hugging_face_for_each_prompt_of_a_padded_batch(vllm, engine):
    requests = [(prompt_ids(engine, text), vllm.SamplingParams(temperature=0, max_tokens=12)) for text in PROMPTS]
    outputs = generate_all(engine, requests)
    for (ids, _), output in zip(requests, outputs):
        alone = engine.worker.model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=12, min_new_tokens=12,
                                             pad_token_id=engine.worker.pad, eos_token_id=None)
        expected = alone[0, len(ids):].tolist()
        got = output.outputs[0].token_ids
        assert isinstance(got, list) and got == expected[:len(got)]  # stops early only at an end of sequence
        assert output.outputs[0].finish_reason == ("length" if len(got) == 12 else "stop")
        assert output.prompt_token_ids == ids


def test_concurrent_requests_become_one_generate_call_and_each_keeps_its_own_budget(vllm, engine, monkeypatch):
    calls = []
    original = engine.worker.generate
    monkeypatch.setattr(engine.worker, "generate", lambda requests: calls.append(len(requests)) or original(requests))
    ids = prompt_ids(engine, PROMPTS[0])
    requests = [(ids, vllm.SamplingParams(temperature=0, max_tokens=budget)) for budget in (3, 7, 12)]
    requests += [(ids, vllm.SamplingParams(temperature=1.0, max_tokens=5, min_tokens=5)) for _ in range(8)]
    outputs = generate_all(engine, requests)
    assert sorted(calls) == [3, 8]  # greedy and sampled settings are two batches, however many requests
    greedy = [o.outputs[0].token_ids for o in outputs[:3]]
    assert greedy[0] == greedy[2][:len(greedy[0])] and greedy[1] == greedy[2][:len(greedy[1])]
    assert all(len(tokens) <= budget for tokens, budget in zip(greedy, (3, 7, 12)))
    sampled = [o.outputs[0] for o in outputs[3:]]
    assert all(len(o.token_ids) == 5 and o.finish_reason == "length" for o in sampled)
    assert len({tuple(o.token_ids) for o in sampled}) > 1  # temperature 1: the samples differ
    assert engine.output_processor.get_num_unfinished_requests() == 0


def test_logprobs_come_back_per_token_when_asked_for(vllm, engine):
    ids = prompt_ids(engine, PROMPTS[1])
    (output,) = generate_all(engine, [(ids, vllm.SamplingParams(temperature=1.0, max_tokens=6, logprobs=1))])
    completion = output.outputs[0]
    assert len(completion.logprobs) == len(completion.token_ids)
    for token, entry in zip(completion.token_ids, completion.logprobs):
        assert entry[token].logprob <= 0.0


def test_weight_sync_over_gloo_loads_every_broadcast_parameter_and_logs_the_checksum(vllm, engine, tmp_path,
                                                                                   monkeypatch):
    # The trainer's side as OpenRLHF 0.9.10 runs it: StatelessProcessGroup + PyNcclCommunicator at rank 0,
    # one update_weight call per parameter in bf16, each followed by its broadcast.
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup
    from sftrl_patches.probes import free_port
    log = tmp_path / "engine.jsonl"
    monkeypatch.setenv("SFTRL_VLLM_STAND_IN_LOG", str(log))
    port = free_port()
    sent = {name: (torch.randn_like(p, dtype=torch.float32) * 0.02).to(torch.bfloat16)
            for name, p in engine.worker.parameters.items()}
    joined = threading.Thread(target=lambda: asyncio.run(engine.collective_rpc(
        "init_process_group", args=("127.0.0.1", port, 1, 2, "openrlhf", "gloo", False))))
    joined.start()
    trainer = PyNcclCommunicator(StatelessProcessGroup.create("127.0.0.1", port, 0, 2), device="cpu")
    joined.join(timeout=60)
    for name, weight in sent.items():
        receiving = threading.Thread(target=lambda name=name, weight=weight: asyncio.run(engine.collective_rpc(
            "update_weight", args=(name, weight.dtype, weight.shape, False))))
        receiving.start()
        trainer.broadcast(weight.clone(), src=0)
        receiving.join(timeout=60)
    for name, weight in sent.items():
        assert torch.equal(engine.worker.parameters[name].detach(), weight.float()), name
    (line,) = [json.loads(text) for text in log.read_text().splitlines()]
    assert line["event"] == "synced" and line["sync"] == 1
    assert line["checksum"] == pytest.approx(sum(float(w.double().abs().sum()) for w in sent.values()), rel=1e-12)


def test_version_is_the_one_the_installed_openrlhf_asks_for_or_its_papers(vllm):
    from importlib import metadata
    try:
        pins = [r for r in metadata.requires("openrlhf") or [] if r.startswith("vllm==")]
    except metadata.PackageNotFoundError:
        pins = []
    expected = pins[0].split(";")[0].split("==")[1].strip() if pins else "0.19.0"
    assert vllm.__version__ == expected


def test_a_request_for_several_samples_at_once_is_refused(vllm):
    with pytest.raises(ValueError, match="n > 1"):
        vllm.SamplingParams(n=4)
