"""BRIDGE (examples/mixed_policy/bridge.py) on a real TRL GRPOTrainer with a tiny Qwen2 built here:
the two levels each move only their own weights, the upper level's gradient is the cooperative-gain
gradient at two base points, the FLOPs of one BRIDGE round follow flops.py's rules, and the model a
run saves is the augmented model with its adapter merged."""
import os
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from examples.mixed_policy.bridge import rl_alone_offset  # noqa: E402
from examples.mixed_policy.trainer import EXPERT, ROLLOUT  # noqa: E402


def test_bridge_is_registered_with_its_options_explained():
    from examples.mixed_policy import methods, train as train_module
    from examples.mixed_policy.bridge import BridgeConfig, BridgeTrainer
    from examples.recipes import mixed_policy as recipe
    assert methods.METHODS["bridge"] == ("bridge", "BridgeTrainer", "BridgeConfig")
    assert methods.load("bridge") == (BridgeTrainer, BridgeConfig)
    own = methods.own_fields(BridgeConfig)
    assert {"penalty", "sft_traces", "lora_rank", "lora_alpha", "lora_lr"} <= set(own)
    assert all(help_text.strip() for _, help_text in own.values()), own
    # its flags reach the training script, and the tiny comparison's options are flags of it
    args = train_module.parse_args(["--method", "bridge", "--model", "m", "--data", "d", "--out", "o"]
                                   + recipe.option_flags("bridge"))
    assert args.method_options == recipe.OPTIONS["bridge"] and recipe.group_size("bridge") == 8
    with pytest.raises(SystemExit):  # not at paper scale: one process, no DeepSpeed
        recipe.parse_args(["bridge"])
    with pytest.raises(ValueError, match="sft_traces"):
        BridgeConfig(output_dir="o", num_generations=4, sft_traces=4, report_to="none", bf16=False)
    # its own flags only: no other method's --help or options change
    shared = {name: owners for name, (owners, *_) in train_module.method_flags().items() if "bridge" in owners}
    assert all(owners == ("bridge",) for owners in shared.values()) and set(shared) == set(own)


def test_rl_alone_offset_is_one_adam_step_for_the_gradient():
    grad = torch.tensor([0.5, -2.0, 0.0, 1e-3])
    first = rl_alone_offset(grad, None, lr=0.1, beta2=0.999, eps=1e-8)  # no state: Adam's first step, lr sign(g)
    assert first.tolist() == pytest.approx([0.1, -0.1, 0.0, 0.1], rel=1e-4)
    state = {"step": torch.tensor(3.0), "exp_avg_sq": torch.tensor([0.04, 0.0, 1.0, 1e-6])}
    v_hat = torch.tensor([0.04, 4.0, 1.0, 1e-6]) / (1 - 0.999 ** 3)  # a zero entry: as the first step
    v_hat[1] = 4.0
    expected = 0.1 * grad / (v_hat.sqrt() + 1e-8)
    assert rl_alone_offset(grad, state, 0.1, 0.999, 1e-8).tolist() == pytest.approx(expected.tolist(), rel=1e-5)


# ---- the trainer on a tiny model -----------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread: the tiny model gains nothing from more, and loses much to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from examples.sftrl_tiny import data, model, tokenizer as tokenizer_module
    from transformers import AutoTokenizer
    folder = tmp_path_factory.mktemp("bridge")
    train, _ = data.generate(32, 4, operands=2, digits=1, seed=5)
    tokenizer_module.save(tokenizer_module.train(train), str(folder / "tok"))
    tokenizer = AutoTokenizer.from_pretrained(str(folder / "tok"), padding_side="left")
    model.build(tokenizer, seed=0).save_pretrained(str(folder / "model"))
    return folder, train, tokenizer


def _trainer(tiny, name="bridge", **options):
    from datasets import Dataset
    from examples.mixed_policy import methods, train as train_module
    from examples.sftrl_tiny.reward import accuracy_reward
    folder, rows, tokenizer = tiny
    trainer_class, config_class = methods.load("bridge")
    settings = dict(output_dir=str(folder / name), per_device_train_batch_size=8, num_generations=4,
                    steps_per_generation=2, max_completion_length=32, max_steps=2, beta=0.0, loss_type="dapo",
                    scale_rewards="none", learning_rate=1e-3, lr_scheduler_type="constant", report_to="none",
                    save_strategy="no", disable_tqdm=True, seed=0, bf16=False, logging_steps=1)
    config = config_class(**{**settings, **options})
    dataset = Dataset.from_list([train_module.to_example(r) for r in rows])
    return trainer_class(model=str(folder / "model"), reward_funcs=accuracy_reward, args=config,
                         train_dataset=dataset, processing_class=tokenizer)


@pytest.fixture(scope="module")
def round_(tiny):
    """A trainer and one generation round of 4 questions x (3 rollouts + 1 expert trace), with advantages set
    by hand (an untrained model fails every rollout, which would leave the RL gradients at zero)."""
    trainer = _trainer(tiny)
    rows = tiny[1]
    trainer.model.train()
    batch = trainer._generate_and_score_completions([dict(rows[q]) for q in range(4) for _ in range(4)])
    batch["advantages"] = torch.linspace(-1, 1, 16) * (batch["row_kind"] == ROLLOUT)
    return trainer, batch


def _copies(params):
    return [p.detach().clone() for p in params]


def _same(before, params):
    return all(torch.equal(b, p.detach()) for b, p in zip(before, params))


def test_the_adapter_sits_beside_the_base_and_only_the_base_is_trainable_by_trl(round_):
    trainer, batch = round_
    assert batch["row_kind"].tolist() == [ROLLOUT, ROLLOUT, ROLLOUT, EXPERT] * 4
    names = [name for name, _ in trainer.model.named_parameters()]
    assert len(trainer.adapter) == sum("lora_" in n for n in names) > 0
    assert len(trainer.base) + len(trainer.adapter) == len(names)
    assert all(p.requires_grad for p in trainer.base) and not any(p.requires_grad for p in trainer.adapter)
    assert trainer.flops.parameters == sum(p.numel() for p in trainer.model.parameters())  # N: the augmented model


def test_one_lower_level_step_moves_the_base_weights_only(round_):
    trainer, batch = round_
    trainer.create_optimizer()  # TRL's, as train() builds it
    trained = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert trained == {id(p) for p in trainer.base}
    adapter, base = _copies(trainer.adapter), _copies(trainer.base)
    half = {k: (v[:8] if isinstance(v, torch.Tensor) and v.dim() and v.size(0) == 16 else v) for k, v in batch.items()}
    trainer.current_gradient_accumulation_steps = 1
    trainer._compute_loss(trainer.model, half).backward()
    trainer.optimizer.step()
    trainer.optimizer.zero_grad(set_to_none=True)
    assert _same(adapter, trainer.adapter)  # bit for bit
    assert not _same(base, trainer.base)
    # the loss: the policy loss on rollout tokens, (1 / penalty) x NLL on the expert trace's
    logps = torch.log(torch.full((2, 3), 0.5))
    fake = {"advantages": torch.tensor([0.0, 0.0]), "expert_mask": torch.tensor([[0, 0, 0], [1, 1, 0]]),
            "loss_mask": torch.ones(2, 3)}
    trainer.args.penalty = 4.0
    try:
        loss, _ = trainer.per_token_loss(fake, logps, logps.detach(), None)
    finally:
        trainer.args.penalty = 1.0
    nll = -torch.log(torch.tensor(0.5)).item()
    assert torch.allclose(loss, torch.tensor([[0.0] * 3, [nll / 4, nll / 4, 0.0]]))


def test_one_upper_level_step_moves_the_adapter_only_along_the_cooperative_gain_gradient(round_):
    trainer, batch = round_
    adapter, base = _copies(trainer.adapter), _copies(trainer.base)
    flops = dict(trainer.flops.tokens)
    grads, parts = trainer.upper_level_gradient(batch)
    assert _same(base, trainer.base) and _same(adapter, trainer.adapter)  # theta^ was put back bit for bit
    for g, s, j, a in zip(grads, parts["sft"], parts["joint"], parts["alone"]):
        assert torch.allclose(g, s + trainer.args.penalty * (j - a))
    # theta^ differs from theta: the RL gradient of the adapter differs between the two base points
    assert any(not torch.equal(j, a) for j, a in zip(parts["joint"], parts["alone"]))
    expert = int((batch["loss_mask"] * batch["expert_mask"]).sum())
    rollout = int(batch["loss_mask"].sum()) - expert
    assert trainer.flops.tokens["extra_pass"] - flops.get("extra_pass", 0) == expert + 2 * rollout

    assert trainer.upper_level_step(batch)
    assert _same(base, trainer.base)  # bit for bit
    assert not _same(adapter, trainer.adapter)
    # AdamW's first step moves each weight by about -lr sign(g) (g after clipping to norm 1; B starts at 0,
    # so only the B matrices get a gradient the first time)
    lr = trainer.args.learning_rate
    moved = 0
    for before, p, g in zip(adapter, trainer.adapter, grads):
        sure = g.abs() > 1e-4
        assert torch.allclose((p.detach() - before)[sure], -lr * torch.sign(g[sure]), atol=1e-4)
        moved += int(sure.sum())
    assert moved > 0
    assert not any(p.requires_grad for p in trainer.adapter) and all(p.requires_grad for p in trainer.base)
    assert all(p.grad is None for p in trainer.adapter + trainer.base)
    assert set(trainer._metrics["train"]) >= {"bridge/cooperative_gain", "bridge/gain_grad_norm"}


def test_without_a_lookahead_the_gain_term_vanishes_and_the_upper_level_is_sft(round_, monkeypatch):
    trainer, batch = round_
    optimizer, _, beta2, eps = trainer._lower_optimizer()
    monkeypatch.setattr(trainer, "_lower_optimizer", lambda: (optimizer, 0.0, beta2, eps))  # theta^ = theta
    grads, parts = trainer.upper_level_gradient(batch)
    assert all(torch.equal(j, a) for j, a in zip(parts["joint"], parts["alone"])) and parts["gain"] == 0
    assert all(torch.equal(g, s) for g, s in zip(grads, parts["sft"]))


def test_one_bridge_round_costs_what_flops_py_counts_and_saves_the_merged_model(tiny):
    from transformers import AutoModelForCausalLM
    trainer = _trainer(tiny, "round", max_completion_length=16)
    adapter = _copies(trainer.adapter)
    trainer.train()  # one round: generation, 2 lower-level steps, 1 upper-level step
    assert trainer.state.global_step == 2 and not _same(adapter, trainer.adapter)
    tokens, n = trainer.flops.tokens, trainer.flops.parameters
    generated, expert = tokens["on_policy"], tokens["off_policy"]
    assert generated > 0 and expert > 0 and tokens["sft"] == 0
    # by hand: rollouts 8ND, expert traces 6ND, then the upper level's passes at 6ND each: the expert
    # traces once, the rollouts twice
    assert tokens["extra_pass"] == expert + 2 * generated
    assert trainer.flops.total == n * (8 * generated + 6 * expert + 6 * (expert + 2 * generated))
    logged = [row for row in trainer.state.log_history if "bridge/cooperative_gain" in row]
    assert len(logged) == 1 and logged[0]["step"] == 2

    out = str(tiny[0] / "saved")
    trainer.save_model(out)
    saved = AutoModelForCausalLM.from_pretrained(out)
    assert not any("lora" in name for name, _ in saved.named_parameters())
    ids = torch.tensor([[3, 5, 7, 9, 11, 13]])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(saved(ids).logits, trainer.model(input_ids=ids).logits, atol=1e-5)
