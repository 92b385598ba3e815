"""OpenRLHF's own ppo_train with dynamic batching, unpatched then patched, over several optimizer steps.

Run under torch.distributed.run (1 or 2 gloo ranks) by tests/test_openrlhf_dynamic.py, with an
OpenRLHF release, a DeepSpeed release, the repository root and the import-only stand-ins on
PYTHONPATH. Real: ActorPPOTrainer / CriticPPOTrainer ppo_train and training_step, PolicyLoss /
ValueLoss, NaiveReplayBuffer.setup_dynamic_batch (its micro-batch partition, loss scales and
optimizer-step flags), Actor and OpenRLHF's critic model over tiny Qwen2 models, DeepspeedStrategy
and its ZeRO-2 config with GA 1 (and Adam offload with --offload). Not OpenRLHF's: the torch.cuda
no-ops (CPU), SGD instead of Adam so that each step's update is lr times its gradient, and the
trainers built with __new__ (their __init__ connects to vLLM).

For every optimizer step, the update is compared with the gradient of the step's token mean over
all its samples on all ranks, taken at the parameters the step started from.
"""
import argparse
import copy
import os
import sys
import time
from dataclasses import fields

import torch
import torch.distributed as dist

import openrlhf_child as base  # CPU shims and sftrl_patches are armed on import
import sftrl_patches
from sftrl_patches.probes.deepspeed_offload import fit_weights, prepare_environment

SAMPLES_PER_STEP = 4      # per rank
MAX_TOKENS_PER_GPU = 32   # splits each step's samples into 2-4 micro-batches of uneven size
PATCHES = {"actor": ("openrlhf-dynamic-batch-zero12", "openrlhf-actor-loss-aggregation"),
           "critic": ("openrlhf-dynamic-batch-zero12", "openrlhf-critic-loss-aggregation")}


def make_args(world, steps, offload):
    args = base.make_args()
    train_batch = SAMPLES_PER_STEP * world
    for key, value in dict(use_dynamic_batch=True, train_max_tokens_per_gpu=MAX_TOKENS_PER_GPU,
                           train_batch_size=train_batch, rollout_batch_size=train_batch * steps,
                           n_samples_per_prompt=1, adam_offload=offload).items():
        setattr(args, key, value)
    args.train.dynamic_batch_enable, args.train.max_tokens_per_gpu = True, MAX_TOKENS_PER_GPU
    args.train.batch_size = train_batch
    args.rollout = base.namespace(batch_size=train_batch * steps, n_samples_per_prompt=1)
    args.ds.adam_offload = offload
    return args


def samples(rank, steps, actor):
    """Per-sample tensors, uneven prompt and response lengths; action i is the token at i+1.

    The old log-probs are the actor's own plus noise, so that PPO's ratios start near 1 and
    inside the clip range (a clipped token has no gradient and would hide what is dropped).
    """
    out = []
    g = torch.Generator().manual_seed(100 + rank)
    for _ in range(steps * SAMPLES_PER_STEP):
        prompt = int(torch.randint(2, 6, (1,), generator=g))
        response = int(torch.randint(1, 24, (1,), generator=g))
        length = prompt + response
        mask = torch.zeros(1, length - 1, dtype=torch.bool)
        mask[0, prompt - 1:] = True
        sequences = torch.randint(1, base.VOCAB, (1, length), generator=g)
        attention = torch.ones(1, length, dtype=torch.long)
        with torch.no_grad():
            logps = actor(sequences, action_mask=mask, attention_mask=attention)
        out.append(dict(sequences=sequences, attention_mask=attention, action_mask=mask,
                        action_log_probs=logps + 0.05 * torch.randn(1, length - 1, generator=g),
                        advantages=torch.randn(1, 1, generator=g).expand(1, length - 1).clone(),
                        values=torch.randn(1, length - 1, generator=g),
                        returns=torch.randn(1, length - 1, generator=g),
                        total_length=torch.tensor([float(length)]), response_length=torch.tensor([float(response)])))
    return out


def experience(sample):
    from openrlhf.trainer.ppo_utils.experience import Experience
    names = {f.name for f in fields(Experience)}
    values = {k: v.clone() for k, v in sample.items() if k in names}
    values.update({k: None for k in ("base_action_log_probs", "rollout_log_probs", "kl") if k in names})
    made = Experience(**values)
    if "info" in names:
        made.info = {}
    return made


def critic_model():
    from openrlhf.models.model import _get_critic_model
    from transformers import Qwen2Config, Qwen2Model, Qwen2PreTrainedModel
    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=base.VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    config._attn_implementation = "eager"
    config.normalize_reward = False
    return _get_critic_model(Qwen2PreTrainedModel, Qwen2Model, "score", False)(config).float()


def engine_config(strategy, offload):
    config = base.train_config(strategy)
    config["zero_force_ds_cpu_optimizer"] = False  # SGD with the optimizer offloaded
    assert config["gradient_accumulation_steps"] == 1, config  # what dynamic batching asks of DeepSpeed
    assert (config["zero_optimization"]["offload_optimizer"]["device"] == "cpu") == offload
    return config


LR = 0.5  # a power of two (update / LR is exact) small enough to keep the critic tame


def make_trainer(kind, strategy, models, offload, rank, steps):
    from openrlhf.trainer.ppo_utils import NaiveReplayBuffer
    config = engine_config(strategy, offload)
    if kind == "actor":
        from openrlhf.models import PolicyLoss
        from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer as Trainer
        actor = base.make_actor(models["actor"])
        actor.model, optim, scheduler = base.sgd_engine(actor.model, config, LR)
        trainer = Trainer.__new__(Trainer)
        trainer.actor, trainer.actor_optim, trainer.actor_scheduler = actor, optim, scheduler
        trainer.actor_loss_fn, trainer.ema_model = PolicyLoss(), None
        module = actor.model.module
    else:
        from openrlhf.models import ValueLoss
        from openrlhf.trainer.ray.ppo_critic import CriticPPOTrainer as Trainer
        trainer = Trainer.__new__(Trainer)
        trainer.critic, trainer.critic_optim, trainer.critic_scheduler = base.sgd_engine(
            copy.deepcopy(models["critic"]), config, LR)
        trainer.critic_loss_fn = ValueLoss(None)
        module = trainer.critic.module
    trainer.strategy, trainer.args = strategy, strategy.args
    trainer.max_epochs, trainer.aux_loss, trainer.dataloader_pin_memory = 1, False, False
    torch.cuda.current_device = lambda: 0  # the buffer formats f"cuda:{current_device()}" (unused here)
    trainer.replay_buffer = NaiveReplayBuffer(1, 0, False, False, True)
    torch.cuda.current_device = lambda: "cpu"
    for sample in samples(rank, steps, base.make_actor(models["actor"])):
        trainer.replay_buffer.append(experience(sample))
    return trainer, module


def record_steps(strategy, module):
    """Wrap strategy.optimizer_step: the parameters before each step and the update it made."""
    steps = []
    original = strategy.optimizer_step

    def optimizer_step(*args, **kwargs):
        before = base.flat_params(module)
        result = original(*args, **kwargs)
        steps.append((before, (before - base.flat_params(module)) / LR))
        return result
    strategy.optimizer_step = optimizer_step
    return steps, lambda: vars(strategy).pop("optimizer_step", None)


def step_micro_batches(buffer):
    """Per optimizer step, its micro-batches (lists of item indices), from the buffer's own tables."""
    steps, current = [], []
    for indices, ends in zip(buffer.dynamic_indices, buffer.dynamic_optimizer_step):
        current.append(list(indices))
        if ends:
            steps.append(current)
            current = []
    return steps


def token_losses(kind, model, item):
    if kind == "actor":
        return base.policy_token_losses(model, item)
    mask = item.action_mask
    values = model(item.sequences, action_mask=mask, attention_mask=item.attention_mask)
    return 0.5 * (values - item.returns) ** 2, mask.float()


def micro_batch_gradients(kind, models, parameters, micro_batches, tokens):
    """Per micro-batch: the gradient of its token losses (every rank's part) / the step's tokens."""
    model = base.make_actor(models["actor"]) if kind == "actor" else copy.deepcopy(models["critic"])
    torch.nn.utils.vector_to_parameters(parameters, model.parameters())
    gradients = []
    for items in micro_batches:
        total = 0.0
        for item in items:
            losses, mask = token_losses(kind, model, item)
            total = total + (losses * mask).sum()
        model.zero_grad()
        (total / tokens).backward()
        gradients.append(torch.cat([p.grad.detach().float().flatten() for p in model.parameters()]))
    return torch.stack(gradients, dim=1)


def compare(update, gradients):
    """The update against the step's token-mean gradient (the sum of the micro-batch gradients).

    weights: the least-squares share of each micro-batch in the update (1 each when every
    micro-batch counts as it should); residual: the part of the update that no micro-batch of
    this step explains (a leak from earlier steps), relative to the reference.
    """
    reference = gradients.sum(dim=1)
    weights, residual = fit_weights(gradients, update)
    return {"max_abs_diff": float((update - reference).abs().max()),
            "relative_diff": float((update - reference).norm() / reference.norm()),
            "weights": [round(float(w), 4) for w in weights],
            "residual": float(residual.norm() / reference.double().norm()),
            "residual_norm": float(residual.norm()), "reference_norm": float(reference.norm())}


def run(kind, strategy, models, offload, rank, steps, compare_steps=True):
    trainer, module = make_trainer(kind, strategy, models, offload, rank, steps)
    recorded, unwrap = record_steps(strategy, module)
    dist.barrier()
    started = time.perf_counter()
    try:
        trainer.ppo_train(0.0) if kind == "actor" else trainer.ppo_train()
    finally:
        unwrap()
    seconds = time.perf_counter() - started
    if not compare_steps:
        return [], seconds
    buffer = trainer.replay_buffer
    # One batch of one per sample, as the trainer's own collate makes them.
    mine = [[[buffer.collate_fn([[buffer.items[i]]]) for i in mb] for mb in step] for step in step_micro_batches(buffer)]
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    out = []
    for k, (before, update) in enumerate(recorded):
        # Micro-batch m of a step runs on every rank at once: its gradient is that of all their parts.
        micro_batches = [[item for rank_steps in everyone for item in rank_steps[k][m]]
                         for m in range(len(everyone[0][k]))]
        tokens = sum(int(item.action_mask.sum()) for mb in micro_batches for item in mb)
        out.append(dict(compare(update, micro_batch_gradients(kind, models, before, micro_batches, tokens)),
                        micro_batches=len(micro_batches), tokens=tokens))
    return out, seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", choices=("actor", "critic"), required=True)
    parser.add_argument("--offload", action="store_true", help="--adam_offload: optimizer on the CPU")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1,
                        help="run the three configurations this many times, interleaved (benchmarks: ppo_train seconds)")
    parser.add_argument("--out", required=True)
    options = parser.parse_args()
    prepare_environment()  # one rank without torch.distributed.run: its variables, on loopback
    world = int(os.environ["WORLD_SIZE"])
    args = make_args(world, options.steps, options.offload)
    from openrlhf.utils.deepspeed import DeepspeedStrategy
    strategy = DeepspeedStrategy(seed=0, max_norm=0.0, micro_train_batch_size=1,
                                 train_batch_size=SAMPLES_PER_STEP * world, zero_stage=2, args=args)
    strategy.setup_distributed()
    rank = dist.get_rank()
    import openrlhf.trainer.ray.ppo_actor  # noqa: F401 - the hooks patch on import
    import openrlhf.trainer.ray.ppo_critic  # noqa: F401
    models = {"actor": base.tiny_model(), "critic": critic_model()}
    names = PATCHES[options.trainer]
    result = {"trainer": options.trainer, "world_size": dist.get_world_size(), "offload": options.offload,
              "state_at_start": {n: sftrl_patches.status(n).state for n in names},
              "deepspeed_patches": {n: s.state for n, s in sftrl_patches.status().items()
                                    if n.startswith("deepspeed")}}
    applied = [n for n, s in sftrl_patches.status().items() if s.state == "patched"]
    # unpatched: none of this package's patches (what a run without it gets); deepspeed_only: this
    # package's DeepSpeed patches without the OpenRLHF ones; patched: everything.
    switched_on = {"unpatched": [], "deepspeed_only": [n for n in applied if n.startswith("deepspeed")],
                   "patched": applied}
    for repeat in range(options.repeats):
        for label, on in switched_on.items():
            for name in applied:
                (sftrl_patches.apply if name in on else sftrl_patches.revert)(name)
            try:
                steps, seconds = run(options.trainer, strategy, models, options.offload, rank, options.steps,
                                     compare_steps=repeat == 0)
            except Exception as exc:  # noqa: BLE001 - e.g. OpenRLHF #1131's crash on DeepSpeed 0.17.6-0.18.2
                if repeat == 0:
                    result[label] = {"error": f"{type(exc).__name__}: {exc}", "steps": [], "ppo_train_seconds": [],
                                     "states": {n: sftrl_patches.status(n).state for n in names}}
                continue
            if repeat == 0:
                result[label] = {"steps": steps, "states": {n: sftrl_patches.status(n).state for n in names},
                                 "ppo_train_seconds": []}
            result[label]["ppo_train_seconds"].append(seconds)
    base.write_on_rank_0(result, options.out)


if __name__ == "__main__":
    sys.exit(main())
