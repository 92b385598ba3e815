"""One optimizer step of OpenRLHF's own trainers, unpatched then patched, on two gloo ranks.

Run under torch.distributed.run by tests/test_openrlhf.py, with an OpenRLHF release, a DeepSpeed
release, the repository root and examples/openrlhf_cpu/stand_ins on PYTHONPATH. Real:
SFTTrainer.fit / ActorPPOTrainer.ppo_train and training_step, SFTLoss / PolicyLoss, Actor over a
tiny transformers Qwen2 model, DeepspeedStrategy with its ZeRO-2 DeepSpeed config,
NaiveReplayBuffer, Experience. Not OpenRLHF's: the torch.cuda no-ops of examples/openrlhf_cpu
(CPU machine), SGD instead of Adam (see prepare()), and the ActorPPOTrainer is built with __new__
because its __init__ connects to vLLM.
"""
import argparse
import copy
import json
import sys
from dataclasses import fields
from types import SimpleNamespace

import torch
import torch.distributed as dist

from examples.openrlhf_cpu import cuda  # noqa: E402 - CPU no-ops for OpenRLHF's CUDA calls (FACTS.md)
cuda.install()

import sftrl_patches  # noqa: E402,F401 - arms the hooks before OpenRLHF is imported

GA = 2
SEQ = 48
VOCAB = 64
# Loss tokens per micro-batch, per rank: uneven across micro-batches and ranks.
LOSS_TOKENS = {0: [3, 40], 1: [30, 5]}


def namespace(**kwargs):
    return SimpleNamespace(**kwargs)


def make_args():
    """Both flag styles: flat (<= 0.10.1) and dotted groups (>= 0.10.2) on one namespace."""
    flat = dict(param_dtype="fp32", local_rank=-1, aux_loss_coef=0.0, packing_samples=False, use_wandb=None,
                use_tensorboard=None, eval_steps=10**9, save_steps=-1, logging_steps=1, train_batch_size=GA * 2,
                ckpt_path="/nonexistent", max_ckpt_num=1, max_ckpt_mem=1, ds_tensor_parallel_size=1,
                ring_attn_size=1, use_dynamic_batch=False, entropy_loss_coef=None, use_kl_loss=False,
                init_kl_coef=0.0, kl_estimator="k1", max_epochs=1, zpg=1, adam_offload=False,
                overlap_comm=False, grad_accum_dtype=None, deepcompile=False, use_ds_universal_ckpt=False,
                disable_trace_cache=False, micro_train_batch_size=1)
    args = SimpleNamespace(**flat)
    args.model = namespace(aux_loss_coef=0.0)
    args.actor = namespace(aux_loss_coef=0.0, entropy_coef=None, eps_clip_low_high=(0.2, 0.2))
    args.ds = namespace(packing_samples=False, param_dtype="fp32", tensor_parallel_size=1, ring_attn_size=1,
                        zpg=1, adam_offload=False, overlap_comm=False, grad_accum_dtype=None,
                        deepcompile=False, use_universal_ckpt=False, zero_stage=2, local_rank=-1)
    args.train = namespace(batch_size=GA * 2, micro_batch_size=1, dynamic_batch_enable=False, max_epochs=1)
    args.logger = namespace(wandb=namespace(key=None, org=None, project=None, group=None, run_name="t"),
                            tensorboard_dir=None, logging_steps=1)
    args.eval = namespace(steps=10**9)
    args.ckpt = namespace(save_steps=-1, path="/nonexistent", max_num=1, max_mem=1)
    args.algo = namespace(kl=namespace(use_loss=False, init_coef=0.0, estimator="k1"))
    return args


def tiny_model():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         tie_word_embeddings=False)
    config._attn_implementation = "eager"
    return Qwen2ForCausalLM(config).float()


def micro_batches(rank):
    """(inputs, attention_mask, loss_mask) of shape [1, 1, SEQ]; the last `n` real tokens carry loss."""
    out = []
    for i, n in enumerate(LOSS_TOKENS[rank]):
        g = torch.Generator().manual_seed(1000 * rank + i)
        length = min(SEQ, n + 6)
        inputs = torch.zeros(1, 1, SEQ, dtype=torch.long)
        inputs[0, 0, :length] = torch.randint(1, VOCAB, (length,), generator=g)
        attention = torch.zeros(1, 1, SEQ, dtype=torch.long)
        attention[0, 0, :length] = 1
        loss_mask = torch.zeros(1, 1, SEQ, dtype=torch.long)
        loss_mask[0, 0, length - n - 1:length - 1] = 1  # fit() trains on loss_mask[:, :-1]
        out.append((inputs, attention, loss_mask))
    return out


def make_strategy(args):
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    strategy = DeepspeedStrategy(seed=0, max_norm=0.0, micro_train_batch_size=1, train_batch_size=GA * 2,
                                 zero_stage=2, args=args)
    strategy.setup_distributed()
    assert strategy.accumulated_gradient == GA, strategy.accumulated_gradient
    return strategy


def make_actor(base_model):
    from openrlhf.models import Actor
    # fp32 for a 1e-6 comparison: Actor loads from a path only in bf16/fp16, so it wraps the model
    # object, a branch that leaves packing_samples unset (as in OpenRLHF's own code): set it here.
    actor = Actor(copy.deepcopy(base_model), attn_implementation="eager", param_dtype="fp32")
    actor.packing_samples = False
    return actor


def train_config(strategy):
    """OpenRLHF's own DeepSpeed training config, without the optimizer and scheduler it would build.

    The signature changed in 0.10.4 (`is_actor`) and 0.11 (an optional optimizer dict).
    """
    import inspect
    method = strategy.get_ds_train_config
    config = method(is_actor=True) if "is_actor" in inspect.signature(method).parameters else method()
    config = {k: v for k, v in config.items() if k not in ("optimizer", "scheduler")}
    config["zero_allow_untested_optimizer"] = True  # DeepSpeed asks for it with a torch optimizer
    return config


def sgd_engine(model, config, lr):
    """deepspeed.initialize over `model` with plain SGD and a constant schedule: (engine, optim, scheduler)."""
    import deepspeed
    optim = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optim, lambda _: 1.0)
    engine, optim, _, scheduler = deepspeed.initialize(model=model, optimizer=optim, lr_scheduler=scheduler,
                                                       config=config, dist_init_required=True)
    return engine, optim, scheduler


def prepare(strategy, actor):
    """The DeepSpeed engine from OpenRLHF's own ZeRO-2 config, driving SGD with lr 1.

    strategy.prepare() builds the optimizer itself (Adam; from 0.10.3 from the DeepSpeed config),
    whose update is not linear in the gradient, so the test builds the same engine with a plain
    SGD optimizer: the update of one step is then exactly the gradient.
    """
    config = train_config(strategy)
    assert config["zero_optimization"]["stage"] == 2
    actor.model, optim, scheduler = sgd_engine(actor.model, config, lr=1.0)
    assert actor.model.gradient_accumulation_steps() == GA
    return actor, optim, scheduler


def flat_params(module):
    return torch.cat([p.detach().float().flatten() for p in module.parameters()])


def reference_gradient(base_model, per_token_losses):
    """Gradient of sum(token losses over every micro-batch of both ranks) / (their token count)."""
    model = make_actor(base_model)
    total_loss, total_tokens = 0.0, 0
    for token_losses, mask in per_token_losses(model):
        total_loss = total_loss + (token_losses * mask).sum()
        total_tokens += int(mask.sum())
    model.zero_grad()
    (total_loss / total_tokens).backward()
    return torch.cat([p.grad.detach().float().flatten() for p in model.parameters()])


def sft_token_losses(model):
    for rank in (0, 1):
        for inputs, attention, loss_mask in micro_batches(rank):
            logps = model(inputs.squeeze(1), attention_mask=attention.squeeze(1), return_logprobs=True)
            yield -logps, loss_mask.squeeze(1)[:, :-1].float()


def run_sft(strategy, base_model, rank):
    from openrlhf.trainer.sft_trainer import SFTTrainer
    actor, optim, scheduler = prepare(strategy, make_actor(base_model))
    loader = torch.utils.data.DataLoader(micro_batches(rank), batch_size=None)
    before = flat_params(actor.model.module)
    trainer = SFTTrainer(model=actor, strategy=strategy, optim=optim, train_dataloader=loader,
                         eval_dataloader=None, scheduler=scheduler, max_norm=0.0, batch_size=GA * 2, max_epochs=1)
    trainer.fit(strategy.args, consumed_samples=0, num_update_steps_per_epoch=1)
    return before - flat_params(actor.model.module)


# ---- actor ------------------------------------------------------------------------------------

def experiences(rank):
    """One Experience per micro-batch: sequences = prompt + response, action mask over the response."""
    from openrlhf.trainer.ppo_utils.experience import Experience
    out = []
    for i, (inputs, attention, loss_mask) in enumerate(micro_batches(rank)):
        sequences = inputs.squeeze(1)
        mask = loss_mask.squeeze(1)[:, 1:].bool()  # action i is the token at i+1
        actions = mask.size(1)
        g = torch.Generator().manual_seed(7 + 10 * rank + i)
        values = dict(sequences=sequences, attention_mask=attention.squeeze(1), action_mask=mask,
                      action_log_probs=-torch.rand(1, actions, generator=g) - 1.0,
                      base_action_log_probs=None, rollout_log_probs=None, values=None, returns=None,
                      advantages=torch.randn(1, 1, generator=g).expand(1, actions).clone(), kl=None, info={})
        names = {f.name for f in fields(Experience)}
        experience = Experience(**{k: v for k, v in values.items() if k in names})
        if "info" in names:
            experience.info = {}
        out.append(experience)
    return out


def actor_token_losses(model):
    for rank in (0, 1):
        for experience in experiences(rank):
            yield policy_token_losses(model, experience)


def policy_token_losses(model, experience):
    """PolicyLoss per token, before its reduction: -min(ratio*A, clip(ratio)*A); and the token mask."""
    mask = experience.action_mask
    logps = model(experience.sequences, action_mask=mask, attention_mask=experience.attention_mask)
    ratio = (logps - experience.action_log_probs).exp()
    adv = experience.advantages
    return -torch.min(ratio * adv, ratio.clamp(0.8, 1.2) * adv), mask.float()


def run_actor(strategy, base_model, rank):
    from openrlhf.models import PolicyLoss
    from openrlhf.trainer.ppo_utils import NaiveReplayBuffer
    from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer
    actor, optim, scheduler = prepare(strategy, make_actor(base_model))
    trainer = ActorPPOTrainer.__new__(ActorPPOTrainer)  # __init__ opens a vLLM weight-sync group
    trainer.strategy, trainer.args = strategy, strategy.args
    trainer.actor, trainer.actor_optim, trainer.actor_scheduler = actor, optim, scheduler
    trainer.ema_model, trainer.max_epochs, trainer.aux_loss = None, 1, False
    trainer.dataloader_pin_memory, trainer.micro_train_batch_size = False, 1
    trainer.actor_loss_fn = PolicyLoss()
    # The buffer's __init__ formats f"cuda:{current_device()}" (unused with cpu_offload=False).
    torch.cuda.current_device = lambda: 0
    trainer.replay_buffer = NaiveReplayBuffer(1, 0, False)
    torch.cuda.current_device = lambda: "cpu"
    for experience in experiences(rank):
        trainer.replay_buffer.append(experience)
    torch.manual_seed(123)  # the replay-buffer DataLoader shuffles: same order on both runs
    before = flat_params(actor.model.module)
    trainer.ppo_train(0.0)
    return before - flat_params(actor.model.module)


def write_on_rank_0(result, path):
    """Rank 0 writes the result; every rank waits for it, then all leave the gloo group together (left to
    the interpreter's exit, one rank can abort tearing it down while the other still uses it)."""
    from sftrl_patches.probes.deepspeed_offload import shut_down_process_group
    if dist.get_rank() == 0:
        with open(path, "w") as handle:
            json.dump(result, handle, indent=1)
    shut_down_process_group()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", choices=("sft", "actor"), required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", choices=("unpatched", "patched"), help="run one configuration (default: both)")
    options = parser.parse_args()
    args = make_args()
    strategy = make_strategy(args)
    rank = dist.get_rank()
    base_model = tiny_model()
    name = {"sft": "openrlhf-sft-loss-aggregation", "actor": "openrlhf-actor-loss-aggregation"}[options.trainer]
    run = run_sft if options.trainer == "sft" else run_actor
    reference = reference_gradient(base_model, sft_token_losses if options.trainer == "sft" else actor_token_losses)

    import openrlhf.trainer.sft_trainer  # noqa: F401 - the hook patches on import
    if options.trainer == "actor":
        import openrlhf.trainer.ray.ppo_actor  # noqa: F401
    result = {"trainer": options.trainer, "world_size": dist.get_world_size(), "loss_tokens": LOSS_TOKENS,
              "reference_grad_norm": float(reference.norm())}
    status = sftrl_patches.status(name)
    result["state_at_start"] = status.state
    for label in [options.only] if options.only else ("unpatched", "patched"):
        if label == "unpatched":
            if status.state == "patched":
                sftrl_patches.revert(name)
        else:
            if status.state == "patched":
                sftrl_patches.apply(name)
        update = run(strategy, base_model, rank)
        result[label] = {"max_abs_diff": float((update - reference).abs().max()),
                         "relative_diff": float((update - reference).norm() / reference.norm()),
                         "state": sftrl_patches.status(name).state}
    write_on_rank_0(result, options.out)


if __name__ == "__main__":
    sys.exit(main())
